/* test_sched.c: the multi-device scheduler over several CPU-engine backends and fake failing ones:
 * same pixels as one engine alone, every device takes tiles, faults re-run elsewhere, fp64 work only
 * on fp64 devices, the selector honoured, fair sharing between requests, prompt cancellation. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "unit.h"
#include "devconf.h"
#include "devices.h"
#include "engine_cl.h"
#include "engine_cpu.h"
#include "err.h"
#include "sched.h"

#define NENGINES 3

static engine_cpu *engines[NENGINES];

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A fake device backend that fails every call, as a lost GPU would. */
static atomic_int fake_calls;
static int failing_render(void *backend, const struct render_spec *spec, const struct spec_rect *rect,
                          uint32_t *counts, float *smooth, const atomic_int *cancel,
                          struct engine_cpu_stats *stats, char *msg, size_t msglen)
{
    (void)backend, (void)spec, (void)rect, (void)counts, (void)smooth, (void)cancel, (void)stats;
    atomic_fetch_add(&fake_calls, 1);
    snprintf(msg, msglen, "CL_DEVICE_NOT_AVAILABLE (fake device lost)");
    return ERR_DEVICE;
}
static const struct device_ops failing_ops = {failing_render, NULL};

/* A CPU-engine backend that counts the fp64 specs it is given. */
static atomic_int fp64_calls;
static int counting_render(void *backend, const struct render_spec *spec, const struct spec_rect *rect,
                           uint32_t *counts, float *smooth, const atomic_int *cancel,
                           struct engine_cpu_stats *stats, char *msg, size_t msglen)
{
    if (spec->precision == SPEC_FP64)
        atomic_fetch_add(&fp64_calls, 1);
    return devices_cpu_ops.render(backend, spec, rect, counts, smooth, cancel, stats, msg, msglen);
}
static const struct device_ops counting_ops = {counting_render, NULL};

/* A CPU-type device starved of cycles: it holds each tile for up to 5 s (or until told to let go)
 * before computing it on the CPU engine that is its backend. */
static atomic_int starved_calls;
static int starved_render(void *backend, const struct render_spec *spec, const struct spec_rect *rect,
                          uint32_t *counts, float *smooth, const atomic_int *cancel,
                          struct engine_cpu_stats *stats, char *msg, size_t msglen)
{
    atomic_fetch_add(&starved_calls, 1);
    for (int ms = 0; ms < 5000; ms++) {
        struct timespec t = {0, 1000000};
        if (cancel && atomic_load(cancel))
            return ERR_CANCELLED;
        nanosleep(&t, NULL);
    }
    return devices_cpu_ops.render(backend, spec, rect, counts, smooth, cancel, stats, msg, msglen);
}
static const struct device_ops starved_ops = {starved_render, NULL};

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < NENGINES; i++)
        if (engine_cpu_new(&engines[i], 1) < 0)
            return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < NENGINES; i++)
        engine_cpu_free(engines[i]);
    return 0;
}

/* Appends a device to devs: a CPU-type device named `id` over `ops`/`backend`. */
static struct device *add_dev(struct devices *devs, const char *id, enum device_type type, bool fp64,
                              const struct device_ops *ops, void *backend)
{
    struct device d, *out = NULL;

    memset(&d, 0, sizeof(d));
    snprintf(d.id, sizeof(d.id), "%s", id);
    snprintf(d.name, sizeof(d.name), "test device %s", id);
    snprintf(d.engine, sizeof(d.engine), "%s", type == DEVICE_CPU ? "cpu" : "opencl");
    d.type = type;
    d.fp64 = fp64;
    d.compute_units = 1;
    d.enabled = true;
    d.weight = 1;
    d.fault_after = -1;
    d.ops = ops;
    d.backend = backend;
    assert_int_equal(devices_add(&out, devs, &d), 0);
    return out;
}

/* Appends the test's CPU engines as CPU-type devices "a", "b" and "c". */
static void add_cpu_engines(struct devices *devs)
{
    for (int i = 0; i < NENGINES; i++)
        add_dev(devs, (const char *[]){"a", "b", "c"}[i], DEVICE_CPU, true, &devices_cpu_ops, engines[i]);
}

static struct render_spec julia(uint32_t w, uint32_t h, uint32_t max_iter, enum spec_precision p)
{
    struct render_spec s;

    memset(&s, 0, sizeof(s));
    s.fractal = SPEC_JULIA;
    s.c_re = -0.8;
    s.c_im = 0.156;
    s.view_width = 3.0 * w / h;
    s.width = w;
    s.height = h;
    s.region = (struct spec_rect){0, 0, w, h};
    s.max_iter = max_iter;
    s.escape_radius = 2;
    s.precision = p;
    s.format = SPEC_RAW_F32;
    s.supersample = 1;
    return s;
}

/* Renders the spec's whole grid through the scheduler and compares it with engine 0 alone:
 * counts equal and smooth values bit-identical. Returns sched_compute's result. */
static int render_and_compare(sched *s, const struct render_spec *spec, struct engine_cpu_stats *st,
                              uint64_t *used)
{
    uint32_t gw = spec->width * spec->supersample, gh = spec->height * spec->supersample;
    size_t n = (size_t)gw * gh;
    struct spec_rect rect = {0, 0, gw, gh};
    uint32_t *c1 = calloc(n, sizeof(*c1)), *c2 = calloc(n, sizeof(*c2));
    float *f1 = calloc(n, sizeof(*f1)), *f2 = calloc(n, sizeof(*f2));
    struct engine_cpu_stats ref = {0, 0};
    struct sched_call call = {s, 0, ""};
    int err;

    assert_non_null(c1);
    assert_non_null(c2);
    assert_non_null(f1);
    assert_non_null(f2);
    assert_int_equal(engine_cpu_render(engines[0], spec, &rect, c1, f1, NULL, &ref), 0);
    err = sched_compute(&call, spec, &rect, c2, f2, NULL, st);
    if (err == 0) {
        for (size_t k = 0; k < n; k++)
            if (c1[k] != c2[k] || memcmp(&f1[k], &f2[k], sizeof(float)) != 0)
                fail_msg("sample %zu (x %zu, y %zu): engine %u %.9g, scheduler %u %.9g", k, k % gw, k / gw,
                         c1[k], f1[k], c2[k], f2[k]);
        assert_true(st->iterations == ref.iterations);
    }
    if (used)
        *used = call.devices_used;
    free(c1);
    free(c2);
    free(f1);
    free(f2);
    return err;
}

static void start(sched **s, struct devices *devs)
{
    struct sched_options o = SCHED_OPTIONS_INIT;
    char msg[256] = "";

    o.calibrate = false;
    if (sched_new(s, devs, &o, msg, sizeof(msg)) < 0)
        fail_msg("sched_new: %s", msg);
}

static void three_cpu_engines_give_the_single_engine_image(void **state)
{
    struct devices devs = {0};
    struct engine_cpu_stats st;
    sched *s = NULL;
    uint64_t used = 0;

    (void)state;
    add_cpu_engines(&devs);
    start(&s, &devs);
    {
        struct render_spec spec = julia(480, 320, 300, SPEC_FP32);
        assert_int_equal(render_and_compare(s, &spec, &st, &used), 0);
        assert_true(st.tiles > 1);
    }
    {
        struct render_spec spec = julia(333, 211, 500, SPEC_FP64);
        spec.supersample = 2;
        spec.width = 333 / 2;
        assert_int_equal(render_and_compare(s, &spec, &st, NULL), 0);
    }
    assert_true(used != 0);
    sched_free(s);
    devices_dispose(&devs);
}

static void every_device_takes_tiles_of_one_large_render(void **state)
{
    struct devices devs = {0};
    struct engine_cpu_stats st;
    sched *s = NULL;
    uint64_t used = 0;

    (void)state;
    add_cpu_engines(&devs);
    start(&s, &devs);
    {
        struct render_spec spec = julia(1024, 768, 200, SPEC_FP32);
        assert_int_equal(render_and_compare(s, &spec, &st, &used), 0);
    }
    for (size_t i = 0; i < devs.count; i++) {
        print_message("device %s: %llu tiles, %.1f ms busy\n", devs.list[i].id,
                      (unsigned long long)atomic_load(&devs.list[i].tiles_done), devices_busy_ms(&devs.list[i]));
        assert_true(atomic_load(&devs.list[i].tiles_done) > 0);
        assert_true(atomic_load(&devs.list[i].iterations_done) > 0);
        assert_true(atomic_load(&devs.list[i].busy_us) > 0);
    }
    assert_int_equal(used, 7);
    sched_free(s);
    devices_dispose(&devs);
}

static void injected_fault_mid_render_gives_the_same_image(void **state)
{
    struct devices devs = {0};
    struct engine_cpu_stats st;
    sched *s = NULL;

    (void)state;
    add_cpu_engines(&devs);
    /* Small tiles (16 rows), so device b surely reaches its third tile, wherever the threads run. */
    for (size_t i = 0; i < devs.count; i++)
        devs.list[i].max_tile_samples = 16 * 1024;
    devs.list[1].fault_after = 2;
    start(&s, &devs);
    {
        struct render_spec spec = julia(1024, 768, 200, SPEC_FP32);
        assert_int_equal(render_and_compare(s, &spec, &st, NULL), 0);
    }
    assert_true(atomic_load(&devs.list[1].failed));
    assert_non_null(strstr(devs.list[1].failed_reason, "fault injected after 2 tiles"));
    assert_int_equal(atomic_load(&devs.list[1].tiles_done), 2);
    assert_false(atomic_load(&devs.list[0].failed));
    assert_false(atomic_load(&devs.list[2].failed));
    /* The next render goes to the others alone, with the same pixels. */
    {
        struct render_spec spec = julia(300, 200, 100, SPEC_FP64);
        assert_int_equal(render_and_compare(s, &spec, &st, NULL), 0);
    }
    assert_int_equal(atomic_load(&devs.list[1].tiles_done), 2);
    sched_free(s);
    devices_dispose(&devs);
}

static void failing_backend_is_marked_failed_and_its_tile_rerun(void **state)
{
    struct devices devs = {0};
    struct engine_cpu_stats st;
    sched *s = NULL;
    uint64_t used = 0;

    (void)state;
    atomic_store(&fake_calls, 0);
    add_dev(&devs, "lost", DEVICE_GPU, true, &failing_ops, NULL);
    add_dev(&devs, "a", DEVICE_CPU, true, &devices_cpu_ops, engines[0]);
    start(&s, &devs);
    {
        struct render_spec spec = julia(640, 480, 200, SPEC_FP32);
        assert_int_equal(render_and_compare(s, &spec, &st, &used), 0);
    }
    assert_int_equal(atomic_load(&fake_calls), 1);
    assert_true(atomic_load(&devs.list[0].failed));
    assert_string_equal(devs.list[0].failed_reason, "CL_DEVICE_NOT_AVAILABLE (fake device lost)");
    assert_int_equal(used, 2);
    sched_free(s);
    devices_dispose(&devs);
}

static void no_device_left_is_a_device_error(void **state)
{
    struct devices devs = {0};
    struct render_spec spec = julia(200, 100, 50, SPEC_FP32);
    struct spec_rect rect = {0, 0, 200, 100};
    float *out = calloc(200 * 100, sizeof(*out));
    sched *s = NULL;
    struct sched_call call;

    (void)state;
    add_dev(&devs, "lost1", DEVICE_GPU, true, &failing_ops, NULL);
    add_dev(&devs, "lost2", DEVICE_GPU, true, &failing_ops, NULL);
    start(&s, &devs);
    call = (struct sched_call){s, 0, ""};
    assert_int_equal(sched_compute(&call, &spec, &rect, NULL, out, NULL, NULL), ERR_DEVICE);
    assert_non_null(strstr(call.msg, "fake device lost"));
    assert_true(atomic_load(&devs.list[0].failed) && atomic_load(&devs.list[1].failed));
    /* Once every device has failed, later requests are refused at once. */
    assert_int_equal(sched_compute(&call, &spec, &rect, NULL, out, NULL, NULL), ERR_DEVICE);
    assert_non_null(strstr(call.msg, "every device that could take this work has failed"));
    sched_free(s);
    devices_dispose(&devs);
    free(out);
}

static void fp64_work_never_goes_to_a_device_without_fp64(void **state)
{
    struct devices devs = {0};
    struct engine_cpu_stats st;
    sched *s = NULL;

    (void)state;
    atomic_store(&fp64_calls, 0);
    add_dev(&devs, "fp32only", DEVICE_CPU, false, &counting_ops, engines[0]);
    add_dev(&devs, "fp64", DEVICE_CPU, true, &devices_cpu_ops, engines[1]);
    start(&s, &devs);
    {
        struct render_spec spec = julia(800, 600, 150, SPEC_FP64);
        assert_int_equal(render_and_compare(s, &spec, &st, NULL), 0);
    }
    assert_int_equal(atomic_load(&fp64_calls), 0);
    assert_int_equal(atomic_load(&devs.list[0].tiles_done), 0);
    assert_true(atomic_load(&devs.list[1].tiles_done) > 0);
    /* fp32 work goes to both. */
    {
        struct render_spec spec = julia(800, 600, 150, SPEC_FP32);
        assert_int_equal(render_and_compare(s, &spec, &st, NULL), 0);
    }
    assert_true(atomic_load(&devs.list[0].tiles_done) > 0);
    /* fp64 work that only the fp32 device may take is refused. */
    {
        struct render_spec spec = julia(80, 60, 150, SPEC_FP64);
        struct spec_rect rect = {0, 0, 80, 60};
        float out[80 * 60];
        struct sched_call call = {s, 0, ""};
        snprintf(spec.device, sizeof(spec.device), "fp32only");
        assert_int_equal(sched_compute(&call, &spec, &rect, NULL, out, NULL, NULL), ERR_PRECONDITION);
        assert_string_equal(call.msg, "no enabled, working fp64 device matches device \"fp32only\"");
    }
    assert_int_equal(atomic_load(&fp64_calls), 0);
    sched_free(s);
    devices_dispose(&devs);
}

static void selector_restricts_devices(void **state)
{
    struct devices devs = {0};
    struct engine_cpu_stats st;
    sched *s = NULL;
    uint64_t used = 0;

    (void)state;
    add_cpu_engines(&devs);
    start(&s, &devs);
    {
        struct render_spec spec = julia(640, 480, 100, SPEC_FP32);
        snprintf(spec.device, sizeof(spec.device), "b");
        assert_int_equal(render_and_compare(s, &spec, &st, &used), 0);
        assert_int_equal(used, 2);
    }
    assert_int_equal(atomic_load(&devs.list[0].tiles_done), 0);
    assert_true(atomic_load(&devs.list[1].tiles_done) > 0);
    assert_int_equal(atomic_load(&devs.list[2].tiles_done), 0);
    {
        struct render_spec spec = julia(64, 48, 100, SPEC_FP32);
        struct spec_rect rect = {0, 0, 64, 48};
        float out[64 * 48];
        struct sched_call call = {s, 0, ""};
        snprintf(spec.device, sizeof(spec.device), "gpu");
        assert_int_equal(sched_compute(&call, &spec, &rect, NULL, out, NULL, NULL), ERR_PRECONDITION);
        assert_string_equal(call.msg, "no enabled, working device matches device \"gpu\"");
    }
    sched_free(s);
    devices_dispose(&devs);
}

struct bg_render {
    sched *s;
    struct render_spec spec;
    float *out;
    atomic_int cancel;
    atomic_int done;
    int err;
    double t_done;
};

static void *bg_main(void *arg)
{
    struct bg_render *b = arg;
    struct spec_rect rect = {0, 0, b->spec.width, b->spec.height};
    struct sched_call call = {b->s, 0, ""};

    b->err = sched_compute(&call, &b->spec, &rect, NULL, b->out, &b->cancel, NULL);
    b->t_done = now_ms();
    atomic_store(&b->done, 1);
    return NULL;
}

static void cancellation_is_prompt(void **state)
{
    struct devices devs = {0};
    struct bg_render b;
    pthread_t t;
    sched *s = NULL;
    double t_cancel;

    engine_cpu *brute[2] = {NULL, NULL};

    (void)state;
    /* Brute-force engines: the CPU engine's interior shortcuts (engine_cpu.h) would finish the
     * view below at once. */
    setenv("FRACTALD_CPU_SHORTCUTS", "0", 1);
    assert_int_equal(engine_cpu_new(&brute[0], 1), 0);
    assert_int_equal(engine_cpu_new(&brute[1], 1), 0);
    unsetenv("FRACTALD_CPU_SHORTCUTS");
    add_dev(&devs, "a", DEVICE_CPU, true, &devices_cpu_ops, brute[0]);
    add_dev(&devs, "b", DEVICE_CPU, true, &devices_cpu_ops, brute[1]);
    start(&s, &devs);
    memset(&b, 0, sizeof(b));
    b.s = s;
    /* Inside the Mandelbrot set's main cardioid at a million iterations: minutes of work if
     * nothing stopped it. */
    b.spec = julia(512, 512, 1000000, SPEC_FP32);
    b.spec.fractal = SPEC_MANDELBROT;
    b.spec.center_re = -0.2;
    b.spec.view_width = 0.4;
    b.out = calloc((size_t)512 * 512, sizeof(float));
    atomic_init(&b.cancel, 0);
    atomic_init(&b.done, 0);
    assert_int_equal(pthread_create(&t, NULL, bg_main, &b), 0);
    nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
    assert_int_equal(atomic_load(&b.done), 0);
    t_cancel = now_ms();
    atomic_store(&b.cancel, 1);
    pthread_join(t, NULL);
    print_message("cancelled after %.1f ms\n", b.t_done - t_cancel);
    assert_int_equal(b.err, ERR_CANCELLED);
    assert_true(b.t_done - t_cancel < 250);
    /* The devices let go: a new render goes through at once. */
    {
        struct engine_cpu_stats st;
        struct render_spec spec = julia(200, 100, 100, SPEC_FP32);
        assert_int_equal(render_and_compare(s, &spec, &st, NULL), 0);
    }
    sched_free(s);
    devices_dispose(&devs);
    engine_cpu_free(brute[0]);
    engine_cpu_free(brute[1]);
    free(b.out);
}

static void concurrent_requests_share_a_device(void **state)
{
    struct devices devs = {0};
    struct bg_render big, small;
    pthread_t tb, ts;
    sched *s = NULL;

    (void)state;
    add_dev(&devs, "a", DEVICE_CPU, true, &devices_cpu_ops, engines[0]);
    start(&s, &devs);
    memset(&big, 0, sizeof(big));
    memset(&small, 0, sizeof(small));
    big.s = small.s = s;
    /* The big one has dozens of tiles; the small one arrives after it started and must not wait
     * for all of them (round-robin between requests). */
    big.spec = julia(2048, 1024, 2000, SPEC_FP32);
    big.spec.view_width = 1.0;
    small.spec = julia(64, 64, 100, SPEC_FP32);
    big.out = calloc((size_t)2048 * 1024, sizeof(float));
    small.out = calloc((size_t)64 * 64, sizeof(float));
    atomic_init(&big.cancel, 0);
    atomic_init(&small.cancel, 0);
    assert_int_equal(pthread_create(&tb, NULL, bg_main, &big), 0);
    nanosleep(&(struct timespec){0, 30 * 1000000L}, NULL);
    assert_int_equal(pthread_create(&ts, NULL, bg_main, &small), 0);
    pthread_join(ts, NULL);
    assert_int_equal(small.err, 0);
    assert_int_equal(atomic_load(&big.done), 0);
    atomic_store(&big.cancel, 1);
    pthread_join(tb, NULL);
    assert_int_equal(big.err, ERR_CANCELLED);
    sched_free(s);
    devices_dispose(&devs);
    free(big.out);
    free(small.out);
}

static void calibration_is_short_and_measures_each_device(void **state)
{
    struct devices devs = {0};
    struct sched_options o = SCHED_OPTIONS_INIT;
    char msg[256] = "";
    sched *s = NULL;
    double t0;

    (void)state;
    add_dev(&devs, "a", DEVICE_CPU, true, &devices_cpu_ops, engines[0]);
    add_dev(&devs, "b", DEVICE_CPU, true, &devices_cpu_ops, engines[1]);
    add_dev(&devs, "lost", DEVICE_GPU, true, &failing_ops, NULL);
    t0 = now_ms();
    assert_int_equal(sched_new(&s, &devs, &o, msg, sizeof(msg)), 0);
    print_message("calibration took %.1f ms: a %.3f, b %.3f Giter/s\n", now_ms() - t0, devs.list[0].giter_per_s,
                  devs.list[1].giter_per_s);
    assert_true(now_ms() - t0 < 500);
    assert_true(devs.list[0].giter_per_s > 0);
    assert_true(devs.list[1].giter_per_s > 0);
    assert_true(atomic_load(&devs.list[2].failed));
    assert_string_equal(devs.list[2].failed_reason, "calibration: CL_DEVICE_NOT_AVAILABLE (fake device lost)");
    sched_free(s);
    devices_dispose(&devs);
}

/* Two CPU-type devices measured at different speeds share the host's cores: the slower one runs on
 * spare cycles, and a tile it holds while the request has nothing else left is taken over by the
 * faster device, so the render neither waits for it nor changes. */
static void a_starved_spare_cycles_device_never_holds_a_render_up(void **state)
{
    struct devices devs = {0};
    struct sched_options o = SCHED_OPTIONS_INIT;
    struct engine_cpu_stats st;
    char msg[256] = "";
    sched *s = NULL;
    double t0;

    (void)state;
    add_dev(&devs, "fast", DEVICE_CPU, true, &devices_cpu_ops, engines[0])->giter_per_s = 2.0;
    add_dev(&devs, "starved", DEVICE_CPU, true, &starved_ops, engines[1])->giter_per_s = 1.0;
    add_dev(&devs, "gpu", DEVICE_GPU, true, &devices_cpu_ops, engines[2])->giter_per_s = 0.5;
    o.calibrate = false;
    assert_int_equal(o.colocated_nice, SCHED_DEFAULT_COLOCATED_NICE);
    assert_int_equal(sched_new(&s, &devs, &o, msg, sizeof(msg)), 0);
    assert_false(devs.list[0].spare_cycles);
    assert_true(devs.list[1].spare_cycles);
    assert_false(devs.list[2].spare_cycles);     /* not the host's cores */
    atomic_store(&starved_calls, 0);
    for (int k = 0; k < 3; k++) {
        struct render_spec spec = julia(k == 0 ? 256 : 640, k == 0 ? 256 : 480, 300, k == 2 ? SPEC_FP64 : SPEC_FP32);
        t0 = now_ms();
        assert_int_equal(render_and_compare(s, &spec, &st, NULL), 0);
        print_message("%ux%u: %.1f ms\n", spec.width, spec.height, now_ms() - t0);
        assert_true(now_ms() - t0 < 2500);
    }
    assert_true(atomic_load(&starved_calls) > 0);
    assert_int_equal(atomic_load(&devs.list[1].tiles_done), 0);
    assert_false(atomic_load(&devs.list[1].failed));
    sched_free(s);

    /* colocated_nice = 0: equal priorities, nobody is a spare-cycles device. */
    o.colocated_nice = 0;
    assert_int_equal(sched_new(&s, &devs, &o, msg, sizeof(msg)), 0);
    assert_false(devs.list[1].spare_cycles);
    sched_free(s);
    devices_dispose(&devs);
}

static void no_usable_device_is_refused_at_start(void **state)
{
    struct devices devs = {0};
    char msg[256] = "";
    sched *s = NULL;

    (void)state;
    add_dev(&devs, "a", DEVICE_CPU, true, &devices_cpu_ops, engines[0]);
    devs.list[0].enabled = false;
    assert_int_equal(sched_new(&s, &devs, NULL, msg, sizeof(msg)), ERR_PRECONDITION);
    assert_null(s);
    assert_non_null(strstr(msg, "no usable device"));
    devices_dispose(&devs);
}

int test_sched_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(three_cpu_engines_give_the_single_engine_image),
        cmocka_unit_test(every_device_takes_tiles_of_one_large_render),
        cmocka_unit_test(injected_fault_mid_render_gives_the_same_image),
        cmocka_unit_test(failing_backend_is_marked_failed_and_its_tile_rerun),
        cmocka_unit_test(no_device_left_is_a_device_error),
        cmocka_unit_test(fp64_work_never_goes_to_a_device_without_fp64),
        cmocka_unit_test(selector_restricts_devices),
        cmocka_unit_test(cancellation_is_prompt),
        cmocka_unit_test(concurrent_requests_share_a_device),
        cmocka_unit_test(calibration_is_short_and_measures_each_device),
        cmocka_unit_test(no_usable_device_is_refused_at_start),
        cmocka_unit_test(a_starved_spare_cycles_device_never_holds_a_render_up),
    };
    return cmocka_run_group_tests_name("sched", tests, setup, teardown);
}

/* Real OpenCL devices through PoCL. These groups run as their own ctest entries, because the
 * environment that chooses the devices must be set before the ICD loader starts:
 *   sched_pocl   POCL_DEVICES="pthread pthread": two PoCL devices plus the CPU engine;
 *   sched_noicd  OCL_ICD_VENDORS pointed at an empty directory: no OpenCL platform at all.
 * FRACTALD_TEST_CACHE_DIR (set by ctest) keeps PoCL's compiled programs between runs. */

static struct devices cl_devs;
static struct devconf cl_conf;

static int cl_setup(void **state)
{
    const char *cache = getenv("FRACTALD_TEST_CACHE_DIR");
    char msg[512] = "";

    (void)state;
    if (setup(state) < 0)
        return -1;
    devconf_defaults(&cl_conf);
    snprintf(cl_conf.cache_dir, sizeof(cl_conf.cache_dir), "%s", cache ? cache : "");
    if (devconf_discover(&cl_devs, &cl_conf, engines[0], msg, sizeof(msg)) < 0) {
        fprintf(stderr, "devconf_discover: %s\n", msg);
        return -1;
    }
    return 0;
}

static int cl_teardown(void **state)
{
    devices_dispose(&cl_devs);
    return teardown(state);
}

static size_t opencl_count(const struct devices *devs)
{
    size_t n = 0;

    for (size_t i = 0; i < devs->count; i++)
        n += !strcmp(devs->list[i].engine, "opencl") && devices_usable(&devs->list[i]);
    return n;
}

/* Renders spec through the scheduler and compares with the CPU engine: escape counts must agree on
 * at least 99.9% of samples (the OpenCL engine's own tests state its tolerance; here the point is
 * that every tile landed in the right place, which any misplaced strip would break wholesale). */
static void render_close_to_cpu(sched *s, const struct render_spec *spec, uint64_t *used)
{
    size_t n = (size_t)spec->width * spec->height, same = 0;
    struct spec_rect rect = {0, 0, spec->width, spec->height};
    uint32_t *c1 = calloc(n, sizeof(*c1)), *c2 = calloc(n, sizeof(*c2));
    struct engine_cpu_stats st;
    struct sched_call call = {s, 0, ""};
    int err;

    assert_non_null(c1);
    assert_non_null(c2);
    assert_int_equal(engine_cpu_render(engines[1], spec, &rect, c1, NULL, NULL, &st), 0);
    err = sched_compute(&call, spec, &rect, c2, NULL, NULL, &st);
    if (err != 0)
        fail_msg("sched_compute: %d %s", err, call.msg);
    for (size_t k = 0; k < n; k++)
        same += c1[k] == c2[k];
    print_message("%zu of %zu escape counts equal to the CPU engine's, %u tiles\n", same, n, st.tiles);
    assert_true(same >= n - n / 1000);
    *used = call.devices_used;
    free(c1);
    free(c2);
}

static void two_pocl_devices_and_the_cpu_engine_share_one_render(void **state)
{
    struct sched_options o = SCHED_OPTIONS_INIT;
    /* Equal priorities: with the default, the slower PoCL devices run only on cycles the CPU
     * engine leaves, and on a busy host may finish no tile of a render (their tiles are taken
     * over); what is tested here is that tiles of every device land in the right place. */
    o.colocated_nice = 0;
    struct render_spec spec = julia(1600, 1200, 400, SPEC_FP64);
    char msg[256] = "";
    uint64_t used = 0;
    sched *s = NULL;

    (void)state;
    devices_print(&cl_devs);
    assert_true(opencl_count(&cl_devs) >= 2);
    assert_true(devices_usable(&cl_devs.list[0]));
    assert_int_equal(sched_new(&s, &cl_devs, &o, msg, sizeof(msg)), 0);
    render_close_to_cpu(s, &spec, &used);
    for (size_t i = 0; i < cl_devs.count; i++) {
        struct device *d = &cl_devs.list[i];
        print_message("%s: %.2f Giter/s calibrated, %llu tiles, %.1f ms busy\n", d->id, d->giter_per_s,
                      (unsigned long long)atomic_load(&d->tiles_done), devices_busy_ms(d));
        if (!devices_usable(d))
            continue;
        assert_true(d->giter_per_s > 0);
        assert_true(atomic_load(&d->tiles_done) > 0);
        assert_true(i >= 64 || (used & ((uint64_t)1 << i)));
    }
    sched_free(s);
}

static void opencl_fault_mid_render_is_rerun_elsewhere(void **state)
{
    struct sched_options o = SCHED_OPTIONS_INIT;
    /* Tall enough that every device takes several strips, whatever the timing: the exact
     * shortcuts make each strip quick, and the victim must reach its failing launch. */
    struct render_spec spec = julia(1600, 3600, 400, SPEC_FP64);
    char msg[256] = "";
    uint64_t used = 0;
    sched *s = NULL;
    struct device *victim = NULL;

    (void)state;
    for (size_t i = 0; i < cl_devs.count && !victim; i++)
        if (!strcmp(cl_devs.list[i].engine, "opencl") && devices_usable(&cl_devs.list[i]))
            victim = &cl_devs.list[i];
    assert_non_null(victim);
    o.calibrate = false;
    /* At normal priority: a CPU-type device lowered to nice 19 beside the (AVX-512) CPU engine may
     * get a single strip of the whole render, and never reach its failing second launch. */
    o.colocated_nice = 0;
    /* The engine's own hook: its launches after the first fail as a lost device's would, through
     * the real OpenCL error path. */
    engine_cl_inject_fault(victim->backend, 1);
    assert_int_equal(sched_new(&s, &cl_devs, &o, msg, sizeof(msg)), 0);
    render_close_to_cpu(s, &spec, &used);
    print_message("%s: %s\n", victim->id, victim->failed_reason);
    assert_true(atomic_load(&victim->failed));
    assert_true(victim->failed_reason[0] != '\0');
    sched_free(s);
}

static void no_icd_renders_on_the_cpu_engine(void **state)
{
    struct render_spec spec = julia(400, 300, 200, SPEC_FP32);
    struct engine_cpu_stats st;
    char msg[256] = "";
    uint64_t used = 0;
    sched *s = NULL;

    (void)state;
    devices_print(&cl_devs);
    assert_int_equal(cl_devs.count, 1);
    assert_string_equal(cl_devs.list[0].id, "cpu");
    assert_int_equal(sched_new(&s, &cl_devs, NULL, msg, sizeof(msg)), 0);
    assert_int_equal(render_and_compare(s, &spec, &st, &used), 0);
    assert_int_equal(used, 1);
    sched_free(s);
}

/* Both groups need their environment (see above); run without it (unit_tests alone), they skip. */
int test_sched_pocl_run(void)
{
    if (!getenv("POCL_DEVICES")) {
        printf("[  SKIPPED ] sched_pocl: needs POCL_DEVICES (ctest unit.sched_pocl sets it)\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(two_pocl_devices_and_the_cpu_engine_share_one_render),
        cmocka_unit_test(opencl_fault_mid_render_is_rerun_elsewhere),
    };
    return cmocka_run_group_tests_name("sched_pocl", tests, cl_setup, cl_teardown);
}

int test_sched_noicd_run(void)
{
    if (!getenv("OCL_ICD_VENDORS")) {
        printf("[  SKIPPED ] sched_noicd: needs OCL_ICD_VENDORS (ctest unit.sched_noicd sets it)\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(no_icd_renders_on_the_cpu_engine),
    };
    return cmocka_run_group_tests_name("sched_noicd", tests, cl_setup, cl_teardown);
}
