/* engine_cpu_avx2.c: the CPU engine's AVX2 lane machines, written with intrinsics: every step
 * counts every lane's escape check in an integer vector, and finished lanes are settled and
 * refilled a whole vector at a time, from lookup tables indexed by movemask bits. */
#ifndef E2_TEMPLATE

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "engine_cpu_internal.h"
#include "smooth.h"

#if defined(__x86_64__)
#include <immintrin.h>

/*
 * Why a machine of its own: engine_cpu.c's machines run unchecked blocks and settle each finished
 * lane in scalar code (replaying its saved z values, then a scalar refill). On workload A (mean 52
 * steps a sample, escapes varying wildly between neighbours) a third of the lanes finish in every
 * block, and that scalar bookkeeping took 70 % of the AVX2 machine's time (perf, fp32). Here the
 * lanes run batches of E2_BATCH steps, of one of three kinds, picked before each batch:
 *
 * - frozen (any lane whose c could bring an escaped orbit back inside R, engine_cpu.c's
 *   lane_safe_limit): every step compares |z|^2 with R^2, subtracts the all-ones mask from an
 *   integer count vector whose lanes line up with it (int32 for fp32, int64 for fp64) and blends
 *   the z update on it: an escaped lane keeps the z that escaped, keeps failing the same check
 *   and its count stops. The count is the number of checks passed: escape.h's count, once
 *   clamped to max_iter. 12 operations a step.
 * - free (every lane safe, counts only, most vectors finishing lanes, as on workload A): the
 *   same count, z unmasked: once out a safe orbit stays out (or turns inf / NaN, which fails the
 *   check too), so the passed checks still count the escape. 10 operations.
 * - unchecked (every lane safe; smooth values wanted, or few vectors finishing lanes, as on
 *   workload B): ESC_STEP alone, 7 operations, every z saved; at the batch end a vector whose
 *   z is out somewhere counts the passed checks among its saved z (they come first, as above),
 *   and the others add the whole batch. The saved z that failed first is the escaped z the
 *   smooth value needs.
 *
 * At every batch end the lanes that escaped (z out of R now), reached max_iter or were found
 * cycling are settled: counts stored lane by lane without branches (lanes not finished store to
 * a dummy), smooth values packed into the smooth batch by permutes, and the free lanes of a
 * vector get the next samples of the row at once: the k-th free lane takes sample feed + k, its x
 * from xtab[col + k] by a permute of one load (the rank of each lane among the free ones comes
 * from a table indexed by the free-lane bits).
 *
 * Exactness: the step is ESC_STEP's operations in its order, the check escape.h's
 * !(x2 + y2 <= r2max) (an ordered compare is false on NaN). Interior shortcuts are those of
 * engine_cpu.c: the cardioid / bulb test at refill (the same double operations, vector-wide) and
 * Brent's cycle detection on bit-equal z at batch ends, for lanes whose z never left R.
 */

/* Steps between the lanes' bookkeeping (settle, refill). A finished lane idles for up to this
 * many steps (half of it on average, on workload A's 52 steps a sample), but the bookkeeping of
 * a vector with finished lanes costs several steps' worth: 32 measured best on A fp32 and on B
 * (16 and 24: 5-13 % slower; only fp64 A gains, ~2 %, at 16-24). */
#define E2_BATCH 32

/* Batches between polls of the cancel flag: 16 * 32 steps of every lane, a few microseconds. */
#define E2_CANCEL_POLL 16

/* Batches between cycle checks (every 64 steps, as engine_cpu.c's 4 blocks of 16). */
#define E2_CYCLE_EVERY 2

#define E2_ATTR __attribute__((target("avx2")))

int ecpu_avx2_fits(uint64_t nsamples, uint32_t max_iter)
{
    /* fp32 positions live in int32 lanes; a count runs up to a batch past max_iter before the
     * batch-end check stops it. */
    return nsamples <= INT32_MAX && max_iter <= UINT32_MAX - 2 * E2_BATCH;
}

/* e2_rank[m][l]: the number of set bits of m below bit l, i.e. which of the free lanes m lane l
 * is (for lanes in m). A compile-time table: 256 masks of 8 lanes. */
#define E2_POP8(x)                                                                                \
    (((x) & 1) + ((x) >> 1 & 1) + ((x) >> 2 & 1) + ((x) >> 3 & 1) + ((x) >> 4 & 1) +             \
     ((x) >> 5 & 1) + ((x) >> 6 & 1) + ((x) >> 7 & 1))
#define E2_RANKS(m)                                                                               \
    {E2_POP8((m) & 0), E2_POP8((m) & 1), E2_POP8((m) & 3), E2_POP8((m) & 7),                      \
     E2_POP8((m) & 15), E2_POP8((m) & 31), E2_POP8((m) & 63), E2_POP8((m) & 127)}
#define E2_R4(m) E2_RANKS(m), E2_RANKS((m) + 1), E2_RANKS((m) + 2), E2_RANKS((m) + 3)
#define E2_R16(m) E2_R4(m), E2_R4((m) + 4), E2_R4((m) + 8), E2_R4((m) + 12)
#define E2_R64(m) E2_R16(m), E2_R16((m) + 16), E2_R16((m) + 32), E2_R16((m) + 48)
static const uint8_t e2_rank[256][8] __attribute__((aligned(64))) = {
    E2_R64(0), E2_R64(64), E2_R64(128), E2_R64(192)};
#undef E2_POP8
#undef E2_RANKS
#undef E2_R4
#undef E2_R16
#undef E2_R64

/* e2_comp[m][k]: the lane of the k-th set bit of m (k < popcount(m); 0 past it): a permute by
 * it packs the lanes m to the front. Filled once, by comp_init. */
static uint8_t e2_comp[256][8] __attribute__((aligned(64)));
static pthread_once_t e2_comp_once = PTHREAD_ONCE_INIT;

static void comp_init(void)
{
    for (unsigned m = 0; m < 256; m++)
        for (unsigned l = 0, k = 0; l < 8; l++)
            if (m >> l & 1)
                e2_comp[m][k++] = (uint8_t)l;
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

/* engine_cpu.c's in_main_bulbs for 4 lanes: the same double operations in the same order, so
 * exactly the same samples take the shortcut. Returns the lanes' bits. */
E2_ATTR static inline unsigned bulbs_pd(__m256d x, __m256d y)
{
    const double r = 1.0 - ECPU_BULB_MARGIN;
    const __m256d one = _mm256_set1_pd(1.0), rr = _mm256_set1_pd(r * r);
    __m256d y2 = y * y, bx = x + one, a, b, m, wr, wi, bulb, box, card;

    bulb = _mm256_cmp_pd(_mm256_set1_pd(16.0) * (bx * bx + y2), rr, _CMP_LE_OQ);
    box = _mm256_and_pd(
        _mm256_and_pd(_mm256_cmp_pd(x, _mm256_set1_pd(-0.75), _CMP_GE_OQ),
                      _mm256_cmp_pd(x, _mm256_set1_pd(0.375), _CMP_LE_OQ)),
        _mm256_cmp_pd(y2, _mm256_set1_pd(0.65 * 0.65), _CMP_LE_OQ));
    a = one - _mm256_set1_pd(4.0) * x;
    b = _mm256_set1_pd(-4.0) * y;
    m = _mm256_sqrt_pd(a * a + b * b);
    wr = _mm256_sqrt_pd(_mm256_set1_pd(0.5) * (m + a));
    wi = _mm256_sqrt_pd(_mm256_set1_pd(0.5) * (m - a));
    card = _mm256_cmp_pd((one - wr) * (one - wr) + wi * wi, rr, _CMP_LE_OQ);
    return (unsigned)_mm256_movemask_pd(_mm256_or_pd(bulb, _mm256_and_pd(box, card)));
}

/* The lanes of c = (x, y) that engine_cpu.c's refill calls unsafe: !(x*x + y*y <= safe_c2), in
 * double (exact products of working-precision values). */
E2_ATTR static inline unsigned unsafe_pd(__m256d x, __m256d y, double safe_c2)
{
    return (unsigned)_mm256_movemask_pd(
        _mm256_cmp_pd(x * x + y * y, _mm256_set1_pd(safe_c2), _CMP_NLE_UQ));
}

#define E2_TEMPLATE 1

/* fp32: 8 lanes a vector; counts, positions and cycle ages in int32 lanes. */
#define E2_SFX f32
#define E2_REAL float
#define E2_IT int32_t
#define E2_UT uint32_t
#define E2_NV 5
#define E2_VIEW(job) (&(job)->v32)
#define E2_XTAB(job) ((job)->x32)
typedef __m256 e2_vf_f32;
#define VF e2_vf_f32
#define SET1(x) _mm256_set1_ps(x)
#define LOADF(p) _mm256_loadu_ps(p)
#define STOREF(p, a) _mm256_storeu_ps(p, a)
#define CMPLE(a, b) _mm256_cmp_ps(a, b, _CMP_LE_OQ)
#define BLENDF(a, b, m) _mm256_blendv_ps(a, b, m)
#define MOVMSK(m) ((unsigned)_mm256_movemask_ps(m))
#define F2I(a) _mm256_castps_si256(a)
#define I2F(a) _mm256_castsi256_ps(a)
#define ISET1(x) _mm256_set1_epi32((int32_t)(x))
#define ISUB(a, b) _mm256_sub_epi32(a, b)
#define IADD(a, b) _mm256_add_epi32(a, b)
#define IEQ(a, b) _mm256_cmpeq_epi32(a, b)
#define IMIN(a, b) _mm256_min_epu32(a, b)
#define IMUL(a, k) _mm256_mullo_epi32(a, _mm256_set1_epi32(k))
#define IIOTA _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
/* Lanes with count >= max_iter (unsigned): max(cnt, vmax) == cnt. */
#define IGEBITS(c, vmax, vmaxm1) ((void)(vmaxm1), MOVMSK(I2F(IEQ(_mm256_max_epu32(c, vmax), c))))
/* The rank of every lane among the lanes m, and x[col + rank] for every lane. */
#define RANKV(m) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)e2_rank[m]))
#define COMPV(m) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)e2_comp[m]))
#define GATHERF(base, idx) _mm256_i32gather_ps(base, idx, 4)
/* The counts (lanes already packed) into n[0..7]; the positions, widened, into pos[0..7]. */
#define STORE_N(n, v) _mm256_storeu_si256((__m256i *)(n), v)
#define STORE_POS(pos, v)                                                                         \
    do {                                                                                          \
        _mm256_storeu_si256((__m256i *)(pos), _mm256_cvtepu32_epi64(_mm256_castsi256_si128(v)));  \
        _mm256_storeu_si256((__m256i *)(pos) + 1,                                                 \
                            _mm256_cvtepu32_epi64(_mm256_extracti128_si256(v, 1)));               \
    } while (0)
#define EXPAND(v, r) _mm256_permutevar8x32_ps(v, r)
#define LANEBITS _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128)
/* acc (4 x u64) += the 8 u32 lanes of n. */
#define ACC64(acc, n)                                                                             \
    (acc = _mm256_add_epi64(                                                                      \
         acc, _mm256_add_epi64(_mm256_cvtepu32_epi64(_mm256_castsi256_si128(n)),                  \
                               _mm256_cvtepu32_epi64(_mm256_extracti128_si256(n, 1)))))
#define BULBS(x, y)                                                                               \
    (bulbs_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)),                                         \
              _mm256_cvtps_pd(_mm256_castps256_ps128(y))) |                                       \
     bulbs_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)),                                       \
              _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)))                                       \
         << 4)
#define UNSAFE(x, y, lim)                                                                         \
    (unsafe_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)),                                        \
               _mm256_cvtps_pd(_mm256_castps256_ps128(y)), lim) |                                 \
     unsafe_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)),                                      \
               _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)), lim)                                 \
         << 4)
#include "engine_cpu_avx2.c"

/* fp64: 4 lanes a vector; counts, positions and ages in int64 lanes, lined up with the masks. */
#define E2_SFX f64
#define E2_REAL double
#define E2_IT int64_t
#define E2_UT uint64_t
#define E2_NV 5
#define E2_VIEW(job) (&(job)->v64)
#define E2_XTAB(job) ((job)->x64)
typedef __m256d e2_vf_f64;
#define VF e2_vf_f64
#define SET1(x) _mm256_set1_pd(x)
#define LOADF(p) _mm256_loadu_pd(p)
#define STOREF(p, a) _mm256_storeu_pd(p, a)
#define CMPLE(a, b) _mm256_cmp_pd(a, b, _CMP_LE_OQ)
#define BLENDF(a, b, m) _mm256_blendv_pd(a, b, m)
#define MOVMSK(m) ((unsigned)_mm256_movemask_pd(m))
#define F2I(a) _mm256_castpd_si256(a)
#define I2F(a) _mm256_castsi256_pd(a)
#define ISET1(x) _mm256_set1_epi64x((int64_t)(x))
#define ISUB(a, b) _mm256_sub_epi64(a, b)
#define IADD(a, b) _mm256_add_epi64(a, b)
#define IEQ(a, b) _mm256_cmpeq_epi64(a, b)
#define IMIN(a, b) _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(a, b))
#define IMUL(a, k) _mm256_mul_epu32(a, _mm256_set1_epi64x(k))    /* a < 2^32 */
#define IIOTA _mm256_setr_epi64x(0, 1, 2, 3)
#define IGEBITS(c, vmax, vmaxm1) MOVMSK(I2F(_mm256_cmpgt_epi64(c, vmaxm1)))
/* Ranks as int64 lanes; the permute moves 32-bit halves, lane l's pair (2 rank, 2 rank + 1). */
#define RANKV(m) _mm256_cvtepu8_epi64(_mm_cvtsi32_si128((int)e2_rank4(e2_rank[m])))
#define COMPV(m) _mm256_cvtepu8_epi64(_mm_cvtsi32_si128((int)e2_rank4(e2_comp[m])))
#define GATHERF(base, idx) _mm256_i64gather_pd(base, idx, 8)
#define STORE_N(n, v)                                                                             \
    _mm_storeu_si128((__m128i *)(n), _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(          \
                                         v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6))))
#define STORE_POS(pos, v) _mm256_storeu_si256((__m256i *)(pos), v)
#define EXPAND(v, r)                                                                              \
    _mm256_castps_pd(_mm256_permutevar8x32_ps(                                                    \
        _mm256_castpd_ps(v),                                                                      \
        _mm256_or_si256(_mm256_slli_epi64(r, 1),                                                  \
                        _mm256_slli_epi64(_mm256_add_epi64(_mm256_slli_epi64(r, 1),               \
                                                           _mm256_set1_epi64x(1)),                \
                                          32))))
#define LANEBITS _mm256_setr_epi64x(1, 2, 4, 8)
#define ACC64(acc, n) (acc = _mm256_add_epi64(acc, n))
#define BULBS(x, y) bulbs_pd(x, y)
#define UNSAFE(x, y, lim) unsafe_pd(x, y, lim)
/* The first 4 bytes of a table row (a 4-lane mask's entries) as a uint32_t. */
static inline uint32_t e2_rank4(const uint8_t *row)
{
    uint32_t r;

    memcpy(&r, row, sizeof(r));
    return r;
}
#include "engine_cpu_avx2.c"

#undef E2_TEMPLATE

#endif /* __x86_64__ */

#else /* E2_TEMPLATE */

/*
 * Template part: one machine, for the precision of E2_SFX. NV vectors of lanes are in flight
 * (the latency chain of a step, about 12 cycles, is covered by NV vectors of ~3 cycles' work
 * each; 5 measured best, 4 and 6 a few % slower: 16 ymm registers hold z and the count of 5,
 * and the bookkeeping grows with NV). Per lane: z, c (Mandelbrot; Julia's c is a
 * broadcast constant), the count, the sample's position in the job, and for cycle detection the
 * saved z and the check count at refill. Per vector, as lane bits: valid (the lane holds a
 * sample), unsafe (its c may bring an escaped orbit back), and from the last batch end out (z is
 * outside R), ge (count >= max_iter), cyc (found cycling).
 */
#define E2_CAT_(a, b) a##b
#define E2_CAT(a, b) E2_CAT_(a, b)

/* Files the escaped lanes esc of vector q with the smooth batch b, all at once, and writes -1
 * for its interior lanes inner. pos: the lanes' positions; n, z, c: their counts, z and c.
 * After an unchecked batch (unchecked != 0) a lane's escaped z is the saved one of step bc
 * (the checks it passed in the batch) from hr / hi (the [KB][NV] arrays), or z itself when
 * bc == KB. */
E2_ATTR static inline void E2_CAT(smooth_settle_, E2_SFX)(
    struct E2_CAT(smooth_batch_, E2_SFX) *b, int unchecked, int q, unsigned esc, unsigned inner,
    const E2_IT *pos, __m256i n, VF zr, VF zi, VF cr, VF ci, __m256i bc, const VF *hr,
    const VF *hi)
{
    enum { W = sizeof(VF) / sizeof(E2_REAL), NV = E2_NV, KB = E2_BATCH };
    uint32_t len;
    __m256i perm;

    for (; inner; inner &= inner - 1)
        b->out[pos[__builtin_ctz(inner)]] = -1.0f;
    if (!esc)
        return;
    if (unchecked) {
        const __m256i last = ISET1(KB - 1);
        __m256i k = IMIN(bc, last), all_in = IEQ(bc, ISET1(KB));
        /* Element (k, q, lane) of the [KB][NV] arrays of vectors. */
        __m256i idx = IADD(IMUL(k, NV * W), IADD(ISET1(q * W), IIOTA));

        zr = BLENDF(GATHERF((const E2_REAL *)hr, idx), zr, I2F(all_in));
        zi = BLENDF(GATHERF((const E2_REAL *)hi, idx), zi, I2F(all_in));
    }
    if (b->len + W > SMOOTH_BATCH)
        E2_CAT(smooth_batch_flush_, E2_SFX)(b);
    /* Whole vectors stored: the entries past the lanes esc are junk that the next store or
     * the pass's padding overwrites. */
    len = b->len;
    perm = COMPV(esc);
    STOREF(b->zr + len, EXPAND(zr, perm));
    STOREF(b->zi + len, EXPAND(zi, perm));
    STOREF(b->cr + len, EXPAND(cr, perm));
    STOREF(b->ci + len, EXPAND(ci, perm));
    STORE_N(b->n + len, F2I(EXPAND(I2F(n), perm)));
    STORE_POS(b->pos + len, F2I(EXPAND(I2F(_mm256_load_si256((const __m256i *)pos)), perm)));
    b->len = len + (uint32_t)__builtin_popcount(esc);
}
#define smooth_settle E2_CAT(smooth_settle_, E2_SFX)

E2_ATTR
void E2_CAT(ecpu_machine_, E2_CAT(E2_SFX, _avx2))(struct engine_cpu *engine, struct ecpu_job *job,
                                                   uint64_t tile, struct ecpu_tally *tally,
                                                   int *aborted)
{
    enum { W = sizeof(VF) / sizeof(E2_REAL), NV = E2_NV, KB = E2_BATCH };
    _Static_assert(KB % 2 == 0, "the unchecked batch's count runs two sums");
    const unsigned all = (1u << W) - 1;
    const E2_CAT(esc_view_, E2_SFX) *v = E2_VIEW(job);
    const E2_REAL *const xtab = E2_XTAB(job);
    const uint32_t max_iter = v->max_iter, w = job->rect_w;
    const int mandel = v->fractal == ESC_MANDELBROT, bulbs = job->bulbs, cycles = job->cycles;
    const VF r2 = SET1(v->r2max), jcr = SET1(v->c_re), jci = SET1(v->c_im), fzero = SET1(0);
    const __m256i vmax = ISET1(max_iter), vmaxm1 = ISET1((E2_IT)max_iter - 1), ione = ISET1(1);
    const __m256i lanebits = LANEBITS;
/* The lanes m (bits) as an all-ones mask vector. */
#define LANEMASK(m) IEQ(_mm256_and_si256(ISET1(m), lanebits), lanebits)
    uint32_t *const counts = job->counts;
    float *const smooth = job->smooth;
    /* Julia: every lane has the view's c, so one test says whether all lanes are safe. */
    const int julia_unsafe =
        !mandel && !((double)v->c_re * v->c_re + (double)v->c_im * v->c_im <= job->safe_c2);
    VF zr[NV], zi[NV], cr[NV], ci[NV], sr[NV], si[NV];
    __m256i cnt[NV], pos[NV], birth[NV], bc[NV];
    VF hr[KB][NV], hi[KB][NV];           /* unchecked batches: the z before each step */
    unsigned valid[NV], unsafe[NV], out[NV], ge[NV], cyc[NV], nscan = NV;
    enum { E2_FROZEN, E2_FREE, E2_UNCHECKED } mode = E2_FREE;
    __m256i acc_sum = _mm256_setzero_si256(), acc_exec = _mm256_setzero_si256();
    uint64_t feed, feed_end, batches = 0, nbulb = 0, ncycle = 0, sum = 0;
    uint32_t col, row, y_row = UINT32_MAX, sink;
    E2_UT checks = 0;            /* unsigned: ages count modulo 2^bits, which they never reach */
    E2_REAL y_val = 0;
    int have_feed = 1;
    struct E2_CAT(smooth_batch_, E2_SFX) sb;

    feed = tile * job->tile_size;
    feed_end = feed + job->tile_size < job->nsamples ? feed + job->tile_size : job->nsamples;
    col = (uint32_t)(feed % w);
    row = (uint32_t)(feed / w);
    if (smooth) {
        pthread_once(&e2_comp_once, comp_init);
        E2_CAT(smooth_batch_init_, E2_SFX)(&sb, v, smooth);
    }
    for (int q = 0; q < NV; q++) {
        zr[q] = zi[q] = sr[q] = si[q] = fzero;
        cr[q] = jcr;
        ci[q] = jci;
        cnt[q] = pos[q] = birth[q] = bc[q] = _mm256_setzero_si256();
        valid[q] = unsafe[q] = out[q] = ge[q] = cyc[q] = 0;
    }

    for (;;) {
        unsigned anyvalid = 0, anyunsafe = 0;

        /* Settle the lanes that escaped, reached max_iter or were found cycling, then give every
         * free lane the next sample. */
        for (int q = 0; q < NV; q++) {
            unsigned done = (valid[q] & (out[q] | ge[q])) | cyc[q];
            unsigned fill;

            if (done) {
                E2_IT nb[W] __attribute__((aligned(32))), pb[W] __attribute__((aligned(32)));
                const __m256i dm = LANEMASK(done);
                __m256i n = IMIN(cnt[q], vmax);

                ACC64(acc_exec, _mm256_and_si256(n, dm));
                if (cyc[q])
                    n = _mm256_blendv_epi8(n, vmax, LANEMASK(cyc[q]));   /* never escapes */
                ACC64(acc_sum, _mm256_and_si256(n, dm));
                _mm256_store_si256((__m256i *)nb, n);
                _mm256_store_si256((__m256i *)pb, pos[q]);
                /* Every lane stores, to its sample or (not finished) to a dummy, the address
                 * picked without a branch: a data-dependent branch or loop over the set bits
                 * costs about a mispredict per vector. */
                if (counts) {
#pragma GCC unroll 8
                    for (unsigned l = 0; l < W; l++) {
                        const uintptr_t sel = 0 - (uintptr_t)(done >> l & 1);
                        uint32_t *dst = (uint32_t *)(((uintptr_t)(counts + pb[l]) & sel) |
                                                     ((uintptr_t)&sink & ~sel));
                        *dst = (uint32_t)nb[l];
                    }
                }
                ncycle += (unsigned)__builtin_popcount(cyc[q]);
                if (smooth)
                    smooth_settle(&sb, mode == E2_UNCHECKED, q, done & ~(ge[q] | cyc[q]),
                                  done & (ge[q] | cyc[q]), pb, n, zr[q], zi[q], cr[q], ci[q],
                                  bc[q], &hr[0][0], &hi[0][0]);
                valid[q] &= ~done;
                cyc[q] = 0;
            }
            fill = ~valid[q] & all;
            while (fill) {
                unsigned nf, take, tm, keep;
                uint64_t avail;
                __m256i r, p0;
                VF x0, y0, m;

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
                        break;                   /* no more work: the lanes stay free */
                }
                if (row != y_row) {
                    y_row = row;
                    y_val = E2_CAT(esc_y_, E2_SFX)(v, job->rect_y + row);
                }
                /* The next samples of the current row, as many as there are free lanes. */
                nf = (unsigned)__builtin_popcount(fill);
                avail = feed_end - feed;
                take = nf;
                if (avail < take)
                    take = (unsigned)avail;
                if (w - col < take)
                    take = w - col;
                tm = take == nf ? fill : low_bits(fill, take);
                /* xtab has W readable entries past the row (engine_cpu.c pads it), so the load
                 * never leaves it; lanes outside tm get junk that the blends drop. */
                r = RANKV(tm);
                x0 = EXPAND(LOADF(xtab + col), r);
                y0 = SET1(y_val);
                p0 = IADD(ISET1(feed), r);
                keep = tm;
                if (mandel && bulbs) {
                    /* Samples in the cardioid or the bulb are written out and never take a
                     * lane; their lanes stay free for the next samples. */
                    unsigned b = BULBS(x0, y0) & tm;

                    if (b) {
                        E2_IT pp[W] __attribute__((aligned(32)));

                        _mm256_store_si256((__m256i *)pp, p0);
                        for (unsigned bits = b; bits; bits &= bits - 1) {
                            unsigned l = (unsigned)__builtin_ctz(bits);

                            if (counts)
                                counts[pp[l]] = max_iter;
                            if (smooth)
                                smooth[pp[l]] = -1.0f;
                        }
                        sum += (uint64_t)max_iter * (unsigned)__builtin_popcount(b);
                        nbulb += (unsigned)__builtin_popcount(b);
                        keep &= ~b;
                    }
                }
                if (keep) {
                    m = I2F(LANEMASK(keep));
                    if (mandel) {
                        zr[q] = BLENDF(zr[q], fzero, m);
                        zi[q] = BLENDF(zi[q], fzero, m);
                        cr[q] = BLENDF(cr[q], x0, m);
                        ci[q] = BLENDF(ci[q], y0, m);
                        unsafe[q] = (unsafe[q] & ~keep) | (UNSAFE(x0, y0, job->safe_c2) & keep);
                    } else {
                        zr[q] = BLENDF(zr[q], x0, m);
                        zi[q] = BLENDF(zi[q], y0, m);
                    }
                    sr[q] = BLENDF(sr[q], zr[q], m);
                    si[q] = BLENDF(si[q], zi[q], m);
                    cnt[q] = _mm256_andnot_si256(F2I(m), cnt[q]);
                    pos[q] = _mm256_blendv_epi8(pos[q], p0, F2I(m));
                    birth[q] = _mm256_blendv_epi8(birth[q], ISET1(checks), F2I(m));
                    valid[q] |= keep;
                    fill &= ~keep;
                }
                feed += take;
                col += take;
                if (col == w) {
                    col = 0;
                    row++;
                }
            }
            anyvalid |= valid[q];
            anyunsafe |= valid[q] & unsafe[q];
        }
        if (!anyvalid || *aborted)
            break;

        /* KB steps of every lane. Julia's c is the same for every lane: a broadcast constant
         * there keeps the registers for z. Frozen: the z update is blended on the check, so an
         * escaped lane keeps its escaped z; free: it is not; unchecked: no check at all, every z
         * saved for the batch end (see the top of this file). */
#define E2_STEPS(CR, CI, MODE)                                                                    \
    for (int k = 0; k < KB; k++) {                                                                \
        _Pragma("GCC unroll 16") for (int q = 0; q < NV; q++)                                     \
        {                                                                                         \
            VF x2 = zr[q] * zr[q], y2 = zi[q] * zi[q], t = zr[q] * zi[q], in;                     \
            if (MODE == E2_UNCHECKED) {                                                           \
                hr[k][q] = zr[q];                                                                 \
                hi[k][q] = zi[q];                                                                 \
            } else {                                                                              \
                in = CMPLE(x2 + y2, r2);                                                          \
                cnt[q] = ISUB(cnt[q], F2I(in));                                                   \
            }                                                                                     \
            if (MODE == E2_FROZEN) {                                                              \
                zi[q] = BLENDF(zi[q], t + t + CI, in);                                            \
                zr[q] = BLENDF(zr[q], x2 - y2 + CR, in);                                          \
            } else {                                                                              \
                zi[q] = t + t + CI;                                                               \
                zr[q] = x2 - y2 + CR;                                                             \
            }                                                                                     \
        }                                                                                         \
    }
        /* Unsafe lanes need the frozen z; with smooth values the unchecked batch keeps the z
         * that escaped (in the saved ones) where the free one loses it; for counts only the
         * free batch is the cheaper one when most vectors have lanes to scan (workload A). */
        mode = julia_unsafe || anyunsafe ? E2_FROZEN
               : smooth || nscan * 2 <= NV ? E2_UNCHECKED
                                           : E2_FREE;
        if (mode == E2_FROZEN) {
            if (mandel)
                E2_STEPS(cr[q], ci[q], E2_FROZEN)
            else
                E2_STEPS(jcr, jci, E2_FROZEN)
        } else if (mode == E2_FREE) {
            if (mandel)
                E2_STEPS(cr[q], ci[q], E2_FREE)
            else
                E2_STEPS(jcr, jci, E2_FREE)
        } else {
            if (mandel)
                E2_STEPS(cr[q], ci[q], E2_UNCHECKED)
            else
                E2_STEPS(jcr, jci, E2_UNCHECKED)
        }
#undef E2_STEPS
        batches++;
        if (batches % E2_CANCEL_POLL == 0 && ecpu_cancel_raised(job)) {
            *aborted = 1;
            break;
        }

        /* Which lanes are done: z outside R now (an escaped lane's z stays out, frozen or not),
         * or the count at max_iter. After an unchecked batch the counts are brought up to date
         * first: all KB checks passed where z is still inside (safe lanes stay out once out);
         * else the passed checks among the saved z, which come first. */
        nscan = 0;
        for (int q = 0; q < NV; q++) {
            out[q] = ~MOVMSK(CMPLE(zr[q] * zr[q] + zi[q] * zi[q], r2)) & all;
            if (mode == E2_UNCHECKED) {
                if (out[q] & valid[q]) {
                    __m256i c0 = _mm256_setzero_si256(), c1 = c0;

                    /* Two sums halve the dependency chain. */
                    for (int k = 0; k < KB; k += 2) {
                        c0 = ISUB(c0, F2I(CMPLE(hr[k][q] * hr[k][q] + hi[k][q] * hi[k][q], r2)));
                        c1 = ISUB(c1, F2I(CMPLE(hr[k + 1][q] * hr[k + 1][q] +
                                                     hi[k + 1][q] * hi[k + 1][q],
                                                 r2)));
                    }
                    bc[q] = IADD(c0, c1);
                } else {
                    bc[q] = ISET1(KB);
                }
                cnt[q] = IADD(cnt[q], bc[q]);
            }
            nscan += (out[q] & valid[q]) != 0;
            ge[q] = IGEBITS(cnt[q], vmax, vmaxm1);
        }

        /* Cycle detection (Brent): a lane whose z is inside R now has had every z inside R, so a
         * z bit-equal to the one it saved closes a cycle and the orbit never escapes. The saved
         * z is refreshed when the lane's age in checks is a power of two (or zero). */
        if (cycles && batches % E2_CYCLE_EVERY == 0) {
            checks++;
            for (int q = 0; q < NV; q++) {
                unsigned live = valid[q] & ~out[q];
                __m256i age = ISUB(ISET1(checks), birth[q]);
                VF save = I2F(IEQ(_mm256_and_si256(age, ISUB(age, ione)), _mm256_setzero_si256()));

                cyc[q] = live & MOVMSK(I2F(IEQ(F2I(zr[q]), F2I(sr[q])))) &
                         MOVMSK(I2F(IEQ(F2I(zi[q]), F2I(si[q]))));
                sr[q] = BLENDF(sr[q], zr[q], save);
                si[q] = BLENDF(si[q], zi[q], save);
            }
        }
    }
    if (smooth)
        E2_CAT(smooth_batch_flush_, E2_SFX)(&sb);
    {
        uint64_t a[4], b[4];

        _mm256_storeu_si256((__m256i *)a, acc_sum);
        _mm256_storeu_si256((__m256i *)b, acc_exec);
        tally->iterations += sum + a[0] + a[1] + a[2] + a[3];
        tally->executed += b[0] + b[1] + b[2] + b[3];
    }
    tally->bulb += nbulb;
    tally->cycles += ncycle;
}

#undef smooth_settle
#undef E2_CAT_
#undef E2_CAT
#undef E2_SFX
#undef E2_REAL
#undef E2_IT
#undef E2_UT
#undef E2_NV
#undef E2_VIEW
#undef E2_XTAB
#undef VF
#undef SET1
#undef LOADF
#undef STOREF
#undef CMPLE
#undef BLENDF
#undef MOVMSK
#undef F2I
#undef I2F
#undef ISET1
#undef ISUB
#undef IADD
#undef IEQ
#undef IMIN
#undef IMUL
#undef IIOTA
#undef IGEBITS
#undef RANKV
#undef COMPV
#undef GATHERF
#undef STORE_N
#undef STORE_POS
#undef EXPAND
#undef LANEBITS
#undef LANEMASK
#undef ACC64
#undef BULBS
#undef UNSAFE

#endif /* E2_TEMPLATE */
