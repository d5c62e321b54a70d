/* deep.cl: the deep-zoom perturbation loop of server/deep/deep_render.c (fp64 mode) as an OpenCL
 * kernel for server/engines/engine_cl_deep.c: fp64 deltas against reference orbits, Zhuoran's
 * rebasing, BLA steps, resumable launches. Needs cl_khr_fp64. */

/* No FMA contraction anywhere: the counts must equal the CPU deep engine's bit for bit. */
#pragma OPENCL FP_CONTRACT OFF

/* The build step that embeds this file (kernels/CMakeLists.txt) replaces the next line with the
 * text of escape.h (the escape check, and the fp64 extension pragma). */
#include "escape.h"

#ifndef ESC_HAVE_FP64
#error "deep.cl needs cl_khr_fp64"
#endif

/* The host passes -DLEVELS_MAX=n: the most BLA levels of one orbit (ENGINE_CL_DEEP_LEVELS_MAX). */
#ifndef LEVELS_MAX
#error "build with -DLEVELS_MAX=n"
#endif

/* Per orbit, meta holds META_SIZE uints: the orbit's length, its BLA level count, then the
 * entries per level and the index of each level's first entry (the layout of struct deep_bla). */
#define META_LEN 0
#define META_LEVELS 1
#define META_COUNT 2
#define META_FIRST (2 + LEVELS_MAX)
#define META_SIZE (2 + 2 * LEVELS_MAX)

/* st_m of a finished sample; a live one holds m in bits 0..30 and the orbit in bit 31. */
#define DONE 0xffffffffu
#define ORBIT_BIT 0x80000000u

/* One BLA entry is 5 doubles: A (re, im), B (re, im), the radius (L-infinity, see
 * deep_internal.h). */
#define BLA_DOUBLES 5

/* Trailing zeros of a nonzero x (OpenCL 1.2 has clz, not ctz). */
static inline int ctz32(uint x)
{
    return 31 - (int)clz(x & (0u - x));
}

/* deep_render.c's modulus: |a + bi| without overflow (a long BLA step's A passes 1e154). */
static inline double modulus(double a, double b)
{
    double s = fmax(fabs(a), fabs(b));

    return s > 0.0 ? s * sqrt((a / s) * (a / s) + (b / s) * (b / s)) : 0.0;
}

/*
 * deep_render.c's find_f64: the index of the longest BLA step of one orbit's table from
 * iteration m (>= 1) valid for a delta of L-infinity norm dz_inf and at most `left` iterations
 * long, or -1; *len gets its length. Levels are searched from the longest that starts at m.
 */
static inline long find_bla(global const uint *mt, global const double *B, uint m, double dz_inf,
                            uint left, uint *len)
{
    const uint i = m - 1;
    const int levels = (int)mt[META_LEVELS];
    int k = i ? ctz32(i) : levels - 1;

    if (k > levels - 1)
        k = levels - 1;
    for (; k >= 0; k--) {
        uint j = i >> k;
        size_t e;
        if (j >= mt[META_COUNT + k] || (1u << k) > left)
            continue;
        e = (size_t)mt[META_FIRST + k] + j;
        if (dz_inf < B[BLA_DOUBLES * e + 4]) {
            *len = 1u << k;
            return (long)e;
        }
    }
    return -1;
}

/*
 * One work-item per sample p of the rectangle (row-major, rect_w wide, nsamples in all). The
 * loop is deep_render.c's sample_f64 turn for turn (its comment explains the algorithm): state
 * n (the sample's iteration), the orbit (0: the centre's, 1: Julia's critical orbit) with index
 * m, and the delta dz, so that z_n = Z_m + dz; each turn checks z_n, rebases when |z| < |dz| or
 * at the orbit's end, then takes one BLA step or one perturbed step.
 *
 * Resumable: a launch runs at most `budget` turns of each sample and leaves an unfinished one's
 * state (st_n, st_m, st_dz: the state at the top of the loop, before z_n is checked) for the
 * next launch (init == 0). A finished sample writes its count, its final z (Z_m + dz, the
 * escaped z or z_max_iter) to zout, marks st_m DONE and increments ctl[0]: the host is done
 * when ctl[0] == nsamples.
 *
 * The sample's offset from the reference point, as deep_render.c's render_rows computes it:
 * (ox, oy) = ((i + 0.5) - half_w, -((j + 0.5) - half_h)) exactly, times the spacing s, one
 * rounding each. Mandelbrot: dc = that, dz_0 = 0; Julia: dz_0 = that, dc = 0.
 *
 * Julia only, st_e carries deep_render.c's error bound (in units of 2^-53, the same operations
 * in the same order), kept across launches with the rest of the state and left there when the
 * sample finishes: the host recomputes the samples whose bound says the deltas lost the count.
 */
kernel void deep_f64(int julia, uint max_iter, double r2max, double s, double half_w,
                     double half_h, uint rect_x, uint rect_y, uint rect_w, uint nsamples,
                     uint budget, uint init, global const uint *meta,
                     global const double2 *Z0, global const double *B0,
                     global const double2 *Z1, global const double *B1,
                     global uint *st_n, global uint *st_m, global double2 *st_dz,
                     global uint *ctl, global uint *counts, global double2 *zout,
                     global double *st_e)
{
    const uint p = (uint)get_global_id(0);
    uint n, m, orb, last, left = budget;
    double dzr, dzi, dcr, dci, zr, zi, d0r, d0i, err = 0.0;
    global const double2 *Z;
    global const double *B;
    global const uint *mt;

    if (p >= nsamples)
        return;
    {
        uint i = rect_x + p % rect_w, j = rect_y + p / rect_w;
        double ox = ((double)i + 0.5) - half_w;
        double oy = -(((double)j + 0.5) - half_h);
        d0r = ox * s;
        d0i = oy * s;
    }
    if (julia) {
        dcr = 0.0;
        dci = 0.0;
    } else {
        dcr = d0r;
        dci = d0i;
    }
    if (init) {
        n = 0;
        m = 0;
        orb = 0;
        if (julia) {
            dzr = d0r;
            dzi = d0i;
            err = fabs(d0r) + fabs(d0i);
        } else {
            dzr = 0.0;
            dzi = 0.0;
        }
    } else {
        uint sm = st_m[p];
        double2 d;
        if (sm == DONE)
            return;
        n = st_n[p];
        m = sm & ~ORBIT_BIT;
        orb = sm >> 31;
        d = st_dz[p];
        dzr = d.x;
        dzi = d.y;
        err = st_e[p];
    }
    Z = orb ? Z1 : Z0;
    B = orb ? B1 : B0;
    mt = meta + (orb ? META_SIZE : 0);
    last = mt[META_LEN] - 1;

    for (;;) {
        double x2, y2;
        double2 Zm = Z[m];
        zr = Zm.x + dzr;
        zi = Zm.y + dzi;
        x2 = zr * zr;
        y2 = zi * zi;
        if (ESC_ESCAPED(x2, y2, r2max) || n >= max_iter)
            break;
        if (left == 0) {
            st_n[p] = n;
            st_m[p] = m | (orb ? ORBIT_BIT : 0u);
            st_dz[p] = (double2)(dzr, dzi);
            st_e[p] = err;
            return;
        }
        left--;
        if (x2 + y2 < dzr * dzr + dzi * dzi || m == last) {
            dzr = zr;
            dzi = zi;
            m = 0;
            if (julia) {
                orb = 1;
                Z = Z1;
                B = B1;
                mt = meta + META_SIZE;
                last = mt[META_LEN] - 1;
                err += fabs(zr) + fabs(zi);
            }
        }
        if (m >= 1 && mt[META_LEVELS] > 0) {
            uint l;
            double ar = fabs(dzr), ai = fabs(dzi);
            long e = find_bla(mt, B, m, ar > ai ? ar : ai, max_iter - n, &l);
            if (e >= 0) {
                global const double *c = B + BLA_DOUBLES * (size_t)e;
                double nr = (c[0] * dzr - c[1] * dzi) + (c[2] * dcr - c[3] * dci);
                double ni = (c[0] * dzi + c[1] * dzr) + (c[2] * dci + c[3] * dcr);
                dzr = nr;
                dzi = ni;
                if (julia)
                    err = modulus(c[0], c[1]) * err + (double)l * (fabs(nr) + fabs(ni));
                m += l;
                n += l;
                continue;
            }
        }
        {
            /* Z_m again: a rebase above may have moved m (and the orbit). */
            double2 Zs = Z[m];
            double tr = 2.0 * Zs.x + dzr, ti = 2.0 * Zs.y + dzi;
            double nr = (tr * dzr - ti * dzi) + dcr, ni = (tr * dzi + ti * dzr) + dci;
            dzr = nr;
            dzi = ni;
            if (julia)
                err = 2.0 * sqrt(x2 + y2) * err + (fabs(nr) + fabs(ni));
            m++;
            n++;
        }
    }
    counts[p] = n;
    zout[p] = (double2)(zr, zi);
    st_e[p] = err;
    st_m[p] = DONE;
    atomic_inc(&ctl[0]);
}
