/* render.cl: the OpenCL kernels of server/engines/engine_cl.c around the escape-time function of
 * escape.h: render_vector (explicit vectors, lane refill; CPU-type devices) and render_scalar
 * (one orbit at a time per work-item; GPU-type devices, and one sample per work-item as NAIVE). */

/* No FMA contraction anywhere: escape counts must equal the CPU engine's (escape.h). */
#pragma OPENCL FP_CONTRACT OFF

/* The build step that embeds this file into the server (kernels/embed.cmake) replaces the next
 * line with the text of escape.h, so nothing is read from disk at run time. */
#include "escape.h"

/*
 * The host builds one program per precision with these options:
 *   -DFRACTALD_F64            double (else float)
 *   -DFRACTALD_VECTOR         define render_vector (else render_scalar)
 *   -DVW=n -DVG=n             vector width (2, 4, 8, 16) and vectors per work-item (VECTOR only)
 *   -DRK=n                    iterations between escape checks (VECTOR only)
 *   -DFRACTALD_SHORTCUTS      exact interior shortcuts (below); NAIVE is built without them
 *
 * Both kernels take the same arguments, so the host drives them alike. They are resumable: a
 * launch spends at most `budget` of work per work-item (blocks of RK iterations for VECTOR,
 * iterations for SCALAR) and leaves every unfinished orbit in the state buffers; the next launch
 * (init == 0) continues it. ctl[0] is the next unclaimed sample (VECTOR), ctl[1] counts the
 * work-items that have finished all their samples: the host is done when it equals nwork.
 * Samples are numbered row-major over the rectangle; counts/zout are indexed by that number.
 * zout[2p], zout[2p+1] receive the final z of sample p (FLAG_SMOOTH): the host computes the
 * smooth value from it with server/engines/smooth.h, as the CPU engine does, so smooth values are
 * bit-identical across engines (a device's log/log2 may differ from libm's by an ulp). An
 * interior sample (count max_iter) gets z = 0 there in every kernel: the host gives it -1
 * whatever its z.
 *
 * Interior shortcuts (FRACTALD_SHORTCUTS), each exact, i.e. the counts are brute force's:
 * - cycle detection (Brent): every so often a lane saves its z; a later z exactly equal to it,
 *   in the working precision, means the orbit is periodic from there on, every z of the period
 *   was checked inside R, so it never escapes: count max_iter. Equality is exact: z values
 *   that compare equal (+0 == -0 included) have equal squares, so their orbits pass the same
 *   checks. NaN never compares equal. The save times follow Brent's doubling, per lane, so any
 *   period is found once the saves are past the orbit's transient and the window exceeds the
 *   period;
 * - FLAG_MAIN (Mandelbrot with R >= 2): c well inside the main cardioid or the period-2 bulb,
 *   where the orbit of 0 converges to an attracting fixed point or 2-cycle of multiplier
 *   |lambda| <= 0.999, stays in the filled Julia set (inside |z| < 2) and never escapes R >= 2;
 *   the margin to |lambda| = 1 is many orders of magnitude above the rounding of the test and
 *   of the orbit, so no c for which brute force escapes is taken (near the cusp and the
 *   bulb's root, where convergence slows down without bound, the test declines and the orbit
 *   runs).
 */

#ifdef FRACTALD_F64
#define REAL double
#define MASKE long
#define MASKE_MIN LONG_MIN
#define SFX f64
#define LIT(x) x
#else
#define REAL float
#define MASKE int
#define MASKE_MIN INT_MIN
#define SFX f32
#define LIT(x) x##f
#endif

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define ESC(fn) CAT(CAT(esc_, fn), CAT(_, SFX))
#define VIEW CAT(esc_view_, SFX)

/* Marks a lane or work-item with no sample. */
#define NO_SAMPLE 0xffffffffu

/* flags bits */
#define FLAG_CAREFUL 1u   /* some c may bring an escaped orbit back inside R: check every step */
#define FLAG_SMOOTH 2u    /* write the final z of every sample to zout */
#define FLAG_MAIN 4u      /* Mandelbrot with R >= 2: test c for the cardioid and the bulb */

/* Squared multiplier bound of the main-component test: |lambda| <= 0.999. */
#define MAIN_L2 LIT(0.998)

/* Nonzero when the Mandelbrot c = x + iy lies in the main cardioid with multiplier
 * |1 - sqrt(1 - 4c)|^2 <= MAIN_L2 or in the period-2 bulb with |4(c + 1)|^2 <= MAIN_L2 (see the
 * top: its orbit of 0 never escapes R >= 2). |1 - w|^2 = 1 - 2 Re w + |w|^2 with w = sqrt(1 - 4c),
 * Re w = sqrt((|1 - 4c| + Re(1 - 4c)) / 2). */
static inline int in_main_components(REAL x, REAL y)
{
    REAL u = LIT(1.0) - LIT(4.0) * x, v = LIT(4.0) * y, bx = x + LIT(1.0);
    REAL m = sqrt(u * u + v * v), re = sqrt((m + u) * LIT(0.5));

    return (LIT(1.0) + m) - (re + re) <= MAIN_L2 ||
           LIT(16.0) * (bx * bx + y * y) <= MAIN_L2;
}

/* Iterations between the cycle checks of render_scalar (each check: two compares). */
#define CYC_STEP 16u

#define KERNEL_ARGS                                                                            \
    int fractal, REAL center_re, REAL center_im, REAL s, REAL half_w, REAL half_h, REAL c_re,   \
        REAL c_im, REAL r2max, REAL log_r, uint max_iter, uint rect_x, uint rect_y,             \
        uint rect_w, uint nsamples, uint nwork, uint budget, uint init, uint flags,             \
        global REAL *st_zr, global REAL *st_zi, global uint *st_n, global uint *st_pos,         \
        global uint *st_wi, volatile global uint *ctl, global uint *counts, global REAL *zout

/* The per-render constants, from the host's values (already rounded to REAL there, exactly as
 * esc_view_init computes them on the CPU: the division in the mapping never runs here, so the
 * device's division accuracy cannot change a coordinate). */
#define VIEW_FILL(v)                                                                           \
    do {                                                                                       \
        (v).center_re = center_re;                                                             \
        (v).center_im = center_im;                                                             \
        (v).s = s;                                                                             \
        (v).half_w = half_w;                                                                   \
        (v).half_h = half_h;                                                                   \
        (v).c_re = c_re;                                                                       \
        (v).c_im = c_im;                                                                       \
        (v).r2max = r2max;                                                                     \
        (v).log_r = log_r;                                                                     \
        (v).max_iter = max_iter;                                                               \
        (v).fractal = fractal;                                                                 \
    } while (0)

/* z_0 and c of sample p of the rectangle. */
static inline void sample_start(const VIEW *v, uint p, uint rect_x, uint rect_y, uint rect_w,
                                REAL *zr, REAL *zi, REAL *cr, REAL *ci)
{
    REAL x = ESC(x)(v, rect_x + p % rect_w), y = ESC(y)(v, rect_y + p / rect_w);

    if (v->fractal == ESC_MANDELBROT) {
        *zr = LIT(0.0);
        *zi = LIT(0.0);
        *cr = x;
        *ci = y;
    } else {
        *zr = x;
        *zi = y;
        *cr = v->c_re;
        *ci = v->c_im;
    }
}

#ifndef FRACTALD_VECTOR

/* esc_orbit with cycle detection (FRACTALD_SHORTCUTS): continues the orbit at z_n up to its
 * escape or lim, checking every iteration as esc_orbit does, and every CYC_STEP iterations
 * compares z with the one saved in *sr, *si (saved when *age, the checks so far, reaches a power
 * of 2). Returns the escape count, lim when lim came first, or max_iter (z = 0) for a cycle;
 * *ran gets the iterations executed. */
static inline uint orbit_cyc(REAL *zr, REAL *zi, REAL cr, REAL ci, REAL r2max, uint n, uint lim,
                             uint max_iter, REAL *sr, REAL *si, uint *age, uint *ran)
{
    REAL x = *zr, y = *zi, x2, y2, t;
    const uint n0 = n;

    while (n < lim) {
        uint end = lim - n > CYC_STEP ? n + CYC_STEP : lim;

        for (; n < end; n++) {
            x2 = x * x;
            y2 = y * y;
            if (ESC_ESCAPED(x2, y2, r2max))
                goto out;
            ESC_STEP(x, y, cr, ci, x2, y2, t);
        }
        if (x == *sr && y == *si) {
            *ran = n - n0;
            *zr = *zi = LIT(0.0);
            return max_iter;
        }
        if ((++*age & (*age - 1)) == 0) {
            *sr = x;
            *si = y;
        }
    }
out:
    *ran = n - n0;
    *zr = x;
    *zi = y;
    return n;
}

/*
 * render_scalar: work-item w owns samples w, w + nwork, w + 2*nwork, ... (neighbouring
 * work-items take neighbouring samples, so a GPU's loads and stores coalesce) and runs their
 * orbits one after another with escape.h's own esc_orbit, checking every iteration (with the
 * shortcuts: orbit_cyc, and the main-component test for FLAG_MAIN). With nwork == nsamples and
 * no shortcuts it is the NAIVE kernel: one sample per work-item, brute force.
 * State per work-item: st_pos = current sample (>= nsamples once finished), st_n and st_zr/zi =
 * its orbit so far.
 */
kernel void render_scalar(KERNEL_ARGS)
{
    const uint w = get_global_id(0);
    VIEW v;
    uint idx, n, left = budget;
    REAL zr, zi, cr, ci;
#ifdef FRACTALD_SHORTCUTS
    /* The cycle state starts afresh with each launch and each sample. */
    REAL sr = NAN, si = NAN;
    uint age = 0;
#endif

    if (w >= nwork)
        return;
    VIEW_FILL(v);
    if (init) {
        idx = w;
        n = 0;
    } else {
        idx = st_pos[w];
        if (idx >= nsamples)
            return;
        n = st_n[w];
    }
    if (idx >= nsamples) {
        st_pos[w] = idx;
        atomic_inc(&ctl[1]);
        return;
    }
    sample_start(&v, idx, rect_x, rect_y, rect_w, &zr, &zi, &cr, &ci);
    if (!init) {
        zr = st_zr[w];
        zi = st_zi[w];
    }
    for (;;) {
        uint lim = max_iter - n > left ? n + left : max_iter;
#ifdef FRACTALD_SHORTCUTS
        uint used, m;

        if (n == 0 && (flags & FLAG_MAIN) && in_main_components(cr, ci)) {
            m = max_iter;
            used = 0;
        } else {
            m = orbit_cyc(&zr, &zi, cr, ci, r2max, n, lim, max_iter, &sr, &si, &age, &used);
        }
#else
        uint m = ESC(orbit)(&zr, &zi, cr, ci, r2max, n, lim);
        uint used = m - n;
#endif

        if (m == lim && m < max_iter) {
            /* Budget spent inside this orbit: z_m is not checked yet, the next launch does. */
            n = m;
            break;
        }
        counts[idx] = m;
        if (flags & FLAG_SMOOTH) {
            zout[2 * (size_t)idx] = m < max_iter ? zr : LIT(0.0);
            zout[2 * (size_t)idx + 1] = m < max_iter ? zi : LIT(0.0);
        }
        idx += nwork;
        if (idx >= nsamples) {
            st_pos[w] = idx;
            atomic_inc(&ctl[1]);
            return;
        }
        sample_start(&v, idx, rect_x, rect_y, rect_w, &zr, &zi, &cr, &ci);
        n = 0;
#ifdef FRACTALD_SHORTCUTS
        sr = si = NAN;
        age = 0;
#endif
        /* A sample costs at least its one escape check, so a launch of quickly escaping
         * samples still ends. */
        used += 1;
        if (used >= left)
            break;
        left -= used;
    }
    st_pos[w] = idx;
    st_n[w] = n;
    st_zr[w] = zr;
    st_zi[w] = zi;
}

#else /* FRACTALD_VECTOR */

#define VREAL CAT(REAL, VW)
#define VMASK CAT(MASKE, VW)
#define VLOAD CAT(vload, VW)
#define VSTORE CAT(vstore, VW)
#define L (VW * VG)

/* Samples claimed from ctl[0] at a time: CHUNK_MAX (each claim is an atomic on a line all
 * work-items share, and a division to find the sample's row) when every work-item still gets
 * CHUNK_SHARE claims or more, else CHUNK_MIN, so that small rectangles spread over every
 * work-item. */
#define CHUNK_MIN 16u
#define CHUNK_MAX 256u
#define CHUNK_SHARE 8u

#if RK % 8 != 0
#error "RK must be a multiple of 8 (first_out counts in segments of 8 steps)"
#endif

/* Bit e of LANE_MASK(m) is set when lane e of the mask m is: an AND and an OR-fold of the
 * halves, no branch (PoCL 3.1 compiles any() to a chain of branches, one per pair of lanes). */
#if VW == 2
#define LANE_BITS ((VMASK)(1, 2))
#elif VW == 4
#define LANE_BITS ((VMASK)(1, 2, 4, 8))
#elif VW == 8
#define LANE_BITS ((VMASK)(1, 2, 4, 8, 16, 32, 64, 128))
#else
#define LANE_BITS                                                                              \
    ((VMASK)(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768))
#endif
#define LANE_MASK(m) fold_or((m) & LANE_BITS)

/* The OR of all lanes of m. */
static inline uint fold_or(VMASK m)
{
#if VW == 16
    CAT(MASKE, 8) m8 = m.lo | m.hi;
#elif VW == 8
    CAT(MASKE, 8) m8 = m;
#endif
#if VW >= 8
    CAT(MASKE, 4) m4 = m8.lo | m8.hi;
#elif VW == 4
    CAT(MASKE, 4) m4 = m;
#endif
#if VW >= 4
    CAT(MASKE, 2) m2 = m4.lo | m4.hi;
#else
    CAT(MASKE, 2) m2 = m;
#endif
    return (uint)(m2.x | m2.y);
}

/* The lanes of one work-item, in private memory where a lane can be indexed at run time; the
 * hot loop works on vector copies in registers and comes back here only to settle and refill. */
typedef struct {
    REAL zr[L], zi[L], cr[L], ci[L];
    uint pos[L];                      /* sample of each lane, NO_SAMPLE when parked */
    ulong start[L], due[L];           /* block clock when the orbit had n = 0 / n = max_iter */
    uint cur, cur_end;                /* the claimed chunk of samples not yet in a lane */
    uint col, row;                    /* rectangle coordinates of sample cur */
    uint exhausted, alive;
#ifdef FRACTALD_SHORTCUTS
    /* Cycle state: the saved z (NaN equals nothing) and the checks since the sample started
     * or the launch did (AGE_NEVER for a parked lane). In memory, not in registers: kept live
     * across the unrolled block, they made PoCL spill the orbits' z (B fp32 2x slower). */
    REAL sr[L], si[L];
    MASKE age[L];
#endif
} lanes;

/* Blocks between two cycle checks (a lane's age counts its checks), and the steps of the last
 * block compared with the saved z besides its end. */
#define CYC_BLOCKS 8u
#define CYC_BACK 8

/* An age that reaches no power of 2 within any launch: a parked lane (z = c = 0, a cycle) is
 * never saved, so never found cycling. */
#define AGE_NEVER (MASKE_MIN + 1)

/* Gives lane l the next sample: from the work-item's chunk, claiming a new chunk of `chunk`
 * samples from ctl[0] when it is used up; parks the lane (z = c = 0 never escapes) once every
 * sample is claimed. Inlined: a call would make the compiler save every vector register around
 * it. */
static inline __attribute__((always_inline)) void
refill(lanes *ln, uint l, ulong clock, const VIEW *v, uint rect_x, uint rect_y, uint rect_w,
       uint nsamples, uint chunk, uint flags, volatile global uint *ctl)
{
    if (ln->cur == ln->cur_end && !ln->exhausted) {
        uint c0 = atomic_add(&ctl[0], chunk);
        if (c0 < nsamples) {
            ln->cur = c0;
            ln->cur_end = nsamples - c0 > chunk ? c0 + chunk : nsamples;
            ln->col = c0 % rect_w;
            ln->row = c0 / rect_w;
        } else {
            ln->exhausted = 1;
        }
    }
    if (ln->cur < ln->cur_end) {
        uint p = ln->cur++;
        REAL x = ESC(x)(v, rect_x + ln->col), y = ESC(y)(v, rect_y + ln->row);

        if (++ln->col == rect_w) {
            ln->col = 0;
            ln->row++;
        }
        if (v->fractal == ESC_MANDELBROT) {
            ln->zr[l] = ln->zi[l] = LIT(0.0);
            ln->cr[l] = x;
            ln->ci[l] = y;
        } else {
            ln->zr[l] = x;
            ln->zi[l] = y;
            ln->cr[l] = v->c_re;
            ln->ci[l] = v->c_im;
        }
        ln->pos[l] = p;
        ln->start[l] = clock;
        ln->due[l] = clock + v->max_iter;
        ln->alive++;
#ifdef FRACTALD_SHORTCUTS
        /* Interior by the main-component test: the lane holds it for one block as if its n had
         * reached max_iter (due now), so that block's settle writes max_iter and z = 0. (Taking
         * the next sample here instead, a loop, made PoCL spill the block's z: B 2x slower.) */
        if ((flags & FLAG_MAIN) && in_main_components(x, y)) {
            ln->zr[l] = ln->zi[l] = ln->cr[l] = ln->ci[l] = LIT(0.0);
            ln->start[l] = clock - v->max_iter;
            ln->due[l] = clock;
        }
#endif
#ifdef FRACTALD_SHORTCUTS
        ln->sr[l] = ln->si[l] = NAN;
        ln->age[l] = 0;
#endif
    } else {
        ln->zr[l] = ln->zi[l] = ln->cr[l] = ln->ci[l] = LIT(0.0);
        ln->pos[l] = NO_SAMPLE;
        ln->due[l] = ULONG_MAX;
#ifdef FRACTALD_SHORTCUTS
        ln->sr[l] = ln->si[l] = NAN;
        ln->age[l] = AGE_NEVER;
#endif
    }
}

/* The step (0..RK) of a lane's first escaped z in a block, RK + 1 if none: pr and pi point to
 * the lane's z saved at step 0 (step k lies k * VG * VW elements further), zr, zi is its z after
 * the block. For safe blocks only: there an orbit once outside R stays outside, so the steps
 * inside form a prefix and counting them finds its end; first the whole segments of 8 steps
 * (by their last step), then the steps of the next segment, without branches. */
static inline uint first_out(const private REAL *pr, const private REAL *pi, REAL zr, REAL zi,
                             REAL r2)
{
    const uint stride = VG * VW;
    uint seg = 0, k = 0;

    if (zr * zr + zi * zi <= r2)
        return RK + 1;
#pragma unroll
    for (uint j = 0; j < RK / 8; j++) {
        REAL x = pr[(8 * j + 7) * stride], y = pi[(8 * j + 7) * stride];
        seg += x * x + y * y <= r2;
    }
    if (seg == RK / 8)
        return RK;
    pr += 8 * seg * stride;
    pi += 8 * seg * stride;
#pragma unroll
    for (uint o = 0; o < 8; o++) {
        REAL x = pr[o * stride], y = pi[o * stride];
        k += x * x + y * y <= r2;
    }
    return 8 * seg + k;
}

/*
 * render_vector: each work-item keeps L = VW * VG orbits in flight as VG vectors of VW lanes
 * and claims samples in chunks from ctl[0], so the load balances itself. It runs blocks of RK
 * steps with no branch (unrolled, so that the compiler keeps every orbit's z in registers),
 * saving every z of the block, then checks the block's last z. The lanes that escaped (or
 * reached max_iter) inside the block are settled from their saved z, which gives exactly the
 * scalar count and final z of escape.h, and take the next sample at once (lane refill). The
 * vector step is ESC_STEP's operation order. Checking only the last z is exact when an escaped
 * orbit cannot come back inside R (|c| <= R^2 - R, decided by the host for the whole
 * rectangle); otherwise (FLAG_CAREFUL) every step's check is accumulated. With the shortcuts,
 * each lane compares its z after every CYC_BLOCKS blocks (and at the last CYC_BACK steps) with
 * the z it saved (ln.sr, ln.si) and saves it when its age in checks reaches a power of 2; the
 * lanes found cycling are settled as interior. A lane found inside at a block's end was inside at every
 * step of it (above), so the period between two saved, equal z was checked inside throughout.
 * This is server/engines/engine_cpu.c's lane machine, in OpenCL C.
 * State per work-item: per lane z, n and sample in st_zr/zi, st_n, st_pos (L entries each);
 * st_wi[4w..4w+3] = chunk start, chunk end, finished, every sample claimed.
 */
kernel void render_vector(KERNEL_ARGS)
{
    const uint w = get_global_id(0), base = w * L;
    /* (Written as a choice of two constants: computing it with a division or clamp() made
     * PoCL 3.1 generate a kernel 25 % slower on workload B, for no visible reason.) */
    const uint chunk = nsamples > nwork * (CHUNK_SHARE * CHUNK_MAX) ? CHUNK_MAX : CHUNK_MIN;
    const REAL r2 = r2max;
    VIEW v;
    lanes ln;
    VREAL hr[RK * VG], hi[RK * VG];   /* z at the start of each step of the block, by [k][g] */
    VMASK gfirst;                     /* in memory, so a lane can be read at run time */
    uint gbits[VG];                   /* lanes to settle, a bit per lane, by group */
    VREAL zr[VG], zi[VG], cr[VG], ci[VG];
    /* The block clock starts at 2^32 so that start = clock - n never wraps below 0. */
    ulong clock = (ulong)1 << 32, min_due = ULONG_MAX;
    uint blocks = 0;
#ifdef FRACTALD_SHORTCUTS
    uint cbits[VG];                   /* lanes found cycling by this check, a bit per lane */
    uint check;
#endif

    if (w >= nwork || (!init && st_wi[4 * w + 2]))
        return;
    VIEW_FILL(v);
    ln.alive = 0;
    if (init) {
        ln.cur = ln.cur_end = ln.col = ln.row = 0;
        ln.exhausted = 0;
        for (uint l = 0; l < L; l++)
            refill(&ln, l, clock, &v, rect_x, rect_y, rect_w, nsamples, chunk, flags, ctl);
    } else {
        ln.cur = st_wi[4 * w];
        ln.cur_end = st_wi[4 * w + 1];
        ln.col = ln.cur % rect_w;
        ln.row = ln.cur / rect_w;
        ln.exhausted = st_wi[4 * w + 3];
        for (uint l = 0; l < L; l++) {
            uint p = st_pos[base + l];
            if (p == NO_SAMPLE) {
                ln.zr[l] = ln.zi[l] = ln.cr[l] = ln.ci[l] = LIT(0.0);
                ln.pos[l] = NO_SAMPLE;
                ln.due[l] = ULONG_MAX;
#ifdef FRACTALD_SHORTCUTS
                ln.sr[l] = ln.si[l] = NAN;
                ln.age[l] = AGE_NEVER;
#endif
                continue;
            }
            sample_start(&v, p, rect_x, rect_y, rect_w, &ln.zr[l], &ln.zi[l], &ln.cr[l],
                         &ln.ci[l]);
            ln.zr[l] = st_zr[base + l];
            ln.zi[l] = st_zi[base + l];
            ln.pos[l] = p;
            ln.start[l] = clock - st_n[base + l];
            ln.due[l] = ln.start[l] + max_iter;
            ln.alive++;
#ifdef FRACTALD_SHORTCUTS
            ln.sr[l] = ln.si[l] = NAN;
            ln.age[l] = 0;
#endif
        }
    }
    for (uint l = 0; l < L; l++)
        min_due = min(min_due, ln.due[l]);
#pragma unroll
    for (int g = 0; g < VG; g++) {
        zr[g] = VLOAD(g, ln.zr);
        zi[g] = VLOAD(g, ln.zi);
        cr[g] = VLOAD(g, ln.cr);
        ci[g] = VLOAD(g, ln.ci);
    }

    while (ln.alive > 0 && blocks < budget) {
        VREAL a[VG], b[VG], x2, y2, t;
        VMASK ok[VG], out[VG], any_out = (VMASK)(0);
        uint full;

        blocks++;
#pragma unroll
        for (int g = 0; g < VG; g++) {
            a[g] = zr[g];
            b[g] = zi[g];
            ok[g] = (VMASK)(-1);
        }
        if (flags & FLAG_CAREFUL) {
            for (int k = 0; k < RK; k++) {
#pragma unroll
                for (int g = 0; g < VG; g++) {
                    hr[k * VG + g] = a[g];
                    hi[k * VG + g] = b[g];
                    x2 = a[g] * a[g];
                    y2 = b[g] * b[g];
                    ok[g] &= x2 + y2 <= r2;
                    t = a[g] * b[g];
                    b[g] = t + t + ci[g];
                    a[g] = x2 - y2 + cr[g];
                }
            }
        } else {
            /* Unrolled: with the loop, PoCL's register allocation kept some z in memory. */
#pragma unroll
            for (int k = 0; k < RK; k++) {
#pragma unroll
                for (int g = 0; g < VG; g++) {
                    hr[k * VG + g] = a[g];
                    hi[k * VG + g] = b[g];
                    x2 = a[g] * a[g];
                    y2 = b[g] * b[g];
                    t = a[g] * b[g];
                    b[g] = t + t + ci[g];
                    a[g] = x2 - y2 + cr[g];
                }
            }
        }
        clock += RK;
#pragma unroll
        for (int g = 0; g < VG; g++) {
            x2 = a[g] * a[g];
            y2 = b[g] * b[g];
            /* Lanes out of R or NaN now, or (careful blocks) out at some step. */
            out[g] = ~(ok[g] & (x2 + y2 <= r2));
            any_out |= out[g];
            zr[g] = a[g];
            zi[g] = b[g];
        }
        full = clock >= min_due;
#ifdef FRACTALD_SHORTCUTS
        /* The cycle check runs here, with the settle, every CYC_BLOCKS blocks: any code of it in
         * the block's path made PoCL spill the block's z (B fp32 1.6x slower). */
        check = blocks % CYC_BLOCKS == 0;
        if (!fold_or(any_out) && !full && !check)
            continue;
#else
        if (!fold_or(any_out) && !full)
            continue;
#endif

        /* Settle the lanes flagged by the check and (full) those whose n reached max_iter: the
         * vectors go to the lane arrays, one loop settles and refills the lanes a group at a
         * time (one copy of that code, not one per group), and the vectors come back. */
#pragma unroll
        for (int g = 0; g < VG; g++) {
            VSTORE(zr[g], g, ln.zr);
            VSTORE(zi[g], g, ln.zi);
            gbits[g] = LANE_MASK(out[g]);
#ifdef FRACTALD_SHORTCUTS
            cbits[g] = 0;
            if (check) {
                /* Lanes inside whose z now, or at one of the last CYC_BACK steps (saved in hr,
                 * hi: later than the saved z, taken at an earlier check), equals the saved z:
                 * any period up to CYC_BACK is found at the first check after the save. */
                VREAL sx = VLOAD(g, ln.sr), sy = VLOAD(g, ln.si);
                VMASK age = VLOAD(g, ln.age) + (VMASK)(1);
                VMASK save = (age & (age - (VMASK)(1))) == (VMASK)(0);
                VMASK hit = (zr[g] == sx) & (zi[g] == sy);

                for (int k = RK - CYC_BACK; k < RK; k++)
                    hit |= (hr[k * VG + g] == sx) & (hi[k * VG + g] == sy);
                cbits[g] = LANE_MASK(hit & ~out[g]);
                gbits[g] |= cbits[g];
                VSTORE(select(sx, zr[g], save), g, ln.sr);
                VSTORE(select(sy, zi[g], save), g, ln.si);
                VSTORE(age, g, ln.age);
            }
#endif
        }
        if (full) {
            min_due = ULONG_MAX;
            for (uint l = 0; l < L; l++) {
                if (ln.due[l] <= clock)
                    gbits[l / VW] |= 1u << (l % VW);
                else
                    min_due = min(min_due, ln.due[l]);
            }
        }
#pragma nounroll
        for (uint g = 0; g < VG; g++) {
            uint lanes_due = gbits[g];

            if (!lanes_due)
                continue;
            if (flags & FLAG_CAREFUL) {
                /* gfirst = the step (0..RK) of each lane's first escaped z, RK + 1 if none. */
                VMASK inside = (VMASK)(-1), first = (VMASK)(0);
                VREAL x = VLOAD(g, ln.zr), y = VLOAD(g, ln.zi);

                for (int k = 0; k < RK; k++) {
                    inside &= hr[k * VG + g] * hr[k * VG + g] + hi[k * VG + g] * hi[k * VG + g] <=
                              r2;
                    first -= inside;
                }
                inside &= x * x + y * y <= r2;
                first -= inside;
                gfirst = first;
            }
            for (; lanes_due; lanes_due &= lanes_due - 1) {
                uint e = 31 - clz(lanes_due & (0u - lanes_due)), l = g * VW + e, n0, n;
                ulong k = flags & FLAG_CAREFUL
                              ? (ulong)((const private MASKE *)&gfirst)[e]
                              : first_out((const private REAL *)hr + g * VW + e,
                                          (const private REAL *)hi + g * VW + e, ln.zr[l],
                                          ln.zi[l], r2);
                REAL x = LIT(0.0), y = LIT(0.0);

                n0 = (uint)(clock - RK - ln.start[l]);
#ifdef FRACTALD_SHORTCUTS
                if (cbits[g] & (1u << e))
                    k = max_iter;    /* a cycle: interior, z = 0 */
#endif
                if (n0 + k >= max_iter) {
                    n = max_iter;
                } else if (k > RK) {
                    /* Unreachable: a flagged lane escapes among the z just checked. Keep the
                     * lane running rather than write a wrong count. */
                    min_due = min(min_due, ln.due[l]);
                    continue;
                } else {
                    /* z_{n0 + k} is the saved z of step k, or the current z for k == RK. */
                    n = n0 + (uint)k;
                    x = k < RK ? ((const private REAL *)&hr[k * VG + g])[e] : ln.zr[l];
                    y = k < RK ? ((const private REAL *)&hi[k * VG + g])[e] : ln.zi[l];
                }
                counts[ln.pos[l]] = n;
                if (flags & FLAG_SMOOTH) {
                    zout[2 * (size_t)ln.pos[l]] = x;
                    zout[2 * (size_t)ln.pos[l] + 1] = y;
                }
                ln.alive--;
                refill(&ln, l, clock, &v, rect_x, rect_y, rect_w, nsamples, chunk, flags, ctl);
                min_due = min(min_due, ln.due[l]);
            }
        }
#pragma unroll
        for (int g = 0; g < VG; g++) {
            zr[g] = VLOAD(g, ln.zr);
            zi[g] = VLOAD(g, ln.zi);
            cr[g] = VLOAD(g, ln.cr);
            ci[g] = VLOAD(g, ln.ci);
        }
    }

#pragma unroll
    for (int g = 0; g < VG; g++) {
        VSTORE(zr[g], g, st_zr + base);
        VSTORE(zi[g], g, st_zi + base);
    }
    for (uint l = 0; l < L; l++) {
        st_pos[base + l] = ln.pos[l];
        st_n[base + l] = ln.pos[l] == NO_SAMPLE ? 0u : (uint)(clock - ln.start[l]);
    }
    st_wi[4 * w] = ln.cur;
    st_wi[4 * w + 1] = ln.cur_end;
    st_wi[4 * w + 3] = ln.exhausted;
    if (ln.alive == 0) {
        st_wi[4 * w + 2] = 1;
        atomic_inc(&ctl[1]);
    } else {
        st_wi[4 * w + 2] = 0;
    }
}

#endif /* FRACTALD_VECTOR */
