/* rpc_call.h: what the rpc_*.c files share: the call context, the server's state, the method
 * names, and the primitives for replying, streaming, logging and queueing (rpc_call.c). Handlers
 * include this and rpc_handlers.h; nothing here knows a handler. Only rpc/ includes grpc. */
#ifndef FRACTALD_RPC_CALL_H
#define FRACTALD_RPC_CALL_H

#include <grpc/byte_buffer.h>
#include <protobuf-c/protobuf-c.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "config.h"
#include "devices.h"
#include "engine_cpu.h"
#include "imgcache.h"
#include "jobs.h"
#include "latency.h"
#include "render.h"
#include "rpc.h"
#include "rpc_auth.h"
#include "spec.h"

enum method_id {
    M_RENDER,
    M_RENDER_STREAM,
    M_SUBMIT_JOB,
    M_GET_JOB,
    M_FETCH_JOB_RESULT,
    M_CANCEL_JOB,
    M_LIST_JOBS,
    M_LIST_DEVICES,
    M_GET_STATS,
    M_HEALTH_CHECK,
    M_HEALTH_WATCH,
    M_REFLECTION,                       /* grpc.reflection.v1.ServerReflection/ServerReflectionInfo */
    M_REFLECTION_ALPHA,                 /* the same in grpc.reflection.v1alpha */
    M_COUNT,
    M_UNKNOWN = M_COUNT, /* the catch-all for methods the server does not know */
};

struct call;

/* What one client holds of the render queue and the in-flight cost, for the per-client shares
 * (--client-queue-share, --client-cost-share). A client is its token's identity when tokens are
 * on, else its peer address without the port. Listed in rpc_server.clients, under its lock;
 * freed once it holds nothing and has not been refused for a while. */
struct client_use {
    char key[96];
    unsigned held;                      /* renders queued or running */
    double cost;                        /* their cost, counted in the in-flight budget */
    double refused_ms;                  /* when a render of this client was last refused; 0 never */
    struct client_use *next;
};

/* A method's path and its short name for logs and stats. */
struct method_name {
    const char *path;
    const char *name;
};

extern const struct method_name rpc_method_names[M_COUNT];

enum tag_kind { TAG_NEW, TAG_CLOSE, TAG_FINISH, TAG_WRITE, TAG_SHUTDOWN, TAG_READ };

/* Whether a method streams requests (bidi), so its calls arrive without a payload. */
#define RPC_METHOD_READS_STREAM(m) ((m) == M_REFLECTION || (m) == M_REFLECTION_ALPHA)

/* What the completion queue hands back: which event of which call. */
struct tag {
    enum tag_kind kind;
    struct call *call;
};

/* One accepted (or posted) call. Reference counted: one reference for the handler, one per batch
 * in flight; the last release frees everything. Batches on one call are serialised by `lock`:
 * at most one write in flight (grpc core refuses a second), and the status goes out after it. */
struct call {
    rpc_server *srv;
    enum method_id method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array req_md;
    grpc_call_details details;          /* catch-all calls only */
    grpc_byte_buffer *payload;
    struct tag tag_new, tag_close, tag_finish, tag_write, tag_read;
    grpc_byte_buffer *read_bb;          /* bidi calls: the request just read (rpc_reflection.c) */
    grpc_byte_buffer *send_bb;          /* bidi calls: the reply in flight with the next read */
    atomic_int refs;
    atomic_int cancelled;               /* client cancelled, deadline passed, or peer gone */
    int close_cancelled;                /* RECV_CLOSE_ON_SERVER's out-parameter */
    double t_accept;
    char peer[128];                     /* grpc_call_get_peer, set on accept */
    const char *auth;                   /* "token", "mtls" or "none", for the log line */
    char client_id[RPC_AUTH_ID_MAX];    /* the token's name, or the client certificate's name */
    char client_key[96];                /* who the per-client shares count this call against */
    struct client_use *client;          /* its entry while queued or running (srv->lock) */

    pthread_mutex_t lock;
    pthread_cond_t write_done;
    bool initial_md_sent;
    bool write_pending;
    bool write_failed;
    bool finished;
    grpc_byte_buffer *write_bb;         /* the message in flight */
    grpc_byte_buffer *reply;            /* the unary reply in flight */
    bool deferred_finish;               /* finish once the write in flight completes */
    int deferred_err;
    const char *deferred_msg;           /* static string */
    bool heard_not_serving;             /* Health.Watch: NOT_SERVING was sent (under srv->lock) */
    grpc_metadata trailing;             /* retry-after-ms, when set */
    char retry_after[24];

    /* Work queued for a render or I/O worker. */
    void (*run)(struct call *c);
    double cost;                        /* samples x max_iter, counted in the in-flight budget */
    struct render_spec spec;
    int device_index;
    /* Render with the image cache on: the resolved request's JSON, made once (reply_from_cache)
     * and used as the cache key, for the store after the render, and as the PNG's request text. */
    char *cache_key;
    /* Work another front end (HTTP) queued through rpc_server_queue_render: no grpc call, and
     * front_run(front_ctx) is all the worker does with it. */
    void (*front_run)(void *ctx);
    void *front_ctx;
    char summary[256];                  /* the request as log fields (rpc_spec_summary) */
    char job_id[48];
    struct call *next;                  /* render queue / watch list link */
    struct work_queue *queued_on;       /* the queue it waits in; NULL once taken (srv->lock) */
};

/* Calls waiting for a worker, FIFO, under rpc_server.lock. */
struct work_queue {
    struct call *head, *tail;
    unsigned queued;                    /* waiting */
    unsigned running;                   /* being worked on */
    pthread_cond_t ready;               /* work arrived, or workers must stop */
};

struct rpc_server {
    const struct config *cfg;
    engine_cpu *engine;
    struct devices *devs;
    jobs_store *jobs;                   /* NULL when jobs are disabled */
    sched *sched;
    imgcache *cache;                    /* encoded images of unary Render; may hold nothing */
    grpc_server *server;
    grpc_completion_queue *cq;
    void *handles[M_COUNT];
    pthread_t cq_thread;
    int cq_thread_started;
    atomic_int shutting_down;           /* SIGTERM: health NOT_SERVING, new work UNAVAILABLE */
    atomic_int listener_closed;         /* the drain notice is over (or there is none): calls are
                                         * served again, and the listener closes */
    atomic_int live_calls;
    double t_start;

    pthread_mutex_t lock;
    pthread_cond_t state_changed;       /* shutdown tag arrived, live_calls or job_runners dropped */
    struct work_queue renders;          /* Render and RenderStream calls */
    struct work_queue io;               /* SubmitJob, CancelJob, FetchJobResult */
    double inflight_cost;               /* cost of queued and running renders */
    struct client_use *clients;         /* per-client use of the render queue */
    unsigned nclients;
    rpc_auth *auth;                     /* bearer tokens; NULL when --token-file is not given */
    int stop_workers;
    int shutdown_done;
    pthread_t *workers;                 /* render workers, then I/O workers */
    unsigned nworkers, nio_workers;

    /* Jobs run on render workers when no call waits, on at most max_job_runners of them at once
     * so one worker always stays free for interactive renders. job_cancel[k] is the cancel flag
     * of the job runner k works on (NULL if none), for the drain. */
    unsigned job_runners, max_job_runners;
    unsigned jobs_hint;                 /* nonzero: the store may have queued jobs */
    unsigned jobs_hint_seq;             /* bumped on every hint, so a stale "none" cannot clear it */
    atomic_int **job_cancel;
    struct tag tag_shutdown;
    struct call *watchers;              /* Health.Watch streams, under lock */
    unsigned nwatchers;
    bool watchers_closed;               /* shutdown told the watchers: new ones are not listed */
    bool cancel_jobs;                   /* the drain's grace is over: running jobs must stop */
    atomic_int repost[M_COUNT + 1];     /* request posts that failed, retried by the tick */

    /* Requests answered, by method and gRPC status code. */
    atomic_uint_least64_t answered[M_COUNT + 1][17];
    /* Their latency from accept to the status, by method (latency.h buckets), for /metrics. */
    atomic_uint_least64_t latency[M_COUNT + 1][LATENCY_NBUCKETS];
    atomic_uint_least64_t latency_us_sum[M_COUNT + 1];
};

/* ---- rpc_call.c: primitives ---- */

/* The one place server error codes become gRPC status codes. */
grpc_status_code rpc_status_of(int err);

/* A fresh byte buffer holding the packed message: grpc core takes each send's buffer over until
 * the batch completes, so one buffer is never sent twice. */
grpc_byte_buffer *rpc_pack(const ProtobufCMessage *m);

/* The decoded message (free with protobuf_c_message_free_unpacked), or NULL with the one-line
 * reason in msg: no message, bytes that are not a valid message of that type, or a string field
 * holding a NUL byte ("device must not contain a NUL byte"), which protobuf-c would cut. */
ProtobufCMessage *rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb, char *msg,
                             size_t msglen);

/* Sends the reply (may be NULL; ownership passes) and the final status, after any write still in
 * flight, then drops the handler's reference. retry_after_ms > 0 adds the trailing metadata
 * `retry-after-ms`. Blocks only while a stream write is in flight, which the completion-queue
 * thread never has when it finishes a call. */
void rpc_finish(struct call *c, int err, const char *message, grpc_byte_buffer *reply, unsigned retry_after_ms);

/* rpc_finish for the completion-queue thread: never waits. If a write is in flight the call is
 * finished when it completes. message must be a static string. */
void rpc_finish_when_idle(struct call *c, int err, const char *message);

/* Sends one message of a server stream, waiting first for the previous one to complete (this is
 * the back-pressure: a slow reader holds only its own worker, and for at most
 * --stream-write-timeout-ms: a reader that takes nothing for that long has its call cancelled).
 * Worker threads only. Returns 0, or ERR_CANCELLED once the call is cancelled or a write failed. */
int rpc_stream_send(struct call *c, const ProtobufCMessage *m);

/* As rpc_stream_send, but never waits: returns ERR_EXHAUSTED if a write is still in flight.
 * For the completion-queue thread. */
int rpc_stream_send_nowait(struct call *c, const ProtobufCMessage *m);

/* One log line for the call (event=rpc: method, peer, status by name, job, error, the logfmt
 * fields in extra, ms since accept) and the per-method status counter. Call once per call, with
 * its final status. */
void rpc_log_call(struct call *c, int err, const char *message, const char *extra);

/* The request as logfmt fields (" fractal=julia size=WxH ... fmt=png") into out, for the log line. */
void rpc_spec_summary(char *out, size_t cap, const struct render_spec *spec);

/* Queues c for a render worker, which will call c->run(c). Returns 0, or ERR_EXHAUSTED (with a
 * message and a retry hint in *retry_after_ms) when the queue is full or the in-flight cost
 * budget would be exceeded. */
int rpc_queue_work(struct call *c, double cost, char *msg, size_t msglen, unsigned *retry_after_ms);

/* Points ids[0..] at the ids of the devices whose bits are set in `used` (sched_call's
 * devices_used), at most max of them. Returns how many. */
size_t rpc_device_ids(char **ids, size_t max, const struct devices *devs, uint64_t used);

/* Queues c for an I/O worker (job submission, cancellation, result streaming). Returns 0, or
 * ERR_EXHAUSTED with a message and a retry hint when the I/O queue is full. */
int rpc_queue_io(struct call *c, char *msg, size_t msglen, unsigned *retry_after_ms);

/* Tells the render workers the job store may have queued jobs. */
void rpc_jobs_wake(rpc_server *srv);

/* ---- rpc_call.c: the call's lifecycle, for the completion-queue loop ---- */

/* Condition variables of the server time out on the monotonic clock, so a wall-clock jump
 * neither stretches nor cuts a grace period or a write timeout. */
void rpc_init_monotonic_cond(pthread_cond_t *cond);

/* A new call of `method` with one reference (the handler's), counted in srv->live_calls.
 * NULL when out of memory. */
struct call *rpc_call_new(rpc_server *srv, enum method_id method);

/* Drops one reference; the last frees the call and wakes a drain waiting on live_calls. */
void rpc_call_release(struct call *c);

/* Arms RECV_CLOSE_ON_SERVER, whose completion (TAG_CLOSE) tells the call was cancelled. */
void rpc_call_arm_close(struct call *c);

/* A stream write completed (TAG_WRITE); ok == 0 means the peer is gone. Runs a deferred finish. */
void rpc_call_write_done(struct call *c, int ok);

/* The next call of a non-empty queue, counted as running; srv->lock held. */
struct call *rpc_queue_take(struct work_queue *q);

/* A render worker is done with a call it took (which may be freed already): its place and cost
 * leave the server's and its client's accounts. srv->lock held. */
void rpc_queue_done_locked(rpc_server *srv, struct client_use *client, double cost);

/* Frees every per-client entry; at stop, when nothing is queued or running. */
void rpc_clients_free(rpc_server *srv);

/* A call that was cancelled (client cancel, deadline, peer gone) leaves its queue at once: if it
 * still waits in one, it is unlinked, its cost leaves the in-flight budget, and it is finished as
 * CANCELLED, so dead calls never hold queue slots. Completion-queue thread; takes srv->lock. */
void rpc_queue_drop_cancelled(struct call *c);

#endif
