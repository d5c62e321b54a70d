/* engine_cl_deep.c: deep-zoom jobs (engine_cl_deep.h) on an OpenCL device with fp64: the
 * kernels/deep.cl program, built lazily per device, bounded resumable launches, smooth values on
 * the host. */
#include "engine_cl_deep.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cl_source.h"
#include "err.h"
#include "escape.h"
#include "smooth.h"

#include "engine_cl_internal.h"

/* Samples of one band: about 52 bytes each on the device (state, error bound, count, final z),
 * so 2^20 keeps a band under 60 MB whatever the rectangle. */
#define DEEP_BAND_SAMPLES (1u << 20)

/* Work-items per group: a fixed size, so PoCL compiles the kernel once (at the warm-up) rather
 * than at the first launch of each new grid shape. */
#define DEEP_LOCAL 64u

/* First launch of the first render: turns per sample before anything was measured; the budget
 * then follows the measured launch times (ecl_next_budget). */
#define DEEP_FIRST_TURNS 64.0

/* Per orbit, the uints of the kernel's meta buffer (deep.cl: META_SIZE). */
#define META_SIZE (2 + 2 * ENGINE_CL_DEEP_LEVELS_MAX)

/* deep.cl's kernel arguments, in order. */
enum {
    DARG_JULIA, DARG_MAX_ITER, DARG_R2MAX, DARG_S, DARG_HALF_W, DARG_HALF_H, DARG_RECT_X,
    DARG_RECT_Y, DARG_RECT_W, DARG_NSAMPLES, DARG_BUDGET, DARG_INIT, DARG_META, DARG_Z0, DARG_B0,
    DARG_Z1, DARG_B1, DARG_ST_N, DARG_ST_M, DARG_ST_DZ, DARG_CTL, DARG_COUNTS, DARG_ZOUT,
    DARG_ST_E
};

/*
 * The deep program, queue and buffers of one engine. Kept in a list (the engine's struct belongs
 * to engine_cl.c and is never written here), keyed by the engine and its context; the entry
 * retains the context, so no other engine can come to have the same one while the entry exists.
 * The list lock guards the list; each entry's `busy` lock serialises the deep calls on its
 * engine. Its own queue lets a deep job run beside engine_cl_render's on the same device.
 */
struct deep_state {
    struct deep_state *next;
    engine_cl *engine;
    pthread_mutex_t busy;
    cl_context context;                /* retained */
    cl_command_queue queue;
    cl_program program;
    cl_kernel kernel;
    size_t local;
    int broken;                        /* the build or an OpenCL call failed: failure says */
    char failure[512];
    cl_mem meta, ctl, z[2], bla[2], st_n, st_m, st_dz, counts, zout, st_e;
    size_t cap_z[2], cap_bla[2], cap_samples;
    /* The job->orbit_id of what z, bla and meta hold (0: nothing known). One is enough: a
     * frame's bands share one reference. Read and written only under `busy`; a render of
     * another reference between two bands costs one more upload, never a wrong copy. */
    uint64_t orbit_id;
    double rate;                       /* turns x live samples per ms, once measured */
};

static pthread_mutex_t states_lock = PTHREAD_MUTEX_INITIALIZER;
static struct deep_state *states;

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cancel_raised(const atomic_int *cancel)
{
    return cancel && atomic_load_explicit(cancel, memory_order_relaxed) != 0;
}

static void release_mem(cl_mem *m)
{
    if (*m)
        clReleaseMemObject(*m);
    *m = NULL;
}

/* Releases everything st holds, in reverse creation order, and frees it. */
static void state_free(struct deep_state *st)
{
    release_mem(&st->st_e);
    release_mem(&st->zout);
    release_mem(&st->counts);
    release_mem(&st->st_dz);
    release_mem(&st->st_m);
    release_mem(&st->st_n);
    for (int o = 1; o >= 0; o--) {
        release_mem(&st->bla[o]);
        release_mem(&st->z[o]);
    }
    release_mem(&st->ctl);
    release_mem(&st->meta);
    if (st->kernel)
        clReleaseKernel(st->kernel);
    if (st->program)
        clReleaseProgram(st->program);
    if (st->queue)
        clReleaseCommandQueue(st->queue);
    if (st->context)
        clReleaseContext(st->context);
    pthread_mutex_destroy(&st->busy);
    free(st);
}

/* The engine's entry, created empty when it has none (NULL without memory or when the context
 * cannot be retained). */
static struct deep_state *state_of(engine_cl *e)
{
    struct deep_state *st;

    pthread_mutex_lock(&states_lock);
    for (st = states; st; st = st->next)
        if (st->engine == e && st->context == e->context)
            break;
    if (st == NULL && (st = calloc(1, sizeof(*st))) != NULL) {
        if (pthread_mutex_init(&st->busy, NULL) != 0) {
            free(st);
            st = NULL;
        } else if (clRetainContext(e->context) != CL_SUCCESS) {
            pthread_mutex_destroy(&st->busy);
            free(st);
            st = NULL;
        } else {
            st->engine = e;
            st->context = e->context;
            st->next = states;
            states = st;
        }
    }
    pthread_mutex_unlock(&states_lock);
    return st;
}

void engine_cl_deep_release(engine_cl *engine)
{
    struct deep_state **at, *st = NULL;

    if (engine == NULL)
        return;
    pthread_mutex_lock(&states_lock);
    for (at = &states; *at; at = &(*at)->next)
        if ((*at)->engine == engine && (*at)->context == engine->context) {
            st = *at;
            *at = st->next;
            break;
        }
    pthread_mutex_unlock(&states_lock);
    if (st)
        state_free(st);
}

int engine_cl_deep_usable(const engine_cl *engine)
{
    return engine && !engine->failed && engine->info.fp64 && engine->context != NULL;
}

/* Makes *m a buffer of at least `bytes` (at least 8: OpenCL refuses empty buffers), growing it
 * (never shrinking) so a stream of bands and tiles allocates once. */
static int ensure(struct deep_state *st, cl_mem *m, size_t *cap, size_t bytes, cl_mem_flags flags,
                  char *msg, size_t msglen)
{
    cl_int rc = CL_SUCCESS;
    int err = 0;

    if (bytes < 8)
        bytes = 8;
    if (*m && *cap >= bytes)
        return 0;
    release_mem(m);
    *cap = 0;
    CL_CHECK((*m = clCreateBuffer(st->context, flags, bytes, NULL, &rc), rc));
    *cap = bytes;

done:
    return err;
}

/* The per-sample buffers for `samples` samples. */
static int ensure_samples(struct deep_state *st, size_t samples, char *msg, size_t msglen)
{
    cl_int rc = CL_SUCCESS;
    int err = 0;

    if (st->ctl == NULL)
        CL_CHECK((st->ctl = clCreateBuffer(st->context, CL_MEM_READ_WRITE, 4 * sizeof(cl_uint),
                                           NULL, &rc),
                  rc));
    if (st->meta == NULL)
        CL_CHECK((st->meta = clCreateBuffer(st->context, CL_MEM_READ_ONLY,
                                            2 * META_SIZE * sizeof(cl_uint), NULL, &rc),
                  rc));
    if (samples <= st->cap_samples)
        return 0;
    release_mem(&st->st_e);
    release_mem(&st->zout);
    release_mem(&st->counts);
    release_mem(&st->st_dz);
    release_mem(&st->st_m);
    release_mem(&st->st_n);
    st->cap_samples = 0;
    CL_CHECK((st->st_n = clCreateBuffer(st->context, CL_MEM_READ_WRITE, samples * sizeof(cl_uint),
                                        NULL, &rc),
              rc));
    CL_CHECK((st->st_m = clCreateBuffer(st->context, CL_MEM_READ_WRITE, samples * sizeof(cl_uint),
                                        NULL, &rc),
              rc));
    CL_CHECK((st->st_dz = clCreateBuffer(st->context, CL_MEM_READ_WRITE,
                                         samples * 2 * sizeof(cl_double), NULL, &rc),
              rc));
    CL_CHECK((st->counts = clCreateBuffer(st->context, CL_MEM_WRITE_ONLY,
                                          samples * sizeof(cl_uint), NULL, &rc),
              rc));
    CL_CHECK((st->zout = clCreateBuffer(st->context, CL_MEM_WRITE_ONLY,
                                        samples * 2 * sizeof(cl_double), NULL, &rc),
              rc));
    CL_CHECK((st->st_e = clCreateBuffer(st->context, CL_MEM_READ_WRITE, samples * sizeof(cl_double),
                                        NULL, &rc),
              rc));
    st->cap_samples = samples;

done:
    return err;
}

/* Sets the arguments that do not change between the launches of one band (all but budget and
 * init). */
static int set_args(struct deep_state *st, int julia, cl_uint max_iter, double r2max, double s,
                    double half_w, double half_h, const struct spec_rect *band, int norbits,
                    char *msg, size_t msglen)
{
    const cl_kernel k = st->kernel;
    const int o1 = norbits > 1 ? 1 : 0;
    cl_int j = julia;
    cl_uint nsamples = band->width * band->height;
    int err = 0;

    CL_CHECK(clSetKernelArg(k, DARG_JULIA, sizeof(cl_int), &j));
    CL_CHECK(clSetKernelArg(k, DARG_MAX_ITER, sizeof(cl_uint), &max_iter));
    CL_CHECK(clSetKernelArg(k, DARG_R2MAX, sizeof(double), &r2max));
    CL_CHECK(clSetKernelArg(k, DARG_S, sizeof(double), &s));
    CL_CHECK(clSetKernelArg(k, DARG_HALF_W, sizeof(double), &half_w));
    CL_CHECK(clSetKernelArg(k, DARG_HALF_H, sizeof(double), &half_h));
    CL_CHECK(clSetKernelArg(k, DARG_RECT_X, sizeof(cl_uint), &band->x));
    CL_CHECK(clSetKernelArg(k, DARG_RECT_Y, sizeof(cl_uint), &band->y));
    CL_CHECK(clSetKernelArg(k, DARG_RECT_W, sizeof(cl_uint), &band->width));
    CL_CHECK(clSetKernelArg(k, DARG_NSAMPLES, sizeof(cl_uint), &nsamples));
    CL_CHECK(clSetKernelArg(k, DARG_META, sizeof(cl_mem), &st->meta));
    CL_CHECK(clSetKernelArg(k, DARG_Z0, sizeof(cl_mem), &st->z[0]));
    CL_CHECK(clSetKernelArg(k, DARG_B0, sizeof(cl_mem), &st->bla[0]));
    CL_CHECK(clSetKernelArg(k, DARG_Z1, sizeof(cl_mem), &st->z[o1]));
    CL_CHECK(clSetKernelArg(k, DARG_B1, sizeof(cl_mem), &st->bla[o1]));
    CL_CHECK(clSetKernelArg(k, DARG_ST_N, sizeof(cl_mem), &st->st_n));
    CL_CHECK(clSetKernelArg(k, DARG_ST_M, sizeof(cl_mem), &st->st_m));
    CL_CHECK(clSetKernelArg(k, DARG_ST_DZ, sizeof(cl_mem), &st->st_dz));
    CL_CHECK(clSetKernelArg(k, DARG_CTL, sizeof(cl_mem), &st->ctl));
    CL_CHECK(clSetKernelArg(k, DARG_COUNTS, sizeof(cl_mem), &st->counts));
    CL_CHECK(clSetKernelArg(k, DARG_ZOUT, sizeof(cl_mem), &st->zout));
    CL_CHECK(clSetKernelArg(k, DARG_ST_E, sizeof(cl_mem), &st->st_e));

done:
    return err;
}

/* One launch over `samples` work-items (rounded up to the group size) with the given budget. */
static int launch(struct deep_state *st, size_t samples, cl_uint budget, cl_uint init, char *msg,
                  size_t msglen)
{
    size_t global = (samples + st->local - 1) / st->local * st->local;
    int err = 0;

    if (global == 0)
        global = st->local;
    CL_CHECK(clSetKernelArg(st->kernel, DARG_BUDGET, sizeof(cl_uint), &budget));
    CL_CHECK(clSetKernelArg(st->kernel, DARG_INIT, sizeof(cl_uint), &init));
    CL_CHECK(clEnqueueNDRangeKernel(st->queue, st->kernel, 1, NULL, &global, &st->local, 0, NULL,
                                    NULL));

done:
    return err;
}

/* Appends a build log to msg on one line (whitespace runs become one space), cut to fit. */
static void append_log(char *msg, size_t msglen, const char *log)
{
    size_t at = strlen(msg);
    int space = 0;

    for (const char *p = log; *p && at + 1 < msglen; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t' || *p == ' ') {
            space = 1;
            continue;
        }
        if (space && at > 0 && msg[at - 1] != ' ' && at + 2 < msglen)
            msg[at++] = ' ';
        space = 0;
        msg[at++] = *p;
    }
    msg[at] = '\0';
}

/*
 * Builds the deep program and kernel of st from the embedded source (no -cl-mad-enable, no
 * -cl-fast-relaxed-math: counts must be the CPU's), then warms it up: two launches that do
 * nothing (nsamples 0), one on a small grid and one on a grid over 2^16 work-items, so that
 * PoCL's compiles for both grid classes happen here and not inside the first render's launches
 * (which would delay cancellation by seconds). A failed build returns ERR_DEVICE with the build
 * log in msg.
 */
static int build(struct engine_cl *e, struct deep_state *st, char *msg, size_t msglen)
{
    char options[64];
    const char *src = cl_deep_source_text;
    size_t len = cl_deep_source_len, wg = 0;
    const struct spec_rect none = {0, 0, 1, 0};
    char *log = NULL;
    cl_int rc = CL_SUCCESS;
    int err = 0;

    snprintf(options, sizeof(options), "-DLEVELS_MAX=%d", ENGINE_CL_DEEP_LEVELS_MAX);
    CL_CHECK((st->queue = clCreateCommandQueue(st->context, e->device, 0, &rc), rc));
    CL_CHECK((st->program = clCreateProgramWithSource(st->context, 1, &src, &len, &rc), rc));
    rc = clBuildProgram(st->program, 1, &e->device, options, NULL, NULL);
    if (rc != CL_SUCCESS) {
        size_t loglen = 0;

        snprintf(msg, msglen, "deep fp64 program build failed (%s): ", ecl_error_name(rc));
        if (clGetProgramBuildInfo(st->program, e->device, CL_PROGRAM_BUILD_LOG, 0, NULL,
                                  &loglen) == CL_SUCCESS &&
            loglen > 0 && (log = calloc(1, loglen + 1)) != NULL &&
            clGetProgramBuildInfo(st->program, e->device, CL_PROGRAM_BUILD_LOG, loglen, log,
                                  NULL) == CL_SUCCESS)
            append_log(msg, msglen, log);
        err = ERR_DEVICE;
        goto done;
    }
    CL_CHECK((st->kernel = clCreateKernel(st->program, "deep_f64", &rc), rc));
    CL_CHECK(clGetKernelWorkGroupInfo(st->kernel, e->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof(wg),
                                      &wg, NULL));
    st->local = wg < DEEP_LOCAL ? (wg ? wg : 1) : DEEP_LOCAL;

    if ((err = ensure_samples(st, 1, msg, msglen)) < 0 ||
        (err = ensure(st, &st->z[0], &st->cap_z[0], 16, CL_MEM_READ_ONLY, msg, msglen)) < 0 ||
        (err = ensure(st, &st->bla[0], &st->cap_bla[0], 8, CL_MEM_READ_ONLY, msg, msglen)) < 0)
        goto done;
    if ((err = set_args(st, 0, 1, 4.0, 1.0, 0.5, 0.5, &none, 1, msg, msglen)) < 0)
        goto done;
    if ((err = launch(st, 1, 1, 1, msg, msglen)) < 0 ||
        (err = launch(st, (size_t)1 << 17, 1, 1, msg, msglen)) < 0)
        goto done;
    CL_CHECK(clFinish(st->queue));

done:
    free(log);
    return err;
}

/* Checks a job against engine_cl_deep.h's limits; ERR_INVALID with a one-line message. */
static int job_check(const struct engine_cl_deep_job *job, char *msg, size_t msglen)
{
    const struct spec_rect *r = &job->rect;
    int need = job->fractal == SPEC_JULIA ? 2 : 1;

    if (job->version != ENGINE_CL_DEEP_JOB_VERSION) {
        snprintf(msg, msglen, "deep job version %u, expected %u", job->version,
                 ENGINE_CL_DEEP_JOB_VERSION);
        return ERR_INVALID;
    }
    if ((job->fractal != SPEC_JULIA && job->fractal != SPEC_MANDELBROT) || job->norbits < need ||
        job->norbits > 2) {
        snprintf(msg, msglen, "deep job: fractal %d needs %d orbit(s), got %d", (int)job->fractal,
                 need, job->norbits);
        return ERR_INVALID;
    }
    for (int o = 0; o < need; o++) {
        const struct engine_cl_deep_orbit *ob = &job->orbit[o];
        if (ob->z == NULL || ob->len == 0 || ob->len >= (1u << 31) ||
            ob->bla_levels > ENGINE_CL_DEEP_LEVELS_MAX || (ob->bla_levels && ob->bla == NULL) ||
            ob->bla_entries > UINT32_MAX) {
            snprintf(msg, msglen, "deep job: orbit %d has len %u, %u BLA levels, %zu entries", o,
                     ob->len, ob->bla_levels, ob->bla_entries);
            return ERR_INVALID;
        }
        for (uint32_t k = 0; k < ob->bla_levels; k++)
            if (ob->bla_first[k] > ob->bla_entries ||
                ob->bla_count[k] > ob->bla_entries - ob->bla_first[k]) {
                snprintf(msg, msglen, "deep job: orbit %d BLA level %u outside its %zu entries", o,
                         k, ob->bla_entries);
                return ERR_INVALID;
            }
    }
    if (!(job->spacing > 0) || !isfinite(job->spacing) || !isnormal(job->spacing)) {
        snprintf(msg, msglen, "deep job: spacing %g is not a positive normal double",
                 job->spacing);
        return ERR_INVALID;
    }
    if (job->max_iter == 0 || job->max_iter >= (1u << 31) - 1 || !(job->escape_radius > 0) ||
        !isfinite(job->escape_radius)) {
        snprintf(msg, msglen, "deep job: max_iter %u or escape radius %g out of range",
                 job->max_iter, job->escape_radius);
        return ERR_INVALID;
    }
    if (job->exact && !(job->exact_above > 0)) {
        snprintf(msg, msglen, "deep job: exact_above %g is not positive", job->exact_above);
        return ERR_INVALID;
    }
    if (job->grid_w == 0 || job->grid_h == 0 || r->width == 0 || r->height == 0 ||
        r->x > job->grid_w || r->width > job->grid_w - r->x || r->y > job->grid_h ||
        r->height > job->grid_h - r->y) {
        snprintf(msg, msglen, "deep job: rect %ux%u at %u,%u outside the %ux%u grid", r->width,
                 r->height, r->x, r->y, job->grid_w, job->grid_h);
        return ERR_INVALID;
    }
    return 0;
}

/* Uploads the job's orbits, BLA tables and their meta to the device (blocking writes: the
 * caller's arrays are free to change once this returns), unless its nonzero orbit_id is the one
 * already there; adds the bytes sent to *bytes. */
static int upload(struct deep_state *st, const struct engine_cl_deep_job *job, uint64_t *bytes,
                  char *msg, size_t msglen)
{
    cl_uint meta[2 * META_SIZE];
    int err = 0;

    if (job->orbit_id != 0 && job->orbit_id == st->orbit_id)
        return 0;
    /* Forgotten first: a write that fails halfway leaves buffers that match no id. */
    st->orbit_id = 0;
    memset(meta, 0, sizeof(meta));
    for (int o = 0; o < job->norbits && o < 2; o++) {
        const struct engine_cl_deep_orbit *ob = &job->orbit[o];
        size_t zb = (size_t)ob->len * 2 * sizeof(double);
        size_t bb = ob->bla_entries * ENGINE_CL_DEEP_BLA_DOUBLES * sizeof(double);
        cl_uint *mt = meta + o * META_SIZE;

        if ((err = ensure(st, &st->z[o], &st->cap_z[o], zb, CL_MEM_READ_ONLY, msg, msglen)) < 0 ||
            (err = ensure(st, &st->bla[o], &st->cap_bla[o], bb, CL_MEM_READ_ONLY, msg, msglen)) < 0)
            goto done;
        CL_CHECK(clEnqueueWriteBuffer(st->queue, st->z[o], CL_TRUE, 0, zb, ob->z, 0, NULL, NULL));
        if (bb)
            CL_CHECK(clEnqueueWriteBuffer(st->queue, st->bla[o], CL_TRUE, 0, bb, ob->bla, 0, NULL,
                                          NULL));
        *bytes += zb + bb;
        mt[0] = ob->len;
        mt[1] = ob->bla_levels;
        for (uint32_t k = 0; k < ob->bla_levels; k++) {
            mt[2 + k] = ob->bla_count[k];
            mt[2 + ENGINE_CL_DEEP_LEVELS_MAX + k] = (cl_uint)ob->bla_first[k];
        }
    }
    CL_CHECK(clEnqueueWriteBuffer(st->queue, st->meta, CL_TRUE, 0, sizeof(meta), meta, 0, NULL,
                                  NULL));
    *bytes += sizeof(meta);
    st->orbit_id = job->orbit_id;

done:
    return err;
}

/*
 * Computes one band (at most DEEP_BAND_SAMPLES samples) into counts (required) and, when zhost
 * is not NULL, its final z there (2 doubles a sample), and when ehost is not NULL, its error
 * bounds there (Julia, deep.cl's st_e): launches until every sample is done, polling cancel
 * between launches and sizing each launch's turn budget from the time the previous one took, so
 * each lasts about the engine's max_launch_ms. Returns 0, ERR_CANCELLED or ERR_DEVICE.
 */
static int render_band(struct engine_cl *e, struct deep_state *st,
                       const struct engine_cl_deep_job *job, const struct spec_rect *band,
                       uint32_t *counts, double *zhost, double *ehost,
                       const atomic_int *cancel, uint32_t *launches, char *msg, size_t msglen)
{
    const size_t nsamples = (size_t)band->width * band->height;
    const double target = e->max_launch_ms ? e->max_launch_ms : 50;
    cl_uint zero[4] = {0, 0, 0, 0}, ctl[4], init = 1, done_before = 0;
    double budget_f;
    int err = 0;

    if ((err = ensure_samples(st, nsamples, msg, msglen)) < 0)
        goto done;
    if ((err = set_args(st, job->fractal == SPEC_JULIA, job->max_iter,
                        job->escape_radius * job->escape_radius, job->spacing, job->half_w,
                        job->half_h, band, job->norbits, msg, msglen)) < 0)
        goto done;
    CL_CHECK(clEnqueueWriteBuffer(st->queue, st->ctl, CL_TRUE, 0, sizeof(zero), zero, 0, NULL,
                                  NULL));
    /* The first launch at a quarter of the target from earlier measurements (the rate is per
     * live sample, so a bigger band gets a proportionally smaller budget). */
    budget_f = st->rate > 0 ? st->rate * target * 0.25 / (double)nsamples : DEEP_FIRST_TURNS;
    if (budget_f < 1)
        budget_f = 1;

    for (;;) {
        double t0, dt;

        if (cancel_raised(cancel)) {
            err = ERR_CANCELLED;
            goto done;
        }
        t0 = now_ms();
        if ((err = launch(st, nsamples, (cl_uint)budget_f, init, msg, msglen)) < 0)
            goto done;
        /* The blocking read is also the launch's end: the next budget needs its duration. */
        CL_CHECK(clEnqueueReadBuffer(st->queue, st->ctl, CL_TRUE, 0, sizeof(ctl), ctl, 0, NULL,
                                     NULL));
        dt = now_ms() - t0;
        (*launches)++;
        init = 0;
        if (ctl[0] >= nsamples)
            break;
        if (dt >= 0.5 * target)
            st->rate = budget_f * (double)(nsamples - done_before) / dt;
        done_before = ctl[0];
        budget_f = ecl_next_budget(budget_f, dt, target);
    }
    CL_CHECK(clEnqueueReadBuffer(st->queue, st->counts, CL_FALSE, 0, nsamples * sizeof(cl_uint),
                                 counts, 0, NULL, NULL));
    if (zhost)
        CL_CHECK(clEnqueueReadBuffer(st->queue, st->zout, CL_FALSE, 0,
                                     nsamples * 2 * sizeof(double), zhost, 0, NULL, NULL));
    if (ehost)
        CL_CHECK(clEnqueueReadBuffer(st->queue, st->st_e, CL_FALSE, 0, nsamples * sizeof(double),
                                     ehost, 0, NULL, NULL));
    CL_CHECK(clFinish(st->queue));

done:
    /* A read still queued must not write into the caller's arrays after we return; its own
     * outcome no longer matters, so the call is not checked. */
    if (err < 0)
        clFinish(st->queue);
    return err;
}

int engine_cl_deep_render(engine_cl *engine, const struct engine_cl_deep_job *job,
                          uint32_t *counts, float *smooth, const atomic_int *cancel,
                          struct engine_cl_deep_stats *stats, char *msg, size_t msglen)
{
    struct deep_state *st;
    struct smooth_f64 sm;
    uint32_t *cbuf = NULL, launches = 0, band_rows, cap;
    double *zhost = NULL, *ehost = NULL, t0;
    const int exact = job->fractal == SPEC_JULIA && job->exact != NULL;
    uint64_t sum = 0, nexact = 0, uploaded = 0;
    int err = 0, locked = 0;

    if (stats)
        memset(stats, 0, sizeof(*stats));
    if (msg && msglen)
        msg[0] = '\0';
    if (engine->failed) {
        snprintf(msg, msglen, "%s", engine->failure);
        return ERR_DEVICE;
    }
    if (!engine->info.fp64) {
        snprintf(msg, msglen, "OpenCL device %s has no fp64", engine->info.name);
        return ERR_PRECONDITION;
    }
    if ((err = job_check(job, msg, msglen)) < 0)
        return err;
    if (cancel_raised(cancel))
        return ERR_CANCELLED;
    if ((st = state_of(engine)) == NULL)
        return ERR_NOMEM;
    /* Another deep call on this engine holds it: wait, still answering the cancel flag. */
    while (pthread_mutex_trylock(&st->busy) != 0) {
        if (cancel_raised(cancel))
            return ERR_CANCELLED;
        usleep(1000);
    }
    locked = 1;
    if (st->broken) {
        snprintf(msg, msglen, "%s", st->failure);
        err = ERR_DEVICE;
        goto done;
    }
    if (st->kernel == NULL) {
        t0 = now_ms();
        if ((err = build(engine, st, msg, msglen)) < 0)
            goto done;
        if (stats)
            stats->build_ms = now_ms() - t0;
    }
    cap = DEEP_BAND_SAMPLES;
    if (engine->info.max_alloc_bytes / (2 * sizeof(cl_double)) < cap)
        cap = (uint32_t)(engine->info.max_alloc_bytes / (2 * sizeof(cl_double)));
    band_rows = cap / job->rect.width ? cap / job->rect.width : 1;
    if (band_rows > job->rect.height)
        band_rows = job->rect.height;
    err = ERR_NOMEM;
    if (counts == NULL &&
        (cbuf = malloc((size_t)band_rows * job->rect.width * sizeof(uint32_t))) == NULL)
        goto done;
    if (smooth && (zhost = malloc((size_t)band_rows * job->rect.width * 2 * sizeof(double))) ==
                      NULL)
        goto done;
    if (exact && (ehost = malloc((size_t)band_rows * job->rect.width * sizeof(double))) == NULL)
        goto done;
    if ((err = upload(st, job, &uploaded, msg, msglen)) < 0)
        goto done;
    if (smooth) {
        /* deep_render.c's smooth constants: an fp64 view with the same r2max and max_iter; its
         * mapping is not used (the samples' c come from below). */
        esc_view_f64 v;
        esc_view_init_f64(&v, (int)job->fractal, job->c_re, job->c_im, job->center_re,
                          job->center_im, job->spacing * job->grid_w, job->grid_w, job->grid_h,
                          job->escape_radius, job->max_iter);
        smooth_init_f64(&sm, &v);
    }

    for (uint32_t row = 0; row < job->rect.height; row += band_rows) {
        struct spec_rect band = {job->rect.x, job->rect.y + row, job->rect.width,
                                 job->rect.height - row < band_rows ? job->rect.height - row
                                                                    : band_rows};
        size_t off = (size_t)row * job->rect.width, n = (size_t)band.width * band.height;
        uint32_t *c = counts ? counts + off : cbuf;

        if ((err = render_band(engine, st, job, &band, c, zhost, ehost, cancel, &launches, msg,
                               msglen)) < 0)
            goto done;
        /* The samples whose deltas lost the count: their count and z from the host's exact
         * recomputation, as deep_render does it (!(e <= bound) also takes NaN). */
        for (size_t k = 0; exact && k < n; k++) {
            uint32_t cn;
            double zr, zi;
            if (ehost[k] <= job->exact_above)
                continue;
            if ((err = job->exact(job->exact_ref, job->exact_view,
                                  band.x + (uint32_t)(k % band.width),
                                  band.y + (uint32_t)(k / band.width), ehost[k], cancel, &cn, &zr,
                                  &zi)) < 0) {
                if (err != ERR_CANCELLED)
                    snprintf(msg, msglen, "deep job: the exact recomputation failed (%d)", err);
                goto done;
            }
            c[k] = cn;
            if (zhost) {
                zhost[2 * k] = zr;
                zhost[2 * k + 1] = zi;
            }
            nexact++;
        }
        for (size_t k = 0; k < n; k++)
            sum += c[k];
        if (smooth == NULL)
            continue;
        /* deep_render.c's render_rows, sample for sample: Mandelbrot's c is the sample's own
         * offset plus the centre in double, Julia's the constant. */
        for (uint32_t y = 0; y < band.height; y++) {
            double oy = -(((double)(band.y + y) + 0.5) - job->half_h);
            for (uint32_t x = 0; x < band.width; x++) {
                size_t k = (size_t)y * band.width + x;
                double ox = ((double)(band.x + x) + 0.5) - job->half_w, cr, ci;
                if (job->fractal == SPEC_JULIA) {
                    cr = job->c_re;
                    ci = job->c_im;
                } else {
                    cr = ox * job->spacing + job->center_re;
                    ci = oy * job->spacing + job->center_im;
                }
                smooth[off + k] =
                    smooth_value_f64(&sm, c[k], zhost[2 * k], zhost[2 * k + 1], cr, ci);
            }
        }
    }
    if (stats) {
        stats->iterations = sum;
        stats->exact = nexact;
    }
    err = 0;

done:
    if (stats) {
        stats->launches = launches;
        stats->upload_bytes = uploaded;
    }
    /* A failed build, or a failed OpenCL call, fails every later deep job on this engine with
     * the same message. The engine itself is left to engine_cl_render, which finds out on its
     * own whether the device still works for plain renders (and whose struct another thread
     * may be using). */
    if (err == ERR_DEVICE && !st->broken) {
        st->broken = 1;
        snprintf(st->failure, sizeof(st->failure), "%s", msg);
    }
    if (locked)
        pthread_mutex_unlock(&st->busy);
    free(cbuf);
    free(zhost);
    free(ehost);
    return err;
}
