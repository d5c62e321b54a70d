/* fastlog.h: the project's natural logarithm: table-driven, branch-free so that loops over it
 * vectorise, nearly correctly rounded, and the same function on every host (libm's last bit
 * depends on its version). One copy for the colour pass (image/color.c) and the smooth value
 * (engines/smooth.c); the table lives in fastlog.c. */
#ifndef FRACTALD_FASTLOG_H
#define FRACTALD_FASTLOG_H

#include <stdint.h>
#include <string.h>

/*
 * Method (table-driven, in the manner of Tang's logarithm; derived for this project):
 *   x = 2^e * m with m in [1, 2) taken from the bits. j = the multiple of 1/128 nearest to m - 1
 *   (0..128), and invc_j ~ 1 / (1 + j/128) rounded to 12 significant bits (exactly 1 for j = 0
 *   and 1/2 for j = 128). Then
 *       ln x = e*ln2 + T_j + log1p(r),   r = m*invc_j - 1,   T_j = -ln(invc_j).
 *   r is exact when m has at most 41 significant bits (or invc_j = 1): then m*invc_j fits in 53
 *   bits, is a multiple of 2^-52 within 1% of 1, and subtracting 1 is exact.
 *   Over every interval |r| <= 0.003937 (< 2^-7.98).
 *   ln2 and each T_j are split into a high part on the grid of 2^-42 and a low double, so that
 *   A = e*LN2_HI + T_hi is exact (|e| <= 1024). The large terms are added without error:
 *   H1 = A + r (Fast2Sum: |A| >= |r| or A = 0), then H = H1 - r_h^2/2 where r_h is r cut to 26
 *   bits, so r_h^2/2 is exact (Fast2Sum again); both rounding errors are kept. Everything else is
 *   small and goes into `low`: those two errors, T_lo + e*LN2_LO, the rest of -r^2/2, and
 *   r^3 * (1/3 - r/4 + r^2/5 - r^3/6 + r^4/7 - r^5/8), the Taylor series of log1p (textbook
 *   coefficients 1/k, no fit). The result is H + low, one rounding.
 * Error bound: the first omitted term, r^9/9, is below 2^-67 |ln x| (for j = 0, e = 0, where
 *   ln x ~ r; elsewhere |ln x| >= 2^-8 and it is smaller still). |low| <= ~2^-17 |ln x|, so the
 *   roundings inside it add under 2^-66 |ln x|; the table's T_hi + T_lo is within 2^-96 of T_j.
 *   Before the last rounding the value is within ~2^-65 |ln x| < 2^-12 ulp of ln x: the result
 *   is correctly rounded unless ln x lies that close to a rounding boundary.
 * Measured (gcc 12, x86-64, against logq of libquadmath): over 36.0 million inputs 1 + (double)v,
 *   v every 37th float bit pattern from 0 to 4.3e9, the largest error was 0.50003 ulp and 5
 *   results were not correctly rounded; every integer 1..4e6 was correctly rounded. glibc 2.36's
 *   log() misrounds 3427 of the same 36.0 million (largest error 0.518 ulp) and 115 of the
 *   integers; the two differ in 3428 and 115 cases, never by more than 1 ulp.
 * The table: invc_j as above; T_hi = -ln(invc_j) rounded to a multiple of 2^-42, T_lo =
 *   -ln(invc_j) - T_hi rounded to double, both from a 256-bit evaluation (mpmath) of -ln(invc_j);
 *   FASTLOG_LN2_HI and FASTLOG_LN2_LO are the same split of ln 2 (= row 128). test_color.c checks
 *   the rounding through color_coordinate() against logl() in every row
 *   (test_coordinate_log_rounding); test_smooth.c checks the wider domain below against logl().
 * Domain:
 *   - x = 1 + (double)v for a float v >= 0 (or an integer v < 2^32), the colour pass's inputs:
 *     x >= 1 (e >= 0, as the Fast2Sum needs), and x < 1 + 2^-8 (so j = 0) or v >= 2^-8 and m
 *     carries at most 32 bits; the bound above holds.
 *   - any other finite x >= 1 (the smooth value's |z|^2 and its ratio of logarithms): m*invc_j
 *     rounds once, which moves r, and so the result, by at most 2^-53 absolutely: within 1 ulp
 *     from x = 4 on, 1.5 ulp on [2, 4) (|ln x| >= ln 2 - 2^-8), 2^-44 relative on [1, 2).
 *   - +inf gives 1024 ln 2 and other inputs (x < 1, 0, NaN, negative) give finite or
 *     meaningless values, never a trap: a caller that may see them masks them out itself.
 * Branch-free and built from IEEE operations only: every build (AVX2, baseline, scalar) gives
 * the same bits when compiled without FMA contraction (-ffp-contract=off, as the project is).
 */

#define FASTLOG_TABLE_BITS 7      /* 128 intervals of m */
#define FASTLOG_LN2_HI 0x1.62e42fefa38p-1
#define FASTLOG_LN2_LO 0x1.ef35793c7673p-45

struct fastlog_row {
    double invc;   /* ~1 / (1 + j/128), 12 significant bits */
    double t_hi;   /* -ln(invc), on the grid of 2^-42 */
    double t_lo;   /* -ln(invc) - t_hi */
};

extern const struct fastlog_row fastlog_table[(1 << FASTLOG_TABLE_BITS) + 1];

/* A double's bits and back; memcpy is how C11 spells it and compiles to nothing. */
static inline __attribute__((always_inline)) uint64_t fastlog_bits(double x)
{
    uint64_t b;

    memcpy(&b, &x, sizeof(b));
    return b;
}

static inline __attribute__((always_inline)) double fastlog_double(uint64_t b)
{
    double x;

    memcpy(&x, &b, sizeof(x));
    return x;
}

/* Index of x's table row: m - 1 rounded to a multiple of 1/128, 0..128 for every bit pattern.
 * Split from fastlog_ln_at() so that block code can compute all indices in one loop and the table
 * loads in the next (loads that take their index from memory vectorise much better than ones that
 * take it from a register). */
static inline __attribute__((always_inline)) uint64_t fastlog_row_of(double x)
{
    const uint64_t frac = fastlog_bits(x) & 0xFFFFFFFFFFFFFu;

    return (frac + (UINT64_C(1) << (51 - FASTLOG_TABLE_BITS))) >> (52 - FASTLOG_TABLE_BITS);
}

/* ln x by the method above, with j = fastlog_row_of(x). Branch-free, so that loops over it
 * vectorise. +inf gives 1024 ln 2 (its exponent with m = 1) rather than inf, which saves a select
 * that would keep such loops from vectorising. */
static inline __attribute__((always_inline)) double fastlog_ln_at(double x, uint64_t j)
{
    const uint64_t bits = fastlog_bits(x);
    const struct fastlog_row *row = &fastlog_table[j];
    /* m from the fraction bits; e = the biased exponent placed in the low bits of 2^52's
     * significand, minus 2^52 + 1023: exact, and it needs no int64-to-double conversion. */
    const double m = fastlog_double((bits & 0xFFFFFFFFFFFFFu) | 0x3FF0000000000000u);
    const double e = fastlog_double((bits >> 52) | 0x4330000000000000u) - 0x1.00000000003ffp52;
    const double r = m * row->invc - 1.0;
    const double r_h = fastlog_double(fastlog_bits(r) & 0xFFFFFFFFF8000000u);   /* 26 bits */
    const double r_l = r - r_h;
    const double q_h = r_h * r_h * 0.5;
    const double a = e * FASTLOG_LN2_HI + row->t_hi;
    const double h1 = a + r, e1 = r - (h1 - a);
    const double h = h1 - q_h, e2 = (h1 - h) - q_h;
    const double r2 = r * r, r4 = r2 * r2;
    const double series = ((1.0 / 3 - r * 0.25) + r2 * (0.2 - r * (1.0 / 6)))
                          + r4 * (1.0 / 7 - r * 0.125);
    const double small = r2 * r * series - r_l * (r_h + 0.5 * r_l);
    const double low = (e1 + e2) + (small + (row->t_lo + e * FASTLOG_LN2_LO));

    return h + low;
}

/* ln x in one call, for scalar code. */
static inline double fastlog_ln(double x)
{
    return fastlog_ln_at(x, fastlog_row_of(x));
}

#endif
