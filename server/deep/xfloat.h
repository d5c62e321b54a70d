/* xfloat.h: an extended-exponent float for the deep engine's deltas past fp64's range: a double
 * mantissa with a separate int exponent, real (xf) and complex with one shared exponent (xfc),
 * renormalised after every operation. All inline: the per-sample loops live on these. */
#ifndef FRACTALD_XFLOAT_H
#define FRACTALD_XFLOAT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/*
 * xf = m * 2^e with 1 <= |m| < 2, or m = 0 and e = XF_ZERO_E. xfc = (re + i im) * 2^e with
 * max(|re|, |im|) in [1, 2), or both 0 and e = XF_ZERO_E: one exponent for both parts, as a
 * complex double has one scale in practice (the smaller part only loses what a complex product
 * loses anyway), and it halves the renormalisation work.
 *
 * Why normalise by bit surgery instead of frexp/ldexp: the mantissas that reach xf_norm come
 * from products and sums of normalised mantissas (magnitude 2^-120 .. 2^3), always normal
 * doubles, so the exponent can be read from the bits and removed by one exact multiply with a
 * power of two built from bits. XF_ZERO_E is low enough that a zero never wins an alignment and
 * high enough that adding two exponents cannot overflow int32.
 *
 * Alignment drops a summand that is more than XF_DROP binary orders below the other: it is
 * below half an ulp of the result, so the sum is the one a double would give.
 */
#define XF_ZERO_E (-(1 << 28))
#define XF_DROP 60

typedef struct {
    double m;
    int32_t e;
} xf;

typedef struct {
    double re, im;
    int32_t e;
} xfc;

/* 2^k as a double, for k in [-1022, 1023]. */
static inline double xf_pow2(int32_t k)
{
    uint64_t bits = (uint64_t)(k + 1023) << 52;
    double d;

    memcpy(&d, &bits, sizeof(d));
    return d;
}

/* The unbiased binary exponent of a normal, nonzero double (floor(log2|d|)). */
static inline int32_t xf_exp_of(double d)
{
    uint64_t bits;

    memcpy(&bits, &d, sizeof(bits));
    return (int32_t)((bits >> 52) & 0x7ff) - 1023;
}

static inline xf xf_norm(double m, int32_t e)
{
    xf r;
    int32_t k;

    if (m == 0.0) {
        r.m = 0.0;
        r.e = XF_ZERO_E;
        return r;
    }
    k = xf_exp_of(m);
    r.m = m * xf_pow2(-k);
    r.e = e + k;
    return r;
}

/* Any finite double, subnormals included (frexp: not on the hot path). */
static inline xf xf_from_d(double d)
{
    int e;
    double m;

    if (d == 0.0)
        return xf_norm(0.0, 0);
    m = frexp(d, &e);
    return xf_norm(m * 2.0, e - 1);
}

/* 2^k * d for any int k; 0 or +-inf where the value leaves double's range. */
static inline double xf_scale_d(double d, int32_t k)
{
    if (k >= -1022 && k <= 1023)
        return d * xf_pow2(k);
    if (k < -1200)
        return 0.0 * d;
    if (k > 1200)
        return d * INFINITY;
    return ldexp(d, k);
}

static inline double xf_to_d(xf a)
{
    return xf_scale_d(a.m, a.e);
}

static inline xf xf_mul(xf a, xf b)
{
    return xf_norm(a.m * b.m, a.e + b.e);
}

static inline xf xf_mul_d(xf a, double d)
{
    xf b = xf_from_d(d);
    return xf_mul(a, b);
}

static inline xf xf_add(xf a, xf b)
{
    int32_t d = a.e - b.e;

    if (d >= 0) {
        if (d > XF_DROP)
            return a;
        return xf_norm(a.m + b.m * xf_pow2(-d), a.e);
    }
    if (-d > XF_DROP)
        return b;
    return xf_norm(a.m * xf_pow2(d) + b.m, b.e);
}

static inline xf xf_neg(xf a)
{
    a.m = -a.m;
    return a;
}

static inline xf xf_sub(xf a, xf b)
{
    return xf_add(a, xf_neg(b));
}

static inline xf xf_abs(xf a)
{
    a.m = fabs(a.m);
    return a;
}

/* a / b for b != 0 (table building only). */
static inline xf xf_div(xf a, xf b)
{
    return xf_norm(a.m / b.m, a.e - b.e);
}

static inline xf xf_sqrt(xf a)
{
    if (a.m <= 0.0)
        return xf_norm(0.0, 0);
    if (a.e & 1)
        return xf_norm(sqrt(a.m * 2.0), (a.e - 1) / 2);
    return xf_norm(sqrt(a.m), a.e / 2);
}

/* Sign of a - b for ordered (non-NaN) values. Normalised values compare by sign, then exponent,
 * then mantissa. */
static inline int xf_cmp(xf a, xf b)
{
    if (a.m == 0.0 || b.m == 0.0 || (a.m < 0) != (b.m < 0))
        return (a.m > b.m) - (a.m < b.m);
    if (a.e != b.e)
        return (a.m > 0) == (a.e > b.e) ? 1 : -1;
    return (a.m > b.m) - (a.m < b.m);
}

/* a < b for nonnegative a, b: the comparison of norms and radii in the hot loops. */
static inline int xf_lt_pos(xf a, xf b)
{
    if (b.m == 0.0)
        return 0;
    if (a.m == 0.0)
        return 1;
    return a.e < b.e || (a.e == b.e && a.m < b.m);
}

static inline xf xf_max_pos(xf a, xf b)
{
    return xf_lt_pos(a, b) ? b : a;
}

static inline xf xf_min_pos(xf a, xf b)
{
    return xf_lt_pos(a, b) ? a : b;
}

/* ---- complex, one shared exponent ---- */

static inline xfc xfc_norm(double re, double im, int32_t e)
{
    xfc r;
    double a = fabs(re), b = fabs(im), big = a > b ? a : b;
    double f;
    int32_t k;

    if (big == 0.0) {
        r.re = r.im = 0.0;
        r.e = XF_ZERO_E;
        return r;
    }
    k = xf_exp_of(big);
    f = xf_pow2(-k);
    r.re = re * f;
    r.im = im * f;
    r.e = e + k;
    return r;
}

static inline xfc xfc_from_xf(xf re, xf im)
{
    int32_t d = re.e - im.e;

    if (d >= 0)
        return xfc_norm(re.m, d > 1100 ? 0.0 : xf_scale_d(im.m, -d), re.e);
    return xfc_norm(-d > 1100 ? 0.0 : xf_scale_d(re.m, d), im.m, im.e);
}

static inline xfc xfc_from_d(double re, double im)
{
    return xfc_from_xf(xf_from_d(re), xf_from_d(im));
}

static inline xf xfc_re(xfc a)
{
    return xf_norm(a.re, a.e);
}

static inline xf xfc_im(xfc a)
{
    return xf_norm(a.im, a.e);
}

/* The parts as doubles: 0 below double's range, +-inf above it. */
static inline void xfc_to_d(xfc a, double *re, double *im)
{
    *re = xf_scale_d(a.re, a.e);
    *im = xf_scale_d(a.im, a.e);
}

static inline xfc xfc_add(xfc a, xfc b)
{
    int32_t d = a.e - b.e;

    if (d >= 0) {
        double f;
        if (d > XF_DROP)
            return a;
        f = xf_pow2(-d);
        return xfc_norm(a.re + b.re * f, a.im + b.im * f, a.e);
    } else {
        double f;
        if (-d > XF_DROP)
            return b;
        f = xf_pow2(d);
        return xfc_norm(a.re * f + b.re, a.im * f + b.im, b.e);
    }
}

static inline xfc xfc_mul(xfc a, xfc b)
{
    return xfc_norm(a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re, a.e + b.e);
}

static inline xfc xfc_sqr(xfc a)
{
    double t = a.re * a.im;
    return xfc_norm(a.re * a.re - a.im * a.im, t + t, a.e + a.e);
}

/* 2a: exact, an exponent increment. */
static inline xfc xfc_twice(xfc a)
{
    if (a.re != 0.0 || a.im != 0.0)
        a.e += 1;
    return a;
}

/* |a|^2 as xf. */
static inline xf xfc_norm2(xfc a)
{
    return xf_norm(a.re * a.re + a.im * a.im, a.e + a.e);
}

/* |a| as xf. */
static inline xf xfc_abs(xfc a)
{
    return xf_norm(sqrt(a.re * a.re + a.im * a.im), a.e);
}

/* max(|re|, |im|): the L-infinity norm the BLA radii are compared with (no square, no root). */
static inline xf xfc_inf(xfc a)
{
    double x = fabs(a.re), y = fabs(a.im);
    xf r;

    r.m = x > y ? x : y;
    r.e = r.m == 0.0 ? XF_ZERO_E : a.e;
    return r;
}

static inline xfc xfc_mul_xf(xfc a, xf b)
{
    return xfc_norm(a.re * b.m, a.im * b.m, a.e + b.e);
}

#endif
