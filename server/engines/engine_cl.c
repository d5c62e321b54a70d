/* engine_cl.c: every OpenCL device as a render engine: discovery through the ICD loader, programs
 * built from the embedded kernels/render.cl (or a binary cache), bounded resumable launches. */
#include "engine_cl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cl_source.h"
#include "devices.h"
#include "err.h"
#include "escape.h"
#include "host_threads.h"
#include "smooth.h"

#include "engine_cl_internal.h"

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---- rendering ---- */

/* The kernel arguments of one render in both precisions; the kernel reads the one it is built
 * for. Computed by escape.h's own esc_view_init on the host, as the CPU engine does. */
struct launch_params {
    int prec;
    esc_view_f32 v32;
    esc_view_f64 v64;
    uint32_t flags;
};

/* |c|^2 under which an orbit, once outside R, never comes back inside (see engine_cpu.c's
 * lane_safe_limit, which this repeats): then checking the last z of a block finds every escape
 * in it. Negative when no c is safe (R <= ~1). */
static double safe_c2(double r, double r2max)
{
    double lim;

    if (isinf(r2max))
        return INFINITY;
    lim = r * r - r - 1e-4 * r * r;
    return lim > 0 ? lim * lim : -1.0;
}

static void params_init(struct launch_params *lp, const struct render_spec *spec,
                        const struct spec_rect *rect, bool want_smooth, bool shortcuts)
{
    uint32_t gw = spec->width * spec->supersample, gh = spec->height * spec->supersample;
    uint32_t xs[2] = {rect->x, rect->x + rect->width - 1};
    uint32_t ys[2] = {rect->y, rect->y + rect->height - 1};
    double c2 = 0, lim;

    memset(lp, 0, sizeof(*lp));
    lp->prec = spec->precision == SPEC_FP64 ? PREC_F64 : PREC_F32;
    if (lp->prec == PREC_F32) {
        esc_view_init_f32(&lp->v32, (int)spec->fractal, (float)spec->c_re, (float)spec->c_im,
                          (float)spec->center_re, (float)spec->center_im, (float)spec->view_width,
                          gw, gh, (float)spec->escape_radius, spec->max_iter);
        lim = safe_c2((double)(float)spec->escape_radius, lp->v32.r2max);
        if (spec->fractal == SPEC_JULIA)
            c2 = (double)lp->v32.c_re * lp->v32.c_re + (double)lp->v32.c_im * lp->v32.c_im;
        else
            /* The mapping is monotonic in i and j, so |c| peaks at a corner of the rectangle. */
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    double x = esc_x_f32(&lp->v32, xs[a]), y = esc_y_f32(&lp->v32, ys[b]);
                    c2 = fmax(c2, x * x + y * y);
                }
    } else {
        esc_view_init_f64(&lp->v64, (int)spec->fractal, spec->c_re, spec->c_im, spec->center_re,
                          spec->center_im, spec->view_width, gw, gh, spec->escape_radius,
                          spec->max_iter);
        lim = safe_c2(spec->escape_radius, lp->v64.r2max);
        if (spec->fractal == SPEC_JULIA)
            c2 = lp->v64.c_re * lp->v64.c_re + lp->v64.c_im * lp->v64.c_im;
        else
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    double x = esc_x_f64(&lp->v64, xs[a]), y = esc_y_f64(&lp->v64, ys[b]);
                    c2 = fmax(c2, x * x + y * y);
                }
    }
    lp->flags = (!(c2 <= lim) ? FLAG_CAREFUL : 0) | (want_smooth ? FLAG_SMOOTH : 0);
    /* The main-component test holds for orbits that stay inside R = 2 (render.cl), which the
     * check sees as x2 + y2 <= r2max in the working precision. */
    if (shortcuts && spec->fractal == SPEC_MANDELBROT &&
        (lp->prec == PREC_F32 ? lp->v32.r2max >= 4.0f : lp->v64.r2max >= 4.0))
        lp->flags |= FLAG_MAIN;
}

/* Sets a REAL kernel argument in the kernel's precision. */
static cl_int set_real(cl_kernel k, cl_uint idx, int prec, double v)
{
    float f = (float)v;

    return prec == PREC_F64 ? clSetKernelArg(k, idx, sizeof(double), &v)
                            : clSetKernelArg(k, idx, sizeof(float), &f);
}

static cl_int injected_fault(const struct engine_cl *e)
{
    return e->fault_at && e->launches + 1 >= e->fault_at ? CL_OUT_OF_RESOURCES : CL_SUCCESS;
}

static void release_buffers(struct engine_cl *e)
{
    cl_mem *bufs[] = {&e->st_wi, &e->st_pos, &e->st_n, &e->st_zi, &e->st_zr,
                      &e->zout, &e->counts, &e->ctl};

    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        if (*bufs[i]) {
            clReleaseMemObject(*bufs[i]);
            *bufs[i] = NULL;
        }
    e->cap_samples = e->cap_state = e->cap_work = 0;
}

/* Makes the device buffers hold at least `samples` outputs, `state` lane states and `work`
 * work-items, growing (never shrinking) them, so a stream of tiles allocates once. */
static int ensure_buffers(struct engine_cl *e, size_t samples, size_t state, size_t work,
                          char *msg, size_t msglen)
{
    cl_int rc = CL_SUCCESS;
    int err = 0;

    if (e->ctl == NULL)
        CL_CHECK((e->ctl = clCreateBuffer(e->context, CL_MEM_READ_WRITE, 4 * sizeof(cl_uint), NULL,
                                          &rc),
                  rc));
    if (samples > e->cap_samples) {
        if (e->zout)
            clReleaseMemObject(e->zout);
        if (e->counts)
            clReleaseMemObject(e->counts);
        e->zout = e->counts = NULL;
        e->cap_samples = 0;
        CL_CHECK((e->counts = clCreateBuffer(e->context, CL_MEM_WRITE_ONLY,
                                             samples * sizeof(cl_uint), NULL, &rc),
                  rc));
        CL_CHECK((e->zout = clCreateBuffer(e->context, CL_MEM_WRITE_ONLY,
                                           samples * 2 * sizeof(cl_double), NULL, &rc),
                  rc));
        e->cap_samples = samples;
    }
    if (state > e->cap_state) {
        cl_mem *bufs[] = {&e->st_n, &e->st_pos, &e->st_zi, &e->st_zr};
        for (size_t i = 0; i < 4; i++)
            if (*bufs[i]) {
                clReleaseMemObject(*bufs[i]);
                *bufs[i] = NULL;
            }
        e->cap_state = 0;
        /* Room for doubles, so one set of buffers serves both precisions. */
        CL_CHECK((e->st_zr = clCreateBuffer(e->context, CL_MEM_READ_WRITE,
                                            state * sizeof(cl_double), NULL, &rc),
                  rc));
        CL_CHECK((e->st_zi = clCreateBuffer(e->context, CL_MEM_READ_WRITE,
                                            state * sizeof(cl_double), NULL, &rc),
                  rc));
        CL_CHECK((e->st_pos = clCreateBuffer(e->context, CL_MEM_READ_WRITE,
                                             state * sizeof(cl_uint), NULL, &rc),
                  rc));
        CL_CHECK((e->st_n = clCreateBuffer(e->context, CL_MEM_READ_WRITE,
                                           state * sizeof(cl_uint), NULL, &rc),
                  rc));
        e->cap_state = state;
    }
    if (work > e->cap_work) {
        if (e->st_wi)
            clReleaseMemObject(e->st_wi);
        e->st_wi = NULL;
        e->cap_work = 0;
        CL_CHECK((e->st_wi = clCreateBuffer(e->context, CL_MEM_READ_WRITE,
                                            work * 4 * sizeof(cl_uint), NULL, &rc),
                  rc));
        e->cap_work = work;
    }

done:
    return err;
}

static int cancel_raised(const atomic_int *cancel)
{
    return cancel && atomic_load_explicit(cancel, memory_order_relaxed) != 0;
}

/* Computes one band (a rectangle of at most ECL_BAND_SAMPLES samples) into counts (required)
 * and smooth (may be NULL; if not, e->zhost has room for the band's final z values): sets the
 * arguments once, then launches the kernel until every
 * work-item reports done, polling cancel between launches and sizing each launch's budget from
 * the time the previous one took, so each lasts about max_launch_ms. Adds the launches made to
 * *launches. Returns 0, ERR_CANCELLED or ERR_DEVICE (msg set). */
static int render_band(struct engine_cl *e, const struct launch_params *lp,
                       const struct spec_rect *band, uint32_t *counts, float *smooth,
                       const atomic_int *cancel, uint32_t *launches, char *msg, size_t msglen)
{
    const int prec = lp->prec;
    const cl_kernel k = e->kernel[prec];
    const uint32_t nsamples = band->width * band->height;
    const double target = e->max_launch_ms;
    const double growth_first = e->info.variant == ENGINE_CL_VECTOR ? ECL_FIRST_BLOCKS
                                                                     : ECL_FIRST_ITERS;
    cl_uint zero[4] = {0, 0, 0, 0}, ctl[4];
    cl_uint nwork, init = 1, budget, u, finished = 0;
    size_t global, state;
    double budget_f;
    int err = 0;

    switch (e->info.variant) {
    case ENGINE_CL_VECTOR:
        nwork = e->info.compute_units * ECL_VECTOR_PER_CU;
        break;
    case ENGINE_CL_SCALAR:
        nwork = e->info.compute_units * ECL_SCALAR_PER_CU;
        break;
    default:
        nwork = nsamples;
        break;
    }
    if (nwork > nsamples && e->info.variant != ENGINE_CL_VECTOR)
        nwork = nsamples;
    global = (nwork + e->local - 1) / e->local * e->local;
    state = (size_t)nwork * e->lanes[prec];
    if ((err = ensure_buffers(e, nsamples, state, nwork, msg, msglen)) < 0)
        goto done;

    /* A first launch sized from earlier renders' measurements, at a quarter of the target. The
     * rate is per active work-item, so a render with more work-items (NAIVE: one per sample)
     * gets a proportionally smaller budget; on a device with idle capacity this errs short. */
    budget_f = e->rate[prec] > 0 ? e->rate[prec] * target * 0.25 / nwork : growth_first;
    if (budget_f < 1)
        budget_f = 1;

    u = (cl_uint)lp->flags;
    CL_CHECK(clSetKernelArg(k, ARG_FRACTAL, sizeof(cl_int),
                            prec ? &lp->v64.fractal : &lp->v32.fractal));
    if (prec == PREC_F64) {
        CL_CHECK(set_real(k, ARG_CENTER_RE, prec, lp->v64.center_re));
        CL_CHECK(set_real(k, ARG_CENTER_IM, prec, lp->v64.center_im));
        CL_CHECK(set_real(k, ARG_S, prec, lp->v64.s));
        CL_CHECK(set_real(k, ARG_HALF_W, prec, lp->v64.half_w));
        CL_CHECK(set_real(k, ARG_HALF_H, prec, lp->v64.half_h));
        CL_CHECK(set_real(k, ARG_C_RE, prec, lp->v64.c_re));
        CL_CHECK(set_real(k, ARG_C_IM, prec, lp->v64.c_im));
        CL_CHECK(set_real(k, ARG_R2MAX, prec, lp->v64.r2max));
        CL_CHECK(set_real(k, ARG_LOG_R, prec, lp->v64.log_r));
        CL_CHECK(clSetKernelArg(k, ARG_MAX_ITER, sizeof(cl_uint), &lp->v64.max_iter));
    } else {
        CL_CHECK(set_real(k, ARG_CENTER_RE, prec, lp->v32.center_re));
        CL_CHECK(set_real(k, ARG_CENTER_IM, prec, lp->v32.center_im));
        CL_CHECK(set_real(k, ARG_S, prec, lp->v32.s));
        CL_CHECK(set_real(k, ARG_HALF_W, prec, lp->v32.half_w));
        CL_CHECK(set_real(k, ARG_HALF_H, prec, lp->v32.half_h));
        CL_CHECK(set_real(k, ARG_C_RE, prec, lp->v32.c_re));
        CL_CHECK(set_real(k, ARG_C_IM, prec, lp->v32.c_im));
        CL_CHECK(set_real(k, ARG_R2MAX, prec, lp->v32.r2max));
        CL_CHECK(set_real(k, ARG_LOG_R, prec, lp->v32.log_r));
        CL_CHECK(clSetKernelArg(k, ARG_MAX_ITER, sizeof(cl_uint), &lp->v32.max_iter));
    }
    CL_CHECK(clSetKernelArg(k, ARG_RECT_X, sizeof(cl_uint), &band->x));
    CL_CHECK(clSetKernelArg(k, ARG_RECT_Y, sizeof(cl_uint), &band->y));
    CL_CHECK(clSetKernelArg(k, ARG_RECT_W, sizeof(cl_uint), &band->width));
    CL_CHECK(clSetKernelArg(k, ARG_NSAMPLES, sizeof(cl_uint), &nsamples));
    CL_CHECK(clSetKernelArg(k, ARG_NWORK, sizeof(cl_uint), &nwork));
    CL_CHECK(clSetKernelArg(k, ARG_FLAGS, sizeof(cl_uint), &u));
    CL_CHECK(clSetKernelArg(k, ARG_ST_ZR, sizeof(cl_mem), &e->st_zr));
    CL_CHECK(clSetKernelArg(k, ARG_ST_ZI, sizeof(cl_mem), &e->st_zi));
    CL_CHECK(clSetKernelArg(k, ARG_ST_N, sizeof(cl_mem), &e->st_n));
    CL_CHECK(clSetKernelArg(k, ARG_ST_POS, sizeof(cl_mem), &e->st_pos));
    CL_CHECK(clSetKernelArg(k, ARG_ST_WI, sizeof(cl_mem), &e->st_wi));
    CL_CHECK(clSetKernelArg(k, ARG_CTL, sizeof(cl_mem), &e->ctl));
    CL_CHECK(clSetKernelArg(k, ARG_COUNTS, sizeof(cl_mem), &e->counts));
    CL_CHECK(clSetKernelArg(k, ARG_ZOUT, sizeof(cl_mem), &e->zout));
    CL_CHECK(clEnqueueWriteBuffer(e->queue, e->ctl, CL_TRUE, 0, sizeof(zero), zero, 0, NULL, NULL));

    for (;;) {
        double t0, dt;

        if (cancel_raised(cancel)) {
            err = ERR_CANCELLED;
            goto done;
        }
        budget = (cl_uint)budget_f;
        CL_CHECK(clSetKernelArg(k, ARG_BUDGET, sizeof(cl_uint), &budget));
        CL_CHECK(clSetKernelArg(k, ARG_INIT, sizeof(cl_uint), &init));
        CL_CHECK(injected_fault(e));
        t0 = now_ms();
        CL_CHECK(clEnqueueNDRangeKernel(e->queue, k, 1, NULL, &global, &e->local, 0, NULL, NULL));
        /* The blocking read is also the launch's end: the next budget needs its duration. */
        CL_CHECK(clEnqueueReadBuffer(e->queue, e->ctl, CL_TRUE, 0, sizeof(ctl), ctl, 0, NULL,
                                     NULL));
        dt = now_ms() - t0;
        e->launches++;
        (*launches)++;
        init = 0;
        if (ctl[1] >= nwork)
            break;
        /* Only a launch that ran a good while measures the device's rate. */
        if (dt >= 0.5 * target)
            e->rate[prec] = budget_f * (double)(nwork - finished) / dt;
        finished = ctl[1];
        budget_f = ecl_next_budget(budget_f, dt, target);
    }
    CL_CHECK(clEnqueueReadBuffer(e->queue, e->counts, CL_FALSE, 0, nsamples * sizeof(cl_uint),
                                 counts, 0, NULL, NULL));
    if (smooth)
        CL_CHECK(clEnqueueReadBuffer(e->queue, e->zout, CL_FALSE, 0,
                                     (size_t)nsamples * 2 * (prec ? sizeof(double) : sizeof(float)),
                                     e->zhost, 0, NULL, NULL));
    CL_CHECK(clFinish(e->queue));
    /* The smooth values from the final z, by smooth.h's pass on the host: bit for bit the CPU
     * engine's values (a device's log/log2 may differ from libm's by an ulp). */
    if (smooth && prec == PREC_F64)
        smooth_rect_f64(&lp->v64, band->x, band->y, band->width, nsamples, counts,
                        (const double *)e->zhost, smooth);
    else if (smooth)
        smooth_rect_f32(&lp->v32, band->x, band->y, band->width, nsamples, counts,
                        (const float *)e->zhost, smooth);

done:
    return err;
}

int engine_cl_render(engine_cl *engine, const struct render_spec *spec, const struct spec_rect *rect,
                     uint32_t *counts, float *smooth, const atomic_int *cancel,
                     struct engine_cpu_stats *stats, char *msg, size_t msglen)
{
    struct launch_params lp;
    uint64_t sum = 0;
    uint32_t launches = 0, band_rows, cap;
    uint32_t *out = counts;
    int err = 0;

    if (stats)
        memset(stats, 0, sizeof(*stats));
    if (msg && msglen)
        msg[0] = '\0';
    if (engine->failed) {
        snprintf(msg, msglen, "%s", engine->failure);
        return ERR_DEVICE;
    }
    if (spec->precision == SPEC_FP64 && !engine->info.fp64) {
        snprintf(msg, msglen, "OpenCL device %s has no fp64", engine->info.name);
        return ERR_PRECONDITION;
    }
    if (cancel_raised(cancel))
        return ERR_CANCELLED;
    if (rect->width == 0 || rect->height == 0)
        return 0;

    cap = ECL_BAND_SAMPLES;
    /* The largest buffer, the final z of every sample, takes 16 bytes a sample. */
    if (engine->info.max_alloc_bytes / (2 * sizeof(cl_double)) < cap)
        cap = (uint32_t)(engine->info.max_alloc_bytes / (2 * sizeof(cl_double)));
    band_rows = cap / rect->width ? cap / rect->width : 1;
    if (band_rows > rect->height)
        band_rows = rect->height;
    if (smooth) {
        size_t need = (size_t)band_rows * rect->width * 2 * sizeof(double);
        if (need > engine->zhost_cap) {
            free(engine->zhost);
            engine->zhost_cap = 0;
            if ((engine->zhost = malloc(need)) == NULL) {
                err = ERR_NOMEM;
                goto done;
            }
            engine->zhost_cap = need;
        }
    }
    if (out == NULL) {
        size_t need = (size_t)band_rows * rect->width;
        if (need > engine->scratch_cap) {
            free(engine->scratch);
            engine->scratch_cap = 0;
            if ((engine->scratch = malloc(need * sizeof(uint32_t))) == NULL) {
                err = ERR_NOMEM;
                goto done;
            }
            engine->scratch_cap = need;
        }
    }
    params_init(&lp, spec, rect, smooth != NULL, engine->info.shortcuts);
    for (uint32_t row = 0; row < rect->height; row += band_rows) {
        struct spec_rect band = {rect->x, rect->y + row, rect->width,
                                 rect->height - row < band_rows ? rect->height - row : band_rows};
        size_t off = (size_t)row * rect->width, n = (size_t)band.width * band.height;
        uint32_t *c = counts ? counts + off : engine->scratch;

        err = render_band(engine, &lp, &band, c, smooth ? smooth + off : NULL, cancel, &launches,
                          msg, msglen);
        if (err < 0)
            goto done;
        for (size_t i = 0; i < n; i++)
            sum += c[i];
    }
    if (stats) {
        stats->iterations = sum;
        stats->tiles = launches;
    }

done:
    if (err == ERR_DEVICE) {
        engine->failed = 1;
        snprintf(engine->failure, sizeof(engine->failure), "%s", msg);
    }
    return err;
}

/* ---- discovery ---- */

/* A small render through the whole path (buffers, arguments, launch, read-back), which also
 * makes drivers that compile per launch shape at first launch do so now rather than inside the
 * first real render (PoCL compiles each kernel once for grids under about 2^16 work-items and
 * once for larger ones: the second render, max_iter 1 over 2^18 samples, is for the kernels
 * whose grid grows with the rectangle). */
static int warm_up(struct engine_cl *e, int prec, char *msg, size_t msglen)
{
    struct render_spec spec;
    struct spec_rect r = {0, 0, 16, 16};
    uint32_t counts[256];
    float smooth[256];
    int err;

    memset(&spec, 0, sizeof(spec));
    spec.fractal = SPEC_JULIA;
    spec.c_re = -0.8;
    spec.c_im = 0.156;
    spec.view_width = 3.0;
    spec.width = spec.height = 16;
    spec.region = r;
    spec.max_iter = 64;
    spec.escape_radius = 2.0;
    spec.precision = prec == PREC_F64 ? SPEC_FP64 : SPEC_FP32;
    spec.format = SPEC_RAW_F32;
    spec.supersample = 1;
    if ((err = engine_cl_render(e, &spec, &r, counts, smooth, NULL, NULL, msg, msglen)) < 0)
        return err;
    if (e->info.variant == ENGINE_CL_VECTOR)
        return 0;
    spec.width = spec.height = 512;
    spec.region = r = (struct spec_rect){0, 0, 512, 512};
    spec.max_iter = 1;
    return engine_cl_render(e, &spec, &r, NULL, NULL, NULL, NULL, msg, msglen);
}

/* Prepares one device: context, in-order queue, programs (fp64 only with fp64), a warm-up
 * render. Failures are recorded in e->failure (the device stays listed, marked failed). */
static void prepare(struct engine_cl *e, const struct engine_cl_options *opts)
{
    char msg[sizeof(e->failure)] = "";
    size_t msglen = sizeof(msg);
    cl_context_properties props[3] = {CL_CONTEXT_PLATFORM, (cl_context_properties)e->platform, 0};
    cl_int rc = CL_SUCCESS;
    size_t wg = 0;
    int err = 0, cached[2] = {1, 1};
    double t0 = now_ms();

    CL_CHECK((e->context = clCreateContext(props, 1, &e->device, NULL, NULL, &rc), rc));
    CL_CHECK((e->queue = clCreateCommandQueue(e->context, e->device, 0, &rc), rc));
    if ((err = ecl_build_program(e, PREC_F32, opts->cache_dir, &cached[0], msg, msglen)) < 0)
        goto done;
    if (e->info.fp64 &&
        (err = ecl_build_program(e, PREC_F64, opts->cache_dir, &cached[1], msg, msglen)) < 0)
        goto done;
    /* One work-item per group for VECTOR (each is a whole lane machine); a modest fixed group
     * for SCALAR. A fixed size also means PoCL compiles each kernel once. */
    e->local = 1;
    if (e->info.variant != ENGINE_CL_VECTOR) {
        CL_CHECK(clGetKernelWorkGroupInfo(e->kernel[PREC_F32], e->device, CL_KERNEL_WORK_GROUP_SIZE,
                                          sizeof(wg), &wg, NULL));
        e->local = wg < ECL_SCALAR_LOCAL ? (wg ? wg : 1) : ECL_SCALAR_LOCAL;
    }
    if ((err = warm_up(e, PREC_F32, msg, msglen)) < 0)
        goto done;
    if (e->info.fp64 && (err = warm_up(e, PREC_F64, msg, msglen)) < 0)
        goto done;
    e->info.from_cache = cached[0] && cached[1];
    e->info.build_ms = now_ms() - t0;

done:
    if (err < 0) {
        e->failed = 1;
        snprintf(e->failure, sizeof(e->failure), "%s", msg[0] ? msg : err_name(err));
    }
}

static void engine_free(struct engine_cl *e)
{
    if (e == NULL)
        return;
    release_buffers(e);
    for (int p = 1; p >= 0; p--) {
        if (e->kernel[p])
            clReleaseKernel(e->kernel[p]);
        if (e->program[p])
            clReleaseProgram(e->program[p]);
    }
    if (e->queue)
        clReleaseCommandQueue(e->queue);
    if (e->context)
        clReleaseContext(e->context);
    free(e->scratch);
    free(e->zhost);
    if (e->runtime_threads_owner)
        free(e->runtime_threads);
    free(e);
}

/* Records, in the `count` engines of one platform, the threads that started since `before` was
 * taken (the platform's runtime threads) and whether the platform is CPU-only. Without memory the
 * engines simply record none. */
static void note_runtime_threads(struct engine_cl **engines, size_t count, const pid_t *before,
                                 size_t nbefore)
{
    pid_t *now = NULL;
    size_t nnow = 0;
    bool cpu_only = true;

    if (count == 0 || host_threads_list(&now, &nnow) < 0)
        return;
    nnow = host_threads_new_since(before, nbefore, now, nnow);
    for (size_t i = 0; i < count; i++)
        cpu_only = cpu_only && engines[i]->info.type == DEVICE_CPU;
    for (size_t i = 0; i < count; i++) {
        engines[i]->runtime_threads = now;
        engines[i]->nruntime_threads = nnow;
        engines[i]->runtime_threads_owner = i == 0;
        engines[i]->platform_cpu_only = cpu_only;
    }
}

int engine_cl_discover(engine_cl ***out, size_t *count, const struct engine_cl_options *opts,
                       char *msg, size_t msglen)
{
    static const struct engine_cl_options defaults = ENGINE_CL_OPTIONS_INIT;
    cl_platform_id *platforms = NULL;
    cl_device_id *devices = NULL;
    struct engine_cl **list = NULL;
    cl_uint nplat = 0;
    size_t n = 0, nfailed = 0, nthreads_before = 0;
    pid_t *threads_before = NULL;
    const char *env;
    bool brute;
    cl_int rc;
    int err = 0;

    *out = NULL;
    *count = 0;
    if (opts == NULL)
        opts = &defaults;
    if (msg && msglen)
        msg[0] = '\0';
    env = getenv("FRACTALD_CL_BRUTE_FORCE");
    brute = (opts->version >= 2 && opts->brute_force) || (env && env[0] && strcmp(env, "0") != 0);
    rc = clGetPlatformIDs(0, NULL, &nplat);
    if (rc == CL_PLATFORM_NOT_FOUND_KHR || (rc == CL_SUCCESS && nplat == 0)) {
        snprintf(msg, msglen, "no OpenCL platform: the ICD loader found no installed driver");
        goto done;
    }
    if (rc != CL_SUCCESS) {
        snprintf(msg, msglen, "no OpenCL platform: clGetPlatformIDs failed with %s",
                 ecl_error_name(rc));
        goto done;
    }
    if ((platforms = calloc(nplat, sizeof(*platforms))) == NULL) {
        err = ERR_NOMEM;
        goto done;
    }
    if ((rc = clGetPlatformIDs(nplat, platforms, NULL)) != CL_SUCCESS) {
        snprintf(msg, msglen, "no OpenCL platform: clGetPlatformIDs failed with %s",
                 ecl_error_name(rc));
        goto done;
    }
    for (cl_uint p = 0; p < nplat; p++) {
        cl_uint ndev = 0;
        struct engine_cl **grown;
        size_t first = n;

        free(threads_before);
        threads_before = NULL;
        if (host_threads_list(&threads_before, &nthreads_before) < 0)
            nthreads_before = 0;
        /* A platform with no device (or one that fails to list them) is skipped. */
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 0, NULL, &ndev) != CL_SUCCESS ||
            ndev == 0)
            continue;
        free(devices);
        if ((devices = calloc(ndev, sizeof(*devices))) == NULL) {
            err = ERR_NOMEM;
            goto done;
        }
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, ndev, devices, NULL) != CL_SUCCESS)
            continue;
        if ((grown = realloc(list, (n + ndev) * sizeof(*list))) == NULL) {
            err = ERR_NOMEM;
            goto done;
        }
        list = grown;
        for (cl_uint d = 0; d < ndev; d++) {
            struct engine_cl *e = calloc(1, sizeof(*e));

            if (e == NULL) {
                err = ERR_NOMEM;
                goto done;
            }
            list[n++] = e;
            e->platform = platforms[p];
            e->device = devices[d];
            e->info.platform_index = p;
            e->info.device_index = d;
            e->max_launch_ms = opts->max_launch_ms ? opts->max_launch_ms : 50;
            ecl_query_device(e);
            e->info.variant = opts->variant != ENGINE_CL_AUTO ? opts->variant
                              : e->info.type == DEVICE_CPU   ? ENGINE_CL_VECTOR
                                                             : ENGINE_CL_SCALAR;
            e->info.shortcuts = e->info.variant != ENGINE_CL_NAIVE && !brute;
            prepare(e, opts);
            nfailed += e->failed != 0;
        }
        if (threads_before)
            note_runtime_threads(list + first, n - first, threads_before, nthreads_before);
    }
    snprintf(msg, msglen, "%zu OpenCL device%s on %u platform%s", n, n == 1 ? "" : "s",
             (unsigned)nplat, nplat == 1 ? "" : "s");
    if (nfailed)
        snprintf(msg + strlen(msg), msglen - strlen(msg), ", %zu failed", nfailed);
    *out = list;
    *count = n;
    list = NULL;
    n = 0;

done:
    if (list)
        engine_cl_free_all(list, n);
    free(threads_before);
    free(devices);
    free(platforms);
    return err;
}

void engine_cl_free_all(engine_cl **engines, size_t count)
{
    if (engines == NULL)
        return;
    for (size_t i = count; i > 0; i--)
        engine_free(engines[i - 1]);
    free(engines);
}

const struct engine_cl_info *engine_cl_get_info(const engine_cl *engine)
{
    return &engine->info;
}

const char *engine_cl_failure(const engine_cl *engine)
{
    return engine->failed ? engine->failure : NULL;
}

void engine_cl_inject_fault(engine_cl *engine, uint64_t after_launches)
{
    engine->fault_at = after_launches ? engine->launches + after_launches + 1 : 0;
}

size_t engine_cl_lower_priority(engine_cl *engine, int nice)
{
    if (!engine->platform_cpu_only)
        return 0;
    return host_threads_lower_priority(engine->runtime_threads, engine->nruntime_threads, nice);
}
