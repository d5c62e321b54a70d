/* engine_cpu_avx512.c: the CPU engine's AVX-512 lane machines, written with intrinsics for mask
 * registers: every step checks every lane's escape into a mask that both counts the lane and
 * freezes it once out, and finished lanes are settled and refilled vector-wide. */
#ifndef E5_TEMPLATE

#include <stdint.h>
#include <string.h>

#include "engine_cpu_internal.h"
#include "smooth.h"

#if defined(__x86_64__)
#include <immintrin.h>

/*
 * Why a machine of its own: the machines of engine_cpu.c run blocks without checks and settle
 * each finished lane in scalar code, which is right for AVX2 (no mask registers; a compare and a
 * blend per step cost two of its ~7 operations) but on AVX-512 leaves the lanes waiting on scalar
 * bookkeeping: measured on workload A (fp32), the AVX-512 build of that machine ran 1.07x its AVX2
 * build. Here a compare into a mask register and a masked integer add per step do the counting,
 * the z updates are merge-masked (so an escaped lane keeps the z that escaped, which the smooth
 * value needs, at no extra cost), and lanes are settled with compress/scatter stores and refilled
 * with expand loads of the next samples, a whole vector at a time.
 *
 * Exactness: the step is ESC_STEP's operations in its order, the check escape.h's
 * !(x2 + y2 <= r2max) (an ordered compare is false on NaN), and a lane's count is the number of
 * checks it passed before its first failed one, clamped to max_iter: escape.h's count. Interior
 * shortcuts are those of engine_cpu.c: the cardioid / bulb test at refill (the same double
 * operations, vector-wide) and Brent's cycle detection on bit-equal z at batch ends.
 */

/* Steps between the lanes' bookkeeping (settle, refill). A finished lane idles for up to this
 * many steps; the bookkeeping of a vector costs about as much as two of its steps. */
#define E5_BATCH 32

/* Batches between polls of the cancel flag: 16 * 32 steps of every lane, a few microseconds. */
#define E5_CANCEL_POLL 16

/* Batches between cycle checks (every 64 steps, as engine_cpu.c's 4 blocks of 16). */
#define E5_CYCLE_EVERY 2

#define E5_ATTR __attribute__((target("avx512f,avx512vl")))

int ecpu_avx512_fits(uint64_t nsamples, uint32_t max_iter)
{
    /* Positions live in int32 lanes; a count runs up to a batch past max_iter before the
     * batch-end check stops it. */
    return nsamples <= INT32_MAX && max_iter <= UINT32_MAX - 2 * E5_BATCH;
}

/* The lowest k set bits of m (k <= popcount(m)). */
static inline unsigned low_bits(unsigned m, unsigned k)
{
    unsigned r = 0;

    while (k--) {
        r |= m & (0u - m);
        m &= m - 1;
    }
    return r;
}

/* engine_cpu.c's in_main_bulbs for 8 lanes: the same double operations in the same order, so
 * exactly the same samples take the shortcut. */
E5_ATTR static inline __mmask8 bulbs_pd(__m512d x, __m512d y)
{
    const double r = 1.0 - ECPU_BULB_MARGIN;
    const __m512d one = _mm512_set1_pd(1.0), rr = _mm512_set1_pd(r * r);
    __m512d y2 = y * y, bx = x + one, a, b, m, wr, wi;
    __mmask8 bulb, box, card;

    bulb = _mm512_cmp_pd_mask(_mm512_set1_pd(16.0) * (bx * bx + y2), rr, _CMP_LE_OQ);
    box = _mm512_cmp_pd_mask(x, _mm512_set1_pd(-0.75), _CMP_GE_OQ) &
          _mm512_cmp_pd_mask(x, _mm512_set1_pd(0.375), _CMP_LE_OQ) &
          _mm512_cmp_pd_mask(y2, _mm512_set1_pd(0.65 * 0.65), _CMP_LE_OQ);
    a = one - _mm512_set1_pd(4.0) * x;
    b = _mm512_set1_pd(-4.0) * y;
    m = _mm512_sqrt_pd(a * a + b * b);
    wr = _mm512_sqrt_pd(_mm512_set1_pd(0.5) * (m + a));
    wi = _mm512_sqrt_pd(_mm512_set1_pd(0.5) * (m - a));
    card = _mm512_cmp_pd_mask((one - wr) * (one - wr) + wi * wi, rr, _CMP_LE_OQ);
    return bulb | (box & card);
}

#define E5_TEMPLATE 1

/* CSTORE and ICSTORE compress the lanes k to the front of a register and store the whole
 * register: the stores past the lanes k are junk that the next store overwrites. A compress
 * with a memory destination would store only the lanes k, but it is microcoded on some CPUs
 * (AMD Zen 4: ~100 cycles). */

/* fp32: 16 lanes a vector, counts and positions in a __m512i. */
#define E5_SFX f32
#define E5_REAL float
#define E5_NV 6
#define E5_VIEW(job) (&(job)->v32)
#define E5_XTAB(job) ((job)->x32)
typedef __m512 e5_vf_f32;
typedef __mmask16 e5_vk_f32;
typedef __m512i e5_vi_f32;
#define VF e5_vf_f32
#define VK e5_vk_f32
#define VI e5_vi_f32
#define SET1(x) _mm512_set1_ps(x)
#define MADD(src, k, a, b) _mm512_mask_add_ps(src, k, a, b)
#define CMPLE(k, a, b) _mm512_mask_cmp_ps_mask(k, a, b, _CMP_LE_OQ)
#define MOVF(src, k, a) _mm512_mask_mov_ps(src, k, a)
#define EXPLOAD(k, p) _mm512_maskz_expandloadu_ps(k, p)
#define CSTORE(p, k, a) _mm512_storeu_ps(p, _mm512_maskz_compress_ps(k, a))
#define EQBITS(k, a, b) _mm512_mask_cmpeq_epi32_mask(k, _mm512_castps_si512(a), _mm512_castps_si512(b))
#define ISET1(x) _mm512_set1_epi32(x)
#define IZERO _mm512_setzero_si512()
#define IIOTA _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define IADD(a, b) _mm512_add_epi32(a, b)
#define ISUB(a, b) _mm512_sub_epi32(a, b)
#define IADDM(src, k, a, b) _mm512_mask_add_epi32(src, k, a, b)
#define IMIN(a, b) _mm512_min_epu32(a, b)
#define IGE(k, a, b) _mm512_mask_cmpge_epu32_mask(k, a, b)
#define ILT(k, a, b) _mm512_mask_cmplt_epu32_mask(k, a, b)
#define IMOV(src, k, a) _mm512_mask_mov_epi32(src, k, a)
#define IEXP(k, a) _mm512_maskz_expand_epi32(k, a)
#define ICSTORE(p, k, a) _mm512_storeu_si512(p, _mm512_maskz_compress_epi32(k, a))
#define ITESTN(a, b) _mm512_testn_epi32_mask(a, b)
#define ISCATTER(base, k, idx, a) _mm512_mask_i32scatter_epi32(base, k, idx, a, 4)
#define FSCATTER(base, k, idx, a) _mm512_mask_i32scatter_ps(base, k, idx, a, 4)
#define FSET1_F32(x) _mm512_set1_ps(x)
/* acc (8 x u64) += the lanes k of n (u32), both halves. */
#define ACC64(acc, k, n)                                                                          \
    do {                                                                                          \
        acc = _mm512_mask_add_epi64(acc, (__mmask8)(k), acc,                                      \
                                    _mm512_cvtepu32_epi64(_mm512_castsi512_si256(n)));            \
        acc = _mm512_mask_add_epi64(acc, (__mmask8)((k) >> 8), acc,                               \
                                    _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(n, 1)));      \
    } while (0)
/* Stores the lanes k of the positions p, widened to size_t, compressed at out (a whole vector
 * stored: the elements past the lanes k are junk, overwritten by the next store). */
#define CSTORE_POS(out, k, p)                                                                     \
    do {                                                                                          \
        __mmask8 lo_ = (__mmask8)(k), hi_ = (__mmask8)((k) >> 8);                                 \
        _mm512_storeu_si512(out, _mm512_maskz_compress_epi64(                                     \
                                     lo_, _mm512_cvtepu32_epi64(_mm512_castsi512_si256(p))));     \
        _mm512_storeu_si512((size_t *)(out) + __builtin_popcount(lo_),                            \
                            _mm512_maskz_compress_epi64(                                          \
                                hi_, _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(p, 1))));    \
    } while (0)
/* The cardioid / bulb test of 16 float lanes, in double like engine_cpu.c's. */
#define BULBS(x, y)                                                                               \
    ((VK)(bulbs_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x)),                                    \
                   _mm512_cvtps_pd(_mm512_castps512_ps256(y))) |                                  \
          (unsigned)bulbs_pd(_mm512_cvtps_pd(_mm256_castpd_ps(                                    \
                                 _mm512_extractf64x4_pd(_mm512_castps_pd(x), 1))),                \
                             _mm512_cvtps_pd(_mm256_castpd_ps(                                    \
                                 _mm512_extractf64x4_pd(_mm512_castps_pd(y), 1))))                \
              << 8))
#include "engine_cpu_avx512.c"

/* fp64: 8 lanes a vector, counts and positions in a __m256i. */
#define E5_SFX f64
#define E5_REAL double
#define E5_NV 6
#define E5_VIEW(job) (&(job)->v64)
#define E5_XTAB(job) ((job)->x64)
typedef __m512d e5_vf_f64;
typedef __mmask8 e5_vk_f64;
typedef __m256i e5_vi_f64;
#define VF e5_vf_f64
#define VK e5_vk_f64
#define VI e5_vi_f64
#define SET1(x) _mm512_set1_pd(x)
#define MADD(src, k, a, b) _mm512_mask_add_pd(src, k, a, b)
#define CMPLE(k, a, b) _mm512_mask_cmp_pd_mask(k, a, b, _CMP_LE_OQ)
#define MOVF(src, k, a) _mm512_mask_mov_pd(src, k, a)
#define EXPLOAD(k, p) _mm512_maskz_expandloadu_pd(k, p)
#define CSTORE(p, k, a) _mm512_storeu_pd(p, _mm512_maskz_compress_pd(k, a))
#define EQBITS(k, a, b) _mm512_mask_cmpeq_epi64_mask(k, _mm512_castpd_si512(a), _mm512_castpd_si512(b))
#define ISET1(x) _mm256_set1_epi32(x)
#define IZERO _mm256_setzero_si256()
#define IIOTA _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
#define IADD(a, b) _mm256_add_epi32(a, b)
#define ISUB(a, b) _mm256_sub_epi32(a, b)
#define IADDM(src, k, a, b) _mm256_mask_add_epi32(src, k, a, b)
#define IMIN(a, b) _mm256_min_epu32(a, b)
#define IGE(k, a, b) _mm256_mask_cmpge_epu32_mask(k, a, b)
#define ILT(k, a, b) _mm256_mask_cmplt_epu32_mask(k, a, b)
#define IMOV(src, k, a) _mm256_mask_mov_epi32(src, k, a)
#define IEXP(k, a) _mm256_maskz_expand_epi32(k, a)
#define ICSTORE(p, k, a) _mm256_storeu_si256((__m256i *)(p), _mm256_maskz_compress_epi32(k, a))
#define ITESTN(a, b) _mm256_testn_epi32_mask(a, b)
#define ISCATTER(base, k, idx, a) _mm256_mask_i32scatter_epi32(base, k, idx, a, 4)
#define FSCATTER(base, k, idx, a) _mm256_mask_i32scatter_ps(base, k, idx, a, 4)
#define FSET1_F32(x) _mm256_set1_ps(x)
#define ACC64(acc, k, n) (acc = _mm512_mask_add_epi64(acc, k, acc, _mm512_cvtepu32_epi64(n)))
#define CSTORE_POS(out, k, p) _mm512_storeu_si512(out, _mm512_maskz_compress_epi64(k, _mm512_cvtepu32_epi64(p)))
#define BULBS(x, y) bulbs_pd(x, y)
#include "engine_cpu_avx512.c"

#undef E5_TEMPLATE

#endif /* __x86_64__ */

#else /* E5_TEMPLATE */

/*
 * Template part: one machine, for the precision of E5_SFX. NV vectors of lanes are in flight
 * (their latency chain, about 15 cycles with the masked update, is covered by 6 vectors of ~5
 * cycles' work each). Per lane: z, c (Mandelbrot; Julia's c is a broadcast constant), the count,
 * the sample's position in the job, and for cycle detection the saved z and the check count at
 * refill. valid: the lane holds a sample; act: it has not escaped.
 */
#define E5_CAT_(a, b) a##b
#define E5_CAT(a, b) E5_CAT_(a, b)
#define E5_FN(name) E5_CAT(E5_CAT(name, _), E5_SFX)

/* Adds the escaped lanes k of one vector to the smooth batch, compressed, flushing it first when
 * they might not fit. */
E5_ATTR static inline void E5_FN(smooth_add)(struct E5_CAT(smooth_batch_, E5_SFX) *b, VK k, VI pos,
                                             VI n, VF zr, VF zi, VF cr, VF ci)
{
    enum { W = sizeof(VF) / sizeof(E5_REAL) };
    uint32_t len;

    if (b->len + W > SMOOTH_BATCH)
        E5_CAT(smooth_batch_flush_, E5_SFX)(b);
    len = b->len;
    CSTORE_POS(b->pos + len, k, pos);
    ICSTORE(b->n + len, k, n);
    CSTORE(b->zr + len, k, zr);
    CSTORE(b->zi + len, k, zi);
    CSTORE(b->cr + len, k, cr);
    CSTORE(b->ci + len, k, ci);
    b->len = len + (uint32_t)__builtin_popcount((unsigned)k);
}

E5_ATTR
void E5_CAT(ecpu_machine_, E5_CAT(E5_SFX, _avx512))(struct engine_cpu *engine, struct ecpu_job *job,
                                                     uint64_t tile, struct ecpu_tally *tally,
                                                     int *aborted)
{
    enum { W = sizeof(VF) / sizeof(E5_REAL), NV = E5_NV, KB = E5_BATCH };
    const E5_CAT(esc_view_, E5_SFX) *v = E5_VIEW(job);
    const E5_REAL *const xtab = E5_XTAB(job);
    const uint32_t max_iter = v->max_iter, w = job->rect_w;
    const int mandel = v->fractal == ESC_MANDELBROT, bulbs = job->bulbs, cycles = job->cycles;
    const VF r2 = SET1(v->r2max), jcr = SET1(v->c_re), jci = SET1(v->c_im), fzero = SET1(0);
    const VI one = ISET1(1), vmax = ISET1((int)max_iter);
    uint32_t *const counts = job->counts;
    float *const smooth = job->smooth;
    VF zr[NV], zi[NV], cr[NV], ci[NV], sr[NV], si[NV];
    VI cnt[NV], pos[NV], birth[NV];
    VK act[NV], valid[NV], cyc[NV];
    __m512i acc_sum = _mm512_setzero_si512(), acc_exec = _mm512_setzero_si512();
    uint64_t feed, feed_end, batches = 0, nbulb = 0, ncycle = 0;
    uint32_t col, row, y_row = UINT32_MAX, checks = 0;
    E5_REAL y_val = 0;
    int have_feed = 1;
    struct E5_CAT(smooth_batch_, E5_SFX) sb;

    feed = tile * job->tile_size;
    feed_end = feed + job->tile_size < job->nsamples ? feed + job->tile_size : job->nsamples;
    col = (uint32_t)(feed % w);
    row = (uint32_t)(feed / w);
    if (smooth)
        E5_CAT(smooth_batch_init_, E5_SFX)(&sb, v, smooth);
#pragma GCC unroll 16
    for (int q = 0; q < NV; q++) {
        zr[q] = zi[q] = sr[q] = si[q] = fzero;
        cr[q] = jcr;
        ci[q] = jci;
        cnt[q] = pos[q] = birth[q] = IZERO;
        act[q] = valid[q] = cyc[q] = 0;
    }

    for (;;) {
        unsigned anyvalid = 0;

        /* Settle the lanes that escaped, reached max_iter or were found cycling, then give every
         * free lane the next sample. */
#pragma GCC unroll 16
        for (int q = 0; q < NV; q++) {
            VK done = (VK)(valid[q] & ((VK)~act[q] | IGE(valid[q], cnt[q], vmax))) | cyc[q];
            VK fill;

            if (done) {
                VI n = IMIN(cnt[q], vmax);

                ACC64(acc_exec, done, n);
                n = IMOV(n, cyc[q], vmax);       /* a cycling orbit never escapes */
                ACC64(acc_sum, done, n);
                ncycle += (unsigned)__builtin_popcount((unsigned)cyc[q]);
                if (counts)
                    ISCATTER(counts, done, pos[q], n);
                if (smooth) {
                    VK esc = ILT((VK)(done & (VK)~cyc[q]), cnt[q], vmax);
                    VK inside = (VK)(done & (VK)~esc);

                    if (inside)
                        FSCATTER(smooth, inside, pos[q], FSET1_F32(-1.0f));
                    if (esc)
                        E5_FN(smooth_add)(&sb, esc, pos[q], n, zr[q], zi[q], cr[q], ci[q]);
                }
                valid[q] &= (VK)~done;
                act[q] &= (VK)~done;
                cyc[q] = 0;
            }
            fill = (VK)~valid[q];
            while (fill) {
                unsigned nf, take;
                uint64_t avail;
                VK tm, keep;
                VF x0, y0;
                VI p0;

                if (feed == feed_end) {
                    if (have_feed) {
                        have_feed = ecpu_claim_more(engine, job, &tile, aborted);
                        if (have_feed) {
                            feed = tile * job->tile_size;
                            feed_end = feed + job->tile_size < job->nsamples
                                           ? feed + job->tile_size
                                           : job->nsamples;
                            col = (uint32_t)(feed % w);
                            row = (uint32_t)(feed / w);
                        }
                    }
                    if (feed == feed_end)
                        break;                   /* no more work: the lanes stay parked */
                }
                if (row != y_row) {
                    y_row = row;
                    y_val = E5_CAT(esc_y_, E5_SFX)(v, job->rect_y + row);
                }
                /* The next samples of the current row, as many as there are free lanes. */
                nf = (unsigned)__builtin_popcount((unsigned)fill);
                avail = feed_end - feed;
                take = nf;
                if (avail < take)
                    take = (unsigned)avail;
                if (w - col < take)
                    take = w - col;
                tm = take == nf ? fill : (VK)low_bits((unsigned)fill, take);
                x0 = EXPLOAD(tm, xtab + col);
                y0 = SET1(y_val);
                p0 = IEXP(tm, IADD(ISET1((int)feed), IIOTA));
                keep = tm;
                if (mandel) {
                    if (bulbs) {
                        /* Samples in the cardioid or the bulb are written out and never
                         * take a lane; their lanes stay free for the next samples. */
                        VK b = (VK)(BULBS(x0, y0) & tm);

                        if (b) {
                            ACC64(acc_sum, b, vmax);
                            nbulb += (unsigned)__builtin_popcount((unsigned)b);
                            if (counts)
                                ISCATTER(counts, b, p0, vmax);
                            if (smooth)
                                FSCATTER(smooth, b, p0, FSET1_F32(-1.0f));
                            keep &= (VK)~b;
                        }
                    }
                    zr[q] = MOVF(zr[q], keep, fzero);
                    zi[q] = MOVF(zi[q], keep, fzero);
                    cr[q] = MOVF(cr[q], keep, x0);
                    ci[q] = MOVF(ci[q], keep, y0);
                } else {
                    zr[q] = MOVF(zr[q], keep, x0);
                    zi[q] = MOVF(zi[q], keep, y0);
                }
                sr[q] = MOVF(sr[q], keep, zr[q]);
                si[q] = MOVF(si[q], keep, zi[q]);
                cnt[q] = IMOV(cnt[q], keep, IZERO);
                pos[q] = IMOV(pos[q], keep, p0);
                birth[q] = IMOV(birth[q], keep, ISET1((int)checks));
                act[q] |= keep;
                valid[q] |= keep;
                fill &= (VK)~keep;
                feed += take;
                col += take;
                if (col == w) {
                    col = 0;
                    row++;
                }
            }
            anyvalid |= valid[q];
        }
        if (!anyvalid || *aborted)
            break;

        /* KB steps of every lane. Julia's c is the same for every lane: a broadcast constant
         * there keeps the registers for z. */
        if (mandel) {
            for (int k = 0; k < KB; k++) {
#pragma GCC unroll 16
                for (int q = 0; q < NV; q++) {
                    VF x2 = zr[q] * zr[q], y2 = zi[q] * zi[q], t = zr[q] * zi[q];

                    act[q] = CMPLE(act[q], x2 + y2, r2);
                    cnt[q] = IADDM(cnt[q], act[q], cnt[q], one);
                    zi[q] = MADD(zi[q], act[q], t + t, ci[q]);
                    zr[q] = MADD(zr[q], act[q], x2 - y2, cr[q]);
                }
            }
        } else {
            for (int k = 0; k < KB; k++) {
#pragma GCC unroll 16
                for (int q = 0; q < NV; q++) {
                    VF x2 = zr[q] * zr[q], y2 = zi[q] * zi[q], t = zr[q] * zi[q];

                    act[q] = CMPLE(act[q], x2 + y2, r2);
                    cnt[q] = IADDM(cnt[q], act[q], cnt[q], one);
                    zi[q] = MADD(zi[q], act[q], t + t, jci);
                    zr[q] = MADD(zr[q], act[q], x2 - y2, jcr);
                }
            }
        }
        batches++;
        if (batches % E5_CANCEL_POLL == 0 && ecpu_cancel_raised(job)) {
            *aborted = 1;
            break;
        }

        /* Cycle detection (Brent): a lane still active has had every z inside R, so a z
         * bit-equal to the one it saved closes a cycle and the orbit never escapes. The saved z
         * is refreshed when the lane's age in checks is a power of two (or zero). */
        if (cycles && batches % E5_CYCLE_EVERY == 0) {
            checks++;
#pragma GCC unroll 16
            for (int q = 0; q < NV; q++) {
                VK live = (VK)(act[q] & valid[q]);
                VI age = ISUB(ISET1((int)checks), birth[q]);
                VK save = ITESTN(age, ISUB(age, one));

                cyc[q] = (VK)(EQBITS(live, zr[q], sr[q]) & EQBITS(live, zi[q], si[q]));
                sr[q] = MOVF(sr[q], save, zr[q]);
                si[q] = MOVF(si[q], save, zi[q]);
            }
        }
    }
    if (smooth)
        E5_CAT(smooth_batch_flush_, E5_SFX)(&sb);
    tally->iterations += (uint64_t)_mm512_reduce_add_epi64(acc_sum);
    tally->executed += (uint64_t)_mm512_reduce_add_epi64(acc_exec);
    tally->bulb += nbulb;
    tally->cycles += ncycle;
}

#undef E5_CAT_
#undef E5_CAT
#undef E5_FN
#undef E5_SFX
#undef E5_REAL
#undef E5_NV
#undef E5_VIEW
#undef E5_XTAB
#undef VF
#undef VK
#undef VI
#undef SET1
#undef MADD
#undef CMPLE
#undef MOVF
#undef EXPLOAD
#undef CSTORE
#undef EQBITS
#undef ISET1
#undef IZERO
#undef IIOTA
#undef IADD
#undef ISUB
#undef IADDM
#undef IMIN
#undef IGE
#undef ILT
#undef IMOV
#undef IEXP
#undef ICSTORE
#undef ITESTN
#undef ISCATTER
#undef FSCATTER
#undef FSET1_F32
#undef ACC64
#undef CSTORE_POS
#undef BULBS

#endif /* E5_TEMPLATE */
