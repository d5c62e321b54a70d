/* deep_points.c: finds the deep test points of test_deep.c in MPFR and prints them, so that every
 * digit there can be reproduced: a Misiurewicz point (spirals at every depth) and minibrots near
 * it by Newton's method for the Mandelbrot set, and points of two Julia sets (the spiral's c and
 * the default c) by inverse iteration.
 *
 *   deep_points            prints every point with 460 significant digits
 *
 * Not a test: a tool, built with the tests, run by hand when a point is to be changed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
/* After stdio.h: mpfr_out_str is declared only when FILE is. */
#include <mpfr.h>

#define PREC 1800
#define DIGITS 460

typedef struct {
    mpfr_t re, im;
} cplx;

static void c_init(cplx *a)
{
    mpfr_inits2(PREC, a->re, a->im, (mpfr_ptr)0);
}

static void c_clear(cplx *a)
{
    mpfr_clears(a->re, a->im, (mpfr_ptr)0);
}

static void c_set(cplx *a, const cplx *b)
{
    mpfr_set(a->re, b->re, MPFR_RNDN);
    mpfr_set(a->im, b->im, MPFR_RNDN);
}

/* a = b * c (a may alias b or c). */
static void c_mul(cplx *a, const cplx *b, const cplx *c)
{
    mpfr_t t1, t2, t3;

    mpfr_inits2(PREC, t1, t2, t3, (mpfr_ptr)0);
    mpfr_mul(t1, b->re, c->re, MPFR_RNDN);
    mpfr_mul(t2, b->im, c->im, MPFR_RNDN);
    mpfr_mul(t3, b->re, c->im, MPFR_RNDN);
    mpfr_mul(a->im, b->im, c->re, MPFR_RNDN);
    mpfr_add(a->im, a->im, t3, MPFR_RNDN);
    mpfr_sub(a->re, t1, t2, MPFR_RNDN);
    mpfr_clears(t1, t2, t3, (mpfr_ptr)0);
}

/* a = b / c. */
static void c_div(cplx *a, const cplx *b, const cplx *c)
{
    mpfr_t d, t1, t2, re;

    mpfr_inits2(PREC, d, t1, t2, re, (mpfr_ptr)0);
    mpfr_sqr(d, c->re, MPFR_RNDN);
    mpfr_sqr(t1, c->im, MPFR_RNDN);
    mpfr_add(d, d, t1, MPFR_RNDN);
    mpfr_mul(t1, b->re, c->re, MPFR_RNDN);
    mpfr_mul(t2, b->im, c->im, MPFR_RNDN);
    mpfr_add(re, t1, t2, MPFR_RNDN);
    mpfr_mul(t1, b->im, c->re, MPFR_RNDN);
    mpfr_mul(t2, b->re, c->im, MPFR_RNDN);
    mpfr_sub(a->im, t1, t2, MPFR_RNDN);
    mpfr_div(a->im, a->im, d, MPFR_RNDN);
    mpfr_div(a->re, re, d, MPFR_RNDN);
    mpfr_clears(d, t1, t2, re, (mpfr_ptr)0);
}

static double c_absd(const cplx *a)
{
    return hypot(mpfr_get_d(a->re, MPFR_RNDN), mpfr_get_d(a->im, MPFR_RNDN));
}

/* log10 |a| over MPFR's exponent range (-inf for 0). */
static double c_log10abs(const cplx *a)
{
    mpfr_t h;
    long e;
    double m;

    mpfr_init2(h, 64);
    mpfr_hypot(h, a->re, a->im, MPFR_RNDN);
    if (mpfr_zero_p(h)) {
        mpfr_clear(h);
        return -INFINITY;
    }
    m = mpfr_get_d_2exp(&e, h, MPFR_RNDN);
    mpfr_clear(h);
    return ((double)e + log2(m)) * log10(2.0);
}

static void print_point(const char *name, const cplx *c)
{
    printf("%s\n  re \"", name);
    mpfr_out_str(stdout, 10, DIGITS, c->re, MPFR_RNDN);
    printf("\"\n  im \"");
    mpfr_out_str(stdout, 10, DIGITS, c->im, MPFR_RNDN);
    printf("\"\n");
}

/*
 * Newton's method for the Misiurewicz point of preperiod k and period p near c:
 * f(c) = z_{k+p}(c) - z_k(c) = 0 with z_0 = 0, z' = z^2 + c, dz' = 2 z dz + 1. Returns log10 of the
 * last step's size |dc|.
 */
static double misiurewicz_newton(cplx *c, int k, int p, int steps)
{
    cplx z, dz, zk, dzk, t, f, df;
    double last = 0;

    c_init(&z), c_init(&dz), c_init(&zk), c_init(&dzk), c_init(&t), c_init(&f), c_init(&df);
    for (int s = 0; s < steps; s++) {
        mpfr_set_zero(z.re, 1), mpfr_set_zero(z.im, 1);
        mpfr_set_zero(dz.re, 1), mpfr_set_zero(dz.im, 1);
        for (int n = 0; n < k + p; n++) {
            if (n == k) {
                c_set(&zk, &z);
                c_set(&dzk, &dz);
            }
            c_mul(&t, &z, &dz);                       /* dz = 2 z dz + 1 */
            mpfr_mul_2ui(dz.re, t.re, 1, MPFR_RNDN);
            mpfr_mul_2ui(dz.im, t.im, 1, MPFR_RNDN);
            mpfr_add_ui(dz.re, dz.re, 1, MPFR_RNDN);
            c_mul(&z, &z, &z);                        /* z = z^2 + c */
            mpfr_add(z.re, z.re, c->re, MPFR_RNDN);
            mpfr_add(z.im, z.im, c->im, MPFR_RNDN);
        }
        mpfr_sub(f.re, z.re, zk.re, MPFR_RNDN), mpfr_sub(f.im, z.im, zk.im, MPFR_RNDN);
        mpfr_sub(df.re, dz.re, dzk.re, MPFR_RNDN), mpfr_sub(df.im, dz.im, dzk.im, MPFR_RNDN);
        c_div(&t, &f, &df);
        last = c_log10abs(&t);
        mpfr_sub(c->re, c->re, t.re, MPFR_RNDN), mpfr_sub(c->im, c->im, t.im, MPFR_RNDN);
        if (last < -520)
            break;
    }
    c_clear(&z), c_clear(&dz), c_clear(&zk), c_clear(&dzk), c_clear(&t), c_clear(&f), c_clear(&df);
    return last;
}

/* The cycle multiplier of the Misiurewicz point c of preperiod k, period p: prod 2 z_n over
 * n = k .. k+p-1, as |lambda|^(1/p) (the repulsion per iteration) and arg(lambda). Also checks
 * that (k, p) is exact: z_{k-1+p} != z_{k-1} (preperiod not smaller) and z_{k+d} != z_k for every
 * d < p (period not smaller). Returns 0 when it is not. */
static int misiurewicz_multiplier(const cplx *c, int k, int p, double *rep, double *arg)
{
    double zr[64], zi[64], lr = 1, li = 0;
    cplx z;

    c_init(&z);
    mpfr_set_zero(z.re, 1), mpfr_set_zero(z.im, 1);
    for (int n = 0; n <= k + p && n < 64; n++) {
        zr[n] = mpfr_get_d(z.re, MPFR_RNDN);
        zi[n] = mpfr_get_d(z.im, MPFR_RNDN);
        c_mul(&z, &z, &z);
        mpfr_add(z.re, z.re, c->re, MPFR_RNDN);
        mpfr_add(z.im, z.im, c->im, MPFR_RNDN);
    }
    c_clear(&z);
    if (k + p >= 64 || hypot(zr[k - 1 + p] - zr[k - 1], zi[k - 1 + p] - zi[k - 1]) < 1e-9)
        return 0;
    for (int d = 1; d < p; d++)
        if (hypot(zr[k + d] - zr[k], zi[k + d] - zi[k]) < 1e-9)
            return 0;
    for (int n = k; n < k + p; n++) {
        double t = 2 * (zr[n] * lr - zi[n] * li);
        li = 2 * (zr[n] * li + zi[n] * lr);
        lr = t;
    }
    *rep = pow(hypot(lr, li), 1.0 / p);
    *arg = atan2(li, lr);
    return 1;
}

/* Newton's method for the nucleus of period p near c: z_p(c) = 0. Returns log10 of the last |dc|. */
static double nucleus_newton(cplx *c, int p, int steps)
{
    cplx z, dz, t;
    double last = 0;

    c_init(&z), c_init(&dz), c_init(&t);
    for (int s = 0; s < steps; s++) {
        mpfr_set_zero(z.re, 1), mpfr_set_zero(z.im, 1);
        mpfr_set_zero(dz.re, 1), mpfr_set_zero(dz.im, 1);
        for (int n = 0; n < p; n++) {
            c_mul(&t, &z, &dz);
            mpfr_mul_2ui(dz.re, t.re, 1, MPFR_RNDN);
            mpfr_mul_2ui(dz.im, t.im, 1, MPFR_RNDN);
            mpfr_add_ui(dz.re, dz.re, 1, MPFR_RNDN);
            c_mul(&z, &z, &z);
            mpfr_add(z.re, z.re, c->re, MPFR_RNDN);
            mpfr_add(z.im, z.im, c->im, MPFR_RNDN);
        }
        c_div(&t, &z, &dz);
        last = c_log10abs(&t);
        mpfr_sub(c->re, c->re, t.re, MPFR_RNDN), mpfr_sub(c->im, c->im, t.im, MPFR_RNDN);
        if (last < -520)
            break;
    }
    c_clear(&z), c_clear(&dz), c_clear(&t);
    return last;
}

/* The period of the atom domain c lies in: the last n whose |z_n| is a new minimum before the
 * orbit escapes or max_n is reached. */
static int atom_period(const cplx *c, int max_n)
{
    cplx z;
    double best = INFINITY;
    int period = 1;

    c_init(&z);
    mpfr_set_zero(z.re, 1), mpfr_set_zero(z.im, 1);
    for (int n = 1; n <= max_n; n++) {
        double a;
        c_mul(&z, &z, &z);
        mpfr_add(z.re, z.re, c->re, MPFR_RNDN);
        mpfr_add(z.im, z.im, c->im, MPFR_RNDN);
        a = c_absd(&z);
        if (a > 2)
            break;
        if (a < best) {
            best = a;
            period = n;
        }
    }
    c_clear(&z);
    return period;
}

/* Size estimate of the minibrot of period p at nucleus c: 1 / |b l^2| with l = prod 2 z_i and
 * b = sum 1 / l_i (i = 1 .. p-1), in log10. The orbit in MPFR (in long double it would drift off
 * the nucleus's within a few hundred steps), l and b in long double for their exponent. */
static double minibrot_log10_size(const cplx *c, int p)
{
    long double lr = 1, li = 0, br = 1, bi = 0;
    cplx z;

    c_init(&z);
    mpfr_set_zero(z.re, 1), mpfr_set_zero(z.im, 1);
    for (int i = 1; i < p; i++) {
        long double zr, zi, t, d;
        c_mul(&z, &z, &z);
        mpfr_add(z.re, z.re, c->re, MPFR_RNDN);
        mpfr_add(z.im, z.im, c->im, MPFR_RNDN);
        zr = mpfr_get_ld(z.re, MPFR_RNDN);
        zi = mpfr_get_ld(z.im, MPFR_RNDN);
        t = 2 * (zr * lr - zi * li);
        li = 2 * (zr * li + zi * lr);
        lr = t;
        d = lr * lr + li * li;
        br += lr / d;
        bi -= li / d;
    }
    c_clear(&z);
    {
        long double l2r = lr * lr - li * li, l2i = 2 * lr * li;
        long double mr = br * l2r - bi * l2i, mi = br * l2i + bi * l2r;
        return -(double)log10l(sqrtl(mr * mr + mi * mi));
    }
}

/* A point of the Julia set of c by inverse iteration z -> +-sqrt(z - c), `steps` times from
 * z = 1, the sign from a fixed linear congruential sequence: backwards the repelling dynamics
 * contract, so the point converges to J geometrically and lands on it to the precision. */
static void julia_point(cplx *z, double cre, double cim, int steps)
{
    mpfr_t r, t;
    uint64_t lcg = 12345;

    mpfr_inits2(PREC, r, t, (mpfr_ptr)0);
    mpfr_set_ui(z->re, 1, MPFR_RNDN), mpfr_set_zero(z->im, 1);
    for (int s = 0; s < steps; s++) {
        /* w = z - c; sqrt(w) = sqrt((|w| + re)/2) + i sign(im) sqrt((|w| - re)/2). */
        mpfr_sub_d(z->re, z->re, cre, MPFR_RNDN);
        mpfr_sub_d(z->im, z->im, cim, MPFR_RNDN);
        mpfr_hypot(r, z->re, z->im, MPFR_RNDN);
        mpfr_add(t, r, z->re, MPFR_RNDN);
        mpfr_div_2ui(t, t, 1, MPFR_RNDN);
        mpfr_sqrt(t, t, MPFR_RNDN);
        mpfr_sub(r, r, z->re, MPFR_RNDN);
        mpfr_div_2ui(r, r, 1, MPFR_RNDN);
        mpfr_sqrt(r, r, MPFR_RNDN);
        if (mpfr_sgn(z->im) < 0)
            mpfr_neg(r, r, MPFR_RNDN);
        mpfr_set(z->re, t, MPFR_RNDN);
        mpfr_set(z->im, r, MPFR_RNDN);
        lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
        if (lcg >> 63) {
            mpfr_neg(z->re, z->re, MPFR_RNDN);
            mpfr_neg(z->im, z->im, MPFR_RNDN);
        }
    }
    mpfr_clears(r, t, (mpfr_ptr)0);
}

int main(void)
{
    cplx m, nb, j;
    const double offsets[] = {1e-10, 1e-26, 1e-32, 1e-101, 1e-151, 1e-203};

    c_init(&m), c_init(&nb), c_init(&j);

    /* The Misiurewicz point: Newton for z_{k+p} = z_k from a grid of seeds over the upper
     * half of the set's boundary region, k = 2..8, p = 1..2; of the exact (k, p) roots, the
     * first that repels strongly (|lambda|^(1/p) >= 2: deep views escape in few iterations, so
     * the brute force stays cheap) and turns (|arg lambda| in [0.5, 2.6]: spirals). */
    for (int k = 2; k <= 8; k++) {
        for (int p = 1; p <= 2; p++) {
            for (int sy = 1; sy <= 10; sy++) {
                for (int sx = 0; sx <= 12; sx++) {
                    double d, rep, arg, x0 = -2.0 + 0.2 * sx, y0 = 0.1 * sy;
                    mpfr_set_d(m.re, x0, MPFR_RNDN);
                    mpfr_set_d(m.im, y0, MPFR_RNDN);
                    d = misiurewicz_newton(&m, k, p, 80);
                    if (!(d < -500) || mpfr_get_d(m.im, MPFR_RNDN) < 0.05 ||
                        !misiurewicz_multiplier(&m, k, p, &rep, &arg))
                        continue;
                    /* c = i (M_{2,2}) qualifies too, but its digits are trivial: the test
                     * wants a centre whose every digit matters. */
                    if (fabs(mpfr_get_d(m.re, MPFR_RNDN)) < 1e-9)
                        continue;
                    if (rep >= 2.0 && fabs(arg) >= 0.5 && fabs(arg) <= 2.6) {
                        printf("misiurewicz M_{%d,%d} from seed (%.1f, %.1f): |lambda|^(1/p) %.3f, "
                               "arg %.3f (last Newton step 1e%.1f)\n", k, p, x0, y0, rep, arg, d);
                        print_point("spiral", &m);
                        goto found;
                    }
                }
            }
        }
    }
    printf("no Misiurewicz point found\n");
    return 1;
found:
    /* Minibrots: near c = i (the Misiurewicz point M_{2,2}, a tip; the spiral point above has
     * no atom domain of period > 1 at these offsets), the atom domain's period at a point offset
     * from it, then Newton for that period's nucleus. Sizes come out near offset^2. */
    for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        int p;
        double d;
        mpfr_set_zero(nb.re, 1);
        mpfr_set_ui(nb.im, 1, MPFR_RNDN);
        mpfr_set_d(j.re, offsets[i] * 0.6, MPFR_RNDN);
        mpfr_add(nb.re, nb.re, j.re, MPFR_RNDN);
        mpfr_set_d(j.re, offsets[i] * 0.8, MPFR_RNDN);
        mpfr_add(nb.im, nb.im, j.re, MPFR_RNDN);
        p = atom_period(&nb, 200000);
        d = nucleus_newton(&nb, p, 80);
        printf("minibrot near offset %g: period %d, last step 1e%.1f, log10 size %.2f\n",
               offsets[i], p, d, minibrot_log10_size(&nb, p));
        print_point("minibrot", &nb);
    }

    /* The Julia constant: the spiral point above rounded to double (near the boundary of the
     * set, so its Julia set is a dendrite with spirals, and subhyperbolic: samples escape soon
     * after they leave the reference, unlike c = -0.8 + 0.156i, whose slow channel by the
     * period-2 bulb keeps them hundreds of iterations in chaos that double deltas cannot follow). */
    {
        double jre = mpfr_get_d(m.re, MPFR_RNDN), jim = mpfr_get_d(m.im, MPFR_RNDN);
        printf("julia c = %.17g + %.17gi, 4000 inverse steps\n", jre, jim);
        julia_point(&j, jre, jim, 4000);
        print_point("julia", &j);
    }

    /* The default Julia constant c = -0.8 + 0.156i (docs/MATH.md): a point of its Julia set the
     * same way. c lies just outside the period-2 bulb (|c + 1| = 0.2536 > 1/4), so the set is a
     * Cantor dust whose samples crawl through the bulb's slow channel for hundreds of iterations
     * after they leave both references: the views where double deltas lose counts and the
     * engine's exact recomputation (server/deep/deep_exact.c) must take over. */
    printf("julia default c = -0.8 + 0.156i, 4000 inverse steps\n");
    julia_point(&j, -0.8, 0.156, 4000);
    print_point("julia_default", &j);
    c_clear(&m), c_clear(&nb), c_clear(&j);
    return 0;
}
