/* rpc_health.c: grpc.health.v1.Health: Check, and Watch streams that hear NOT_SERVING when a
 * drain (SIGTERM) begins and end when the listener closes. */
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc_call.h"
#include "rpc_handlers.h"

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus serving_status;

/* Services reported SERVING. */
static const char *const served_services[] = {"", "fractal.v1.Renderer"};

static bool is_served(const char *service)
{
    for (size_t i = 0; i < sizeof(served_services) / sizeof(served_services[0]); i++)
        if (strcmp(service, served_services[i]) == 0)
            return true;
    return false;
}

static serving_status current_status(rpc_server *srv)
{
    return atomic_load(&srv->shutting_down) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                                            : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
}

static Grpc__Health__V1__HealthCheckRequest *decode(struct call *c, char *msg, size_t msglen)
{
    return (Grpc__Health__V1__HealthCheckRequest *)rpc_unpack(&grpc__health__v1__health_check_request__descriptor,
                                                             c->payload, msg, msglen);
}

void rpc_health_check(struct call *c)
{
    char msg[256] = "";
    Grpc__Health__V1__HealthCheckRequest *req = decode(c, msg, sizeof(msg));
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    int err = 0;

    if (!req) {
        err = ERR_INVALID;
    } else if (!is_served(req->service)) {
        err = ERR_NOT_FOUND;
        snprintf(msg, sizeof(msg), "unknown service \"%.100s\"", req->service);
    }
    resp.status = current_status(c->srv);
    rpc_log_call(c, err, msg, NULL);
    rpc_finish(c, err, msg, err == 0 ? rpc_pack(&resp.base) : NULL, 0);
    if (req)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* Watch: the current status at once (SERVICE_UNKNOWN for a service this server does not serve, as
 * the health protocol asks), then the stream stays open on the watcher list until the client
 * leaves or the listener closes. A watch that starts during a drain hears NOT_SERVING (from
 * current_status) and stays open too: ending it would make gRPC's client-side health checker,
 * which reopens a stream at once when the last one carried a message, call again in a tight loop
 * for the whole drain. */
void rpc_health_watch(struct call *c)
{
    rpc_server *srv = c->srv;
    char why[160];
    Grpc__Health__V1__HealthCheckRequest *req = decode(c, why, sizeof(why));
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

    if (!req) {
        /* rpc_finish keeps no pointer to the message: it copies it before returning. */
        rpc_log_call(c, ERR_INVALID, why, NULL);
        rpc_finish(c, ERR_INVALID, why, NULL, 0);
        return;
    }
    bool served = is_served(req->service);

    protobuf_c_message_free_unpacked(&req->base, NULL);
    pthread_mutex_lock(&srv->lock);
    /* Read under the lock, with the first message sent before it is released, so a drain's
     * rpc_health_draining either sees this watch with its status sent or comes after it. */
    resp.status = served ? current_status(srv) : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    if (srv->watchers_closed) {
        /* Shutdown has told the watchers already: this one hears NOT_SERVING and ends too. */
        pthread_mutex_unlock(&srv->lock);
        resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
        rpc_stream_send_nowait(c, &resp.base);
        rpc_log_call(c, ERR_UNAVAILABLE, "server is shutting down", NULL);
        rpc_finish_when_idle(c, ERR_UNAVAILABLE, "server is shutting down");
        return;
    }
    if (srv->nwatchers >= srv->cfg->max_watchers) {
        pthread_mutex_unlock(&srv->lock);
        rpc_log_call(c, ERR_EXHAUSTED, "too many Health.Watch streams open", NULL);
        rpc_finish(c, ERR_EXHAUSTED, "too many Health.Watch streams open; use Health.Check", NULL, 0);
        return;
    }
    c->next = srv->watchers;
    srv->watchers = c;
    srv->nwatchers++;
    /* The first write of a call: nothing can be in flight yet. A watch of an unknown service
     * counts as told, as it never hears a drain's NOT_SERVING. */
    rpc_stream_send_nowait(c, &resp.base);
    c->heard_not_serving = resp.status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    pthread_mutex_unlock(&srv->lock);
}

/* Removes c from the watcher list; true if it was there (the caller now owns finishing it). */
static bool take_watcher(rpc_server *srv, struct call *c)
{
    bool found = false;

    pthread_mutex_lock(&srv->lock);
    for (struct call **p = &srv->watchers; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            srv->nwatchers--;
            found = true;
            break;
        }
    pthread_mutex_unlock(&srv->lock);
    return found;
}

void rpc_health_watch_closed(struct call *c)
{
    if (!take_watcher(c->srv, c))
        return;
    rpc_log_call(c, ERR_CANCELLED, "watcher left", NULL);
    rpc_finish_when_idle(c, ERR_CANCELLED, "watcher left");
}

void rpc_health_draining(rpc_server *srv)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

    resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    /* Under the lock, so a watcher cannot leave (and be finished) while it is written to. Never
     * waits: a watcher whose previous write is still in flight (its first message, or a reader
     * with a zero flow-control window) is skipped and told on a later call; the drain calls this
     * every few tens of ms. shutting_down is already set, so a watch registered after the first
     * walk was sent NOT_SERVING as its first message. */
    pthread_mutex_lock(&srv->lock);
    for (struct call *c = srv->watchers; c; c = c->next)
        if (!c->heard_not_serving && rpc_stream_send_nowait(c, &resp.base) == 0)
            c->heard_not_serving = true;
    pthread_mutex_unlock(&srv->lock);
}

void rpc_health_shutdown(rpc_server *srv)
{
    struct call *list;

    pthread_mutex_lock(&srv->lock);
    list = srv->watchers;
    srv->watchers = NULL;
    srv->nwatchers = 0;
    srv->watchers_closed = true;
    pthread_mutex_unlock(&srv->lock);
    while (list) {
        struct call *c = list;
        list = c->next;
        /* The stream ends UNAVAILABLE, so its client reconnects elsewhere; it heard NOT_SERVING
         * when the drain began. A write stuck for good is completed by cancel_all_calls at the end
         * of the grace period. */
        rpc_log_call(c, ERR_UNAVAILABLE, "server is shutting down", NULL);
        rpc_finish_when_idle(c, ERR_UNAVAILABLE, "server is shutting down");
    }
}
