/* color.c: smooth colouring: palette lookup by name, the palette coordinate of a smooth value,
 * linear interpolation between stops in sRGB, and the ss x ss supersample reduction. The row
 * functions work on blocks of samples in loops the compiler vectorises, built twice (AVX2 and
 * baseline x86-64, picked at run time) from one source, so both give the same bytes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "color.h"
#include "cpu_isa.h"
#include "err.h"
#include "palettes.h"

/* Buckets of the segment index: bucket b holds the segment that contains t = b / SEG_BUCKETS, so a
 * lookup starts there and needs at most one step for any palette whose stops are at least a bucket
 * apart (all built-in ones). A power of two keeps t * SEG_BUCKETS exact. */
#define SEG_BUCKETS 512

/* Samples per block: every vectorised loop runs over exactly BLOCK elements (a constant trip count
 * is what GCC's -O2 vectoriser accepts); a partial block is padded, and a run of fewer than
 * SHORT_RUN samples (a narrow image's row) takes the scalar path instead. Against 64, 128 was
 * 1-5 % faster on a 256x256 tile and 256 5-8 %, but 256 wastes more on rows that are not a
 * multiple of it (1920 = 7.5 blocks) and needs ~40 KiB of stack. */
#define BLOCK 128
#define SHORT_RUN (BLOCK / 4)

/* Reads and writes a double's bits; memcpy is how C11 spells it and compiles to nothing. */
static inline uint64_t bits_of(double x)
{
    uint64_t b;

    memcpy(&b, &x, sizeof(b));
    return b;
}

static inline double double_of(uint64_t b)
{
    double x;

    memcpy(&x, &b, sizeof(x));
    return x;
}

/* ---------------------------------------------------------------------------------------------
 * The natural logarithm of the log-scaled pass. libm's log() costs about half of a log-scaled
 * row and is not the same function on every host (its last bit depends on the libm version), so
 * the palette coordinate uses this one, which is nearly correctly rounded and cheap to vectorise.
 *
 * Method (table-driven, in the manner of Tang's logarithm; derived for this file):
 *   x = 2^e * m with m in [1, 2) taken from the bits. j = the multiple of 1/128 nearest to m - 1
 *   (0..128), and invc_j ~ 1 / (1 + j/128) rounded to 12 significant bits (exactly 1 for j = 0
 *   and 1/2 for j = 128). Then
 *       ln x = e*ln2 + T_j + log1p(r),   r = m*invc_j - 1,   T_j = -ln(invc_j).
 *   r is exact: in the domain below m has at most 41 significant bits (or invc_j = 1), so
 *   m*invc_j fits in 53 bits, is a multiple of 2^-52 within 1% of 1, and subtracting 1 is exact.
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
 *   LN2_HI and LN2_LO are the same split of ln 2 (= row 128). test_color.c checks the rounding
 *   through color_coordinate() against logl() in every row (test_coordinate_log_rounding).
 * Domain: x = 1 + (double)v for a float v >= 0 (or an integer v < 2^32), which is every call
 *   here: then x >= 1 (e >= 0, as the Fast2Sum needs), and x < 1 + 2^-8 (so j = 0) or v >= 2^-8
 *   and m carries at most 32 bits. Elsewhere m*invc_j may round and the result is off by up to
 *   about an ulp. */

#define LN_TABLE_BITS 7      /* 128 intervals of m */
#define LN2_HI 0x1.62e42fefa38p-1
#define LN2_LO 0x1.ef35793c7673p-45

static const struct ln_row {
    double invc;   /* ~1 / (1 + j/128), 12 significant bits */
    double t_hi;   /* -ln(invc), on the grid of 2^-42 */
    double t_lo;   /* -ln(invc) - t_hi */
} ln_table[(1 << LN_TABLE_BITS) + 1] = {
    {0x1p0, 0.0, 0.0},
    {0x1.fcp-1, 0x1.010157588p-7, 0x1.bce251998b506p-44},
    {0x1.f82p-1, 0x1.fbea8b13cp-7, 0x1.ec927b17e4e13p-50},
    {0x1.f44p-1, 0x1.7c61b1cf6p-6, -0x1.08fc8f849a447p-45},
    {0x1.f08p-1, 0x1.f7a9b1678p-6, 0x1.42ad9271be7d7p-45},
    {0x1.eccp-1, 0x1.39f07ba0e8p-5, 0x1.eb129d642e577p-44},
    {0x1.e92p-1, 0x1.766d923c2p-5, 0x1.ff0a82f1c24c1p-46},
    {0x1.e58p-1, 0x1.b35dd9b588p-5, 0x1.d5674d6cf558ep-44},
    {0x1.e1ep-1, 0x1.f0c30c1118p-5, -0x1.caef3588b7d8p-45},
    {0x1.de6p-1, 0x1.163d6ef958p-4, -0x1.7f3b038d8e6ebp-46},
    {0x1.daep-1, 0x1.345179b63cp-4, 0x1.d4203d36150dp-44},
    {0x1.d78p-1, 0x1.518874226p-4, 0x1.30a1d96258b3ep-44},
    {0x1.d42p-1, 0x1.6ef528c058p-4, -0x1.5d462d767cadep-44},
    {0x1.d0cp-1, 0x1.8c985e9bap-4, -0x1.37c377e430036p-44},
    {0x1.cd8p-1, 0x1.a956d3ecacp-4, 0x1.e63794c02c4afp-44},
    {0x1.ca4p-1, 0x1.c6494a2e4p-4, 0x1.8a5e8ab20c4e6p-44},
    {0x1.c72p-1, 0x1.e2507702bp-4, -0x1.f897980522249p-45},
    {0x1.c4p-1, 0x1.fe89139dbcp-4, 0x1.56594d82f7a82p-44},
    {0x1.c0ep-1, 0x1.0d79e7cd48p-3, 0x1.cb422847849e4p-44},
    {0x1.bdep-1, 0x1.1b35ae3b82p-3, -0x1.20a2e76016a9dp-46},
    {0x1.bacp-1, 0x1.299d30c606p-3, 0x1.d4d0079dc08d9p-44},
    {0x1.b7ep-1, 0x1.36f4c27578p-3, -0x1.4d9e2683a54edp-44},
    {0x1.b4ep-1, 0x1.44f8b726f8p-3, 0x1.df6a4432b9bb4p-44},
    {0x1.b2p-1, 0x1.527e5e4a1cp-3, -0x1.4e60b8d4b411dp-44},
    {0x1.af2p-1, 0x1.601b076e7ap-3, 0x1.152d7d4dfc8e5p-44},
    {0x1.ac6p-1, 0x1.6d35fee52cp-3, -0x1.f127eb4f64e1fp-45},
    {0x1.a98p-1, 0x1.7b00916516p-3, -0x1.ae75fcb067e57p-44},
    {0x1.a6ep-1, 0x1.87ad07c494p-3, -0x1.70f53c386330ap-44},
    {0x1.a42p-1, 0x1.9509aa0044p-3, 0x1.f1e675b4d35c6p-44},
    {0x1.a16p-1, 0x1.a27cc3064p-3, 0x1.d954963274bb8p-44},
    {0x1.9ecp-1, 0x1.af6895610ep-3, -0x1.148288bf7a937p-45},
    {0x1.9c2p-1, 0x1.bc69684aeep-3, 0x1.8f6d5d141f9bdp-45},
    {0x1.99ap-1, 0x1.c8df7cb9a8p-3, 0x1.eee42f58e1e6ep-44},
    {0x1.97p-1, 0x1.d60a17f904p-3, -0x1.5d6e06fc20d39p-44},
    {0x1.948p-1, 0x1.e2a877a6b2p-3, 0x1.823817787081ap-44},
    {0x1.92p-1, 0x1.ef5ade4ddp-3, -0x1.a211565bb8e11p-51},
    {0x1.8fap-1, 0x1.fb7d86eee4p-3, -0x1.1c061cdb8097bp-45},
    {0x1.8d4p-1, 0x1.03d95a1d67p-2, 0x1.a17880f236109p-44},
    {0x1.8acp-1, 0x1.0a504e97bbp-2, 0x1.03094e6690c44p-44},
    {0x1.886p-1, 0x1.107e404ab1p-2, -0x1.fb921823aafdap-48},
    {0x1.862p-1, 0x1.1661caecbap-2, -0x1.171fff9fc4abbp-44},
    {0x1.83cp-1, 0x1.1ca28c64bbp-2, -0x1.ac4f842f5566bp-46},
    {0x1.818p-1, 0x1.22981fbef8p-2, -0x1.a1421609580dap-44},
    {0x1.7f4p-1, 0x1.2896a13e08p-2, 0x1.a8ed027e16952p-44},
    {0x1.7dp-1, 0x1.2e9e2bce12p-2, 0x1.4300c128d1dc2p-45},
    {0x1.7aep-1, 0x1.34585a594cp-2, -0x1.d4d9bf230f411p-44},
    {0x1.78ap-1, 0x1.3a71c56bb5p-2, -0x1.ce772094aef7p-44},
    {0x1.768p-1, 0x1.403d086ceap-2, 0x1.e6ef574487308p-44},
    {0x1.746p-1, 0x1.4610bc29c6p-2, -0x1.e82c9f310c8e6p-46},
    {0x1.724p-1, 0x1.4becf95d98p-2, -0x1.bb33b20023a7p-44},
    {0x1.702p-1, 0x1.51d1d93104p-2, 0x1.5b0faa20d9c8ep-44},
    {0x1.6e2p-1, 0x1.5765f1749ep-2, -0x1.6532d93e0d82bp-44},
    {0x1.6c2p-1, 0x1.5d01dc49ffp-2, 0x1.740ab8cfa5ed3p-45},
    {0x1.6a2p-1, 0x1.62a5afc061p-2, 0x1.0f54a2beeff32p-45},
    {0x1.682p-1, 0x1.68518244dp-2, -0x1.3c6e803ba0773p-44},
    {0x1.662p-1, 0x1.6e056aa442p-2, 0x1.d5417249679bcp-46},
    {0x1.642p-1, 0x1.73c1800dc1p-2, -0x1.9be481157128p-45},
    {0x1.624p-1, 0x1.792955fdf4p-2, 0x1.e889b0253ca88p-44},
    {0x1.606p-1, 0x1.7e9883fa4ap-2, -0x1.401a62f035dd6p-50},
    {0x1.5e8p-1, 0x1.840f1e1266p-2, 0x1.fc03bddc7f361p-44},
    {0x1.5cap-1, 0x1.898d38a893p-2, 0x1.1f666071e2f57p-44},
    {0x1.5acp-1, 0x1.8f12e87386p-2, 0x1.63e9b6679561p-45},
    {0x1.58ep-1, 0x1.94a0428036p-2, 0x1.0e7bcb08c6b44p-44},
    {0x1.572p-1, 0x1.99d5d81306p-2, 0x1.f2041f94ec30bp-48},
    {0x1.556p-1, 0x1.9f123f4bf7p-2, -0x1.2edbfd41b7fc2p-45},
    {0x1.53ap-1, 0x1.a4558a1c9cp-2, -0x1.f70faf3f84ff8p-44},
    {0x1.51ep-1, 0x1.a99fcabdb8p-2, 0x1.1e89c5f87a311p-46},
    {0x1.502p-1, 0x1.aef113b0bcp-2, 0x1.de1e7f07adbd4p-44},
    {0x1.4e6p-1, 0x1.b44977c149p-2, -0x1.cae5e0256c925p-47},
    {0x1.4cap-1, 0x1.b9a90a06bdp-2, -0x1.308b53f5c09fdp-44},
    {0x1.4bp-1, 0x1.beacd9e272p-2, -0x1.4bac8923c3257p-44},
    {0x1.496p-1, 0x1.c3b6fb361ep-2, 0x1.80ab596d9efcap-45},
    {0x1.47ap-1, 0x1.c92b7d6bb1p-2, -0x1.bc058001e24cfp-44},
    {0x1.46p-1, 0x1.ce42f18064p-2, 0x1.d0d0798270b2ap-44},
    {0x1.446p-1, 0x1.d360e90c38p-2, 0x1.42cdb58440fd6p-44},
    {0x1.42ep-1, 0x1.d81ff2cce9p-2, -0x1.6c99c641aa0cp-44},
    {0x1.414p-1, 0x1.dd4aa04e1cp-2, 0x1.2d8512df01afdp-44},
    {0x1.3fcp-1, 0x1.e21582ecdcp-2, -0x1.18dfb659ddea2p-47},
    {0x1.3e2p-1, 0x1.e74d262789p-2, -0x1.e146ba126ba84p-44},
    {0x1.3cap-1, 0x1.ec241d5e3p-2, -0x1.83f91f5d1fb7bp-49},
    {0x1.3b2p-1, 0x1.f100f6c2ebp-2, 0x1.cce779d37f3d8p-45},
    {0x1.39ap-1, 0x1.f5e3c0b542p-2, 0x1.717da2f1dc6a9p-44},
    {0x1.382p-1, 0x1.facc89c9aap-2, -0x1.a707cbbfc4e25p-44},
    {0x1.36ap-1, 0x1.ffbb60ca86p-2, 0x1.d9555b2ef9e1dp-45},
    {0x1.352p-1, 0x1.02582a5c9dp-1, 0x1.22c6c4e98e18cp-45},
    {0x1.33ap-1, 0x1.04d5ba679bp-1, -0x1.b298eb21bad44p-44},
    {0x1.324p-1, 0x1.0720e5c40ep-1, -0x1.c762ffd3f0109p-46},
    {0x1.30ep-1, 0x1.096eb588728p-1, 0x1.6eab8ed791a8ap-44},
    {0x1.2f6p-1, 0x1.0bf52e73538p-1, 0x1.9b5899cd387d3p-46},
    {0x1.2ep-1, 0x1.0e4898611dp-1, -0x1.8f599fe1ffa3p-44},
    {0x1.2cap-1, 0x1.109eb9e2e5p-1, -0x1.b496635b07d06p-44},
    {0x1.2b4p-1, 0x1.12f799594fp-1, -0x1.0e0950a8ee2fbp-47},
    {0x1.29ep-1, 0x1.15533d3b8d8p-1, -0x1.33f1aba7961e6p-47},
    {0x1.288p-1, 0x1.17b1ac17ccp-1, -0x1.52762a46c5b48p-44},
    {0x1.274p-1, 0x1.19db6ba0ba8p-1, -0x1.24c53bd2daeccp-44},
    {0x1.25ep-1, 0x1.1c3f41fa98p-1, -0x1.ca798412ff675p-44},
    {0x1.24ap-1, 0x1.1e6df676ff8p-1, 0x1.a58ba81b983aap-46},
    {0x1.234p-1, 0x1.20d74d2fbbp-1, -0x1.b321c53d151e2p-49},
    {0x1.22p-1, 0x1.230b0d8becp-1, -0x1.b40fe646de661p-44},
    {0x1.20cp-1, 0x1.25413d529c8p-1, 0x1.76dfca70af4b9p-44},
    {0x1.1f8p-1, 0x1.2779e1ec94p-1, -0x1.35b991994c90fp-45},
    {0x1.1e2p-1, 0x1.29ee409f158p-1, -0x1.dfca5febcc6fp-44},
    {0x1.1dp-1, 0x1.2bf29f9842p-1, -0x1.e275c79e2c481p-44},
    {0x1.1bcp-1, 0x1.2e32c3d74d8p-1, -0x1.3a9e0d9bfad3ep-44},
    {0x1.1a8p-1, 0x1.30757344f1p-1, -0x1.ec82f533a1f99p-45},
    {0x1.194p-1, 0x1.32bab3a7b2p-1, 0x1.e86c98c5d5b38p-45},
    {0x1.182p-1, 0x1.34c80a8958p-1, 0x1.d4093fcac34bdp-46},
    {0x1.16ep-1, 0x1.37123b54988p-1, -0x1.26a88b54debbfp-47},
    {0x1.15cp-1, 0x1.39240dde5dp-1, -0x1.6d8482a914e99p-45},
    {0x1.148p-1, 0x1.3b7344be4p-1, 0x1.88bb6943a0521p-44},
    {0x1.136p-1, 0x1.3d89a6b1a58p-1, -0x1.39c19502bf0e1p-44},
    {0x1.124p-1, 0x1.3fa238ac248p-1, 0x1.49eb5a15b20a8p-46},
    {0x1.112p-1, 0x1.41bcff486p-1, 0x1.76fd6b90e2a84p-47},
    {0x1.0fep-1, 0x1.44163ef728p-1, 0x1.ec58a3f8fb594p-44},
    {0x1.0ecp-1, 0x1.4635bcf40ep-1, -0x1.18b9515f69aa9p-44},
    {0x1.0dcp-1, 0x1.481abdce328p-1, -0x1.33ceb89775f8bp-50},
    {0x1.0cap-1, 0x1.4a3e8623428p-1, -0x1.6d82b36043dcep-44},
    {0x1.0b8p-1, 0x1.4c649aff0fp-1, -0x1.ea4e6e935367dp-45},
    {0x1.0a6p-1, 0x1.4e8d015787p-1, -0x1.d38fcbf3f2776p-46},
    {0x1.096p-1, 0x1.5079fd47368p-1, -0x1.07e991980a7afp-45},
    {0x1.084p-1, 0x1.52a6d269bc8p-1, -0x1.ffbbb2e12ec6dp-45},
    {0x1.074p-1, 0x1.5497c72923p-1, 0x1.d74b64ca8a32p-44},
    {0x1.062p-1, 0x1.56c91d71cf8p-1, 0x1.07bafd1366e9ep-49},
    {0x1.052p-1, 0x1.58be1b857bp-1, -0x1.422bd0cc58b53p-45},
    {0x1.042p-1, 0x1.5ab505b3908p-1, -0x1.faa7614266a7p-44},
    {0x1.03p-1, 0x1.5ced1e17c38p-1, -0x1.1d52fdabeaa73p-44},
    {0x1.02p-1, 0x1.5ee82aa2418p-1, 0x1.202380cda46bep-45},
    {0x1.01p-1, 0x1.60e52f45788p-1, 0x1.c6ea5e681638dp-46},
    {0x1p-1, 0x1.62e42fefa38p-1, 0x1.ef35793c7673p-45},
};

/* Index of x's table row: m - 1 rounded to a multiple of 1/128. Split from ln_of() so that the
 * block code can compute all indices in one loop and the table loads in the next (loads that
 * take their index from memory vectorise much better than ones that take it from a register). */
static inline __attribute__((always_inline)) uint64_t ln_row_of(double x)
{
    const uint64_t frac = bits_of(x) & 0xFFFFFFFFFFFFFu;

    return (frac + (UINT64_C(1) << (51 - LN_TABLE_BITS))) >> (52 - LN_TABLE_BITS);
}

/* ln x by the method above, with j = ln_row_of(x). Branch-free, so that loops over it vectorise.
 * +inf gives 1024 ln 2 (its exponent with m = 1) rather than inf: the coordinate clamps either
 * to 1, and that saves a select that would keep the loop from vectorising. */
static inline __attribute__((always_inline)) double ln_of(double x, uint64_t j)
{
    const uint64_t bits = bits_of(x);
    const struct ln_row *row = &ln_table[j];
    /* m from the fraction bits; e = the biased exponent placed in the low bits of 2^52's
     * significand, minus 2^52 + 1023: exact, and it needs no int64-to-double conversion. */
    const double m = double_of((bits & 0xFFFFFFFFFFFFFu) | 0x3FF0000000000000u);
    const double e = double_of((bits >> 52) | 0x4330000000000000u) - 0x1.00000000003ffp52;
    const double r = m * row->invc - 1.0;
    const double r_h = double_of(bits_of(r) & 0xFFFFFFFFF8000000u);   /* 26 bits */
    const double r_l = r - r_h;
    const double q_h = r_h * r_h * 0.5;
    const double a = e * LN2_HI + row->t_hi;
    const double h1 = a + r, e1 = r - (h1 - a);
    const double h = h1 - q_h, e2 = (h1 - h) - q_h;
    const double r2 = r * r, r4 = r2 * r2;
    const double series = ((1.0 / 3 - r * 0.25) + r2 * (0.2 - r * (1.0 / 6)))
                          + r4 * (1.0 / 7 - r * 0.125);
    const double small = r2 * r * series - r_l * (r_h + 0.5 * r_l);
    const double low = (e1 + e2) + (small + (row->t_lo + e * LN2_LO));

    return h + low;
}

/* ---------------------------------------------------------------------------------------------
 * The palette coordinate. */

/* What maps a smooth value to a palette coordinate. */
struct coord_params {
    double log_range;   /* ln(1 + max_iter) by ln_of(): divisor of the log-scaled pass */
    double cycle;       /* iterations per cycle; 0 for the log-scaled pass */
    double offset;
    int reverse;
};

static void coord_params_init(struct coord_params *p, const struct spec_coloring *coloring,
                              uint32_t max_iter)
{
    /* max_iter >= 1 in a validated spec; 1 keeps the divisor positive if a caller slips. */
    const double x = 1.0 + (double)(max_iter ? max_iter : 1);

    p->log_range = ln_of(x, ln_row_of(x));
    p->cycle = coloring->cycle > 0 ? coloring->cycle : 0;
    p->offset = coloring->offset;
    p->reverse = coloring->reverse;
}

/* mu >= 0 (+0, -0, up to +inf), i.e. not interior, decided on the bits: an integer test
 * vectorises where a float compare (which may trap) keeps GCC from if-converting the loop. */
static inline __attribute__((always_inline)) int escaped(float mu)
{
    uint32_t b;

    memcpy(&b, &mu, sizeof(b));
    return b <= 0x7F800000u || b == 0x80000000u;
}

/* The steps of one coordinate, shared by the block loops and color_coordinate(), so that the two
 * perform the same operations and agree to the last bit. Log-scaled: t = ln(1 + mu) / log_range,
 * clamped to 1 (y = ln_of(1 + mu)). */
static inline __attribute__((always_inline)) double coord_scale(double y, double log_range)
{
    const double t = y / log_range;

    return t > 1.0 ? 1.0 : t;
}

/* floor(x) for every double x, from two additions: n = x rounded to an integer (adding and taking
 * away 2^52 with x's sign), minus 1 where that rounded up. |x| >= 2^52 is already an integer, as
 * are inf and NaN, which come back unchanged. The one difference from floor(): -0 gives +0, which
 * coord_cycle absorbs. Written with masks because libm's floor() does not vectorise here. */
static inline __attribute__((always_inline)) double floor_of(double x)
{
    const double magic = double_of((bits_of(x) & 0x8000000000000000u) | 0x4330000000000000u);
    const double n = (x + magic) - magic;
    const uint64_t up = -(uint64_t)(n > x);
    const uint64_t small = -(uint64_t)(fabs(x) < 0x1p52);
    const double fl = n - double_of(bits_of(1.0) & up);

    return double_of((bits_of(fl) & small) | (bits_of(x) & ~small));
}

/* Cycling: the fraction of mu / cycle + offset, as x - floor(x). Adding +0 turns the -0 that
 * floor_of's +0 for x = -0 would leave into the +0 that floor(-0) = -0 gives (x - floor(x) is
 * never -0 otherwise, so nothing else changes). Only an infinite mu makes it NaN (inf - inf);
 * that is the start of the palette rather than garbage. */
static inline __attribute__((always_inline)) double coord_cycle(float mu, double cycle,
                                                                 double offset)
{
    const double x = (double)mu / cycle + offset;
    const double t = (x - floor_of(x)) + 0.0;
    const uint64_t number = -(uint64_t)(t == t);

    return double_of(bits_of(t) & number);
}

/* Interior samples get -1, as bit operations so that the select vectorises on SSE2 too. */
static inline __attribute__((always_inline)) double coord_interior(float mu, double t)
{
    const uint64_t keep = -(uint64_t)escaped(mu);

    return double_of((bits_of(t) & keep) | (bits_of(-1.0) & ~keep));
}

/* The coordinate of one sample by the steps above: color_coordinate() and short runs. */
static inline double coord_one(const struct coord_params *p, float mu)
{
    double t;

    if (p->cycle > 0) {
        t = coord_cycle(mu, p->cycle, p->offset);
    } else {
        const double x = 1.0 + (double)mu;

        t = coord_scale(ln_of(x, ln_row_of(x)), p->log_range);
    }
    if (p->reverse)
        t = 1.0 - t;
    return coord_interior(mu, t);
}

/* Palette coordinates of BLOCK smooth values (pad a partial block): the steps above as several
 * short loops rather than one, each of which vectorises and keeps the vector units busy. One long
 * loop body stalled on its dependency chain: the division in a loop of its own alone took a
 * log-scaled block from 2.7 to 2.25 ns a sample (AVX2, this file's VM). Interior samples are set
 * to -1 before the reversal, which leaves negative coordinates alone: the same values as
 * color_coordinate()'s reverse-then-interior order. */
static inline __attribute__((always_inline)) void coord_block(const struct coord_params *p,
                                                               const float *restrict mu,
                                                               double *restrict t)
{
    /* Locals, so that the compiler need not fear that the stores to t[] change *p. */
    const double log_range = p->log_range, cycle = p->cycle, offset = p->offset;

    if (cycle > 0) {
        for (int i = 0; i < BLOCK; i++)
            t[i] = coord_interior(mu[i], coord_cycle(mu[i], cycle, offset));
    } else {
        double x[BLOCK];
        uint64_t row[BLOCK];

        for (int i = 0; i < BLOCK; i++) {
            x[i] = 1.0 + (double)mu[i];
            row[i] = ln_row_of(x[i]);
        }
        for (int i = 0; i < BLOCK; i++)
            x[i] = ln_of(x[i], row[i]);
        for (int i = 0; i < BLOCK; i++)
            t[i] = coord_interior(mu[i], coord_scale(x[i], log_range));
    }
    if (p->reverse)
        for (int i = 0; i < BLOCK; i++) {
            const uint64_t in = -(bits_of(t[i]) >> 63);

            t[i] = double_of((bits_of(1.0 - t[i]) & ~in) | (bits_of(t[i]) & in));
        }
}

/* ---------------------------------------------------------------------------------------------
 * Palette segments and the colour of a sample. */

/* How rgb_block finds a sample's segment, decided once per call from the stops. */
enum seg_mode {
    SEG_UNIFORM,    /* 2^n equal segments starting at exactly k / 2^n: k is computed */
    SEG_ONE_STEP,   /* every bucket holds at most one segment start: bucket + one compare */
    SEG_SCAN        /* stops closer than a bucket, or odd ones: the scalar loop */
};

/* A segment's colour as whole rows (r, g, b, 0), so that rgb_block computes a sample's three
 * channels with one vector operation each: GCC's vector extensions, as in engine_cpu.c. With the
 * channels in separate tables the compiler vectorised across samples instead and emulated six
 * gathers per sample; this form measured 1.6 ns a sample against 2.6 (colour and store, AVX2). */
typedef double v4d __attribute__((vector_size(32)));
typedef int32_t v4si __attribute__((vector_size(16)));
typedef uint8_t v16qu __attribute__((vector_size(16)));

struct seg_colour {
    v4d c0, dc;
};

/* The palette as non-empty segments: segment k covers [start[k], start[k+1]) (the last one up to
 * 1 inclusive), colour = c0 + dc * f with f = (t - start[k]) * inv_width[k]. Stops at equal
 * positions make empty segments, which are dropped: the colour jumps there, and at the jump the
 * later stop wins. colour[count] is the interior colour with dc = 0, so that interior samples
 * take the same arithmetic as the others (c0 + 0 * f + 0.5 truncates to c0). */
struct segments {
    struct seg_colour colour[SPEC_MAX_STOPS + 1];
    uint32_t count;
    enum seg_mode mode;
    double uniform_inv;            /* SEG_UNIFORM: the number of segments, 2^n */
    int64_t bucket[SEG_BUCKETS];   /* int64: the index width GCC emulates gathers for */
    double start[SPEC_MAX_STOPS + 1];
    double inv_width[SPEC_MAX_STOPS];
};

/* How rgb_block may find the segments, and the buckets where it needs them:
 * SEG_UNIFORM when there are m = 2^n <= SEG_BUCKETS segments with starts and widths exactly k / m
 *   and 1 / m: then bucket b would hold segment b >> (9 - n), start[k] is k * 2^-n and
 *   inv_width[k] is m, bit for bit (all built-in palettes but "fire"); no buckets are needed;
 * SEG_ONE_STEP when no bucket's range [b, b + 1) / SEG_BUCKETS (the last one up to 1 inclusive)
 *   holds two segment starts, so that one step after the bucket is all sample_rgb's loop does,
 *   and no start is negative or -0 (rgb_block compares t and starts as integers);
 * SEG_SCAN otherwise. */
static void segments_index(struct segments *s)
{
    const uint32_t m = s->count;
    uint32_t shift = 0;

    while (((uint32_t)SEG_BUCKETS >> shift) > m)
        shift++;
    if (((uint32_t)SEG_BUCKETS >> shift) == m) {
        const double width = (double)(1u << shift) / SEG_BUCKETS;
        const double inv = (double)SEG_BUCKETS / (1u << shift);
        uint32_t k = 0;

        while (k < m && s->start[k] == (double)k * width && s->inv_width[k] == inv)
            k++;
        if (k == m) {
            s->mode = SEG_UNIFORM;
            s->uniform_inv = inv;
            return;
        }
    }

    for (uint32_t b = 0, k = 0; b < SEG_BUCKETS; b++) {
        double t = (double)b / SEG_BUCKETS;

        while (k + 1 < m && t >= s->start[k + 1])
            k++;
        s->bucket[b] = k;
    }
    s->mode = SEG_ONE_STEP;
    for (uint32_t k = 0; k < m; k++)
        if (bits_of(s->start[k]) >> 63)
            s->mode = SEG_SCAN;
    for (uint32_t b = 0; b < SEG_BUCKETS && s->mode == SEG_ONE_STEP; b++) {
        const uint32_t k = (uint32_t)s->bucket[b];
        const double end = (double)(b + 1) / SEG_BUCKETS;

        /* start[m] = inf ends the table, so k + 2 <= m is a valid index. */
        if (k + 2 <= m && (b + 1 < SEG_BUCKETS ? s->start[k + 2] < end : s->start[k + 2] <= end))
            s->mode = SEG_SCAN;
    }
}

static void set_colour(struct seg_colour *out, const struct spec_rgb *a, const struct spec_rgb *b)
{
    out->c0 = (v4d){a->r, a->g, a->b, 0.0};
    out->dc = (v4d){(double)b->r - a->r, (double)b->g - a->g, (double)b->b - a->b, 0.0};
}

/* Turns the stops of `coloring` into segments and picks the lookup mode. A validated spec has
 * 2..SPEC_MAX_STOPS stops from 0 to 1; anything else still yields a usable (if odd) palette
 * rather than out-of-range reads, since these functions cannot fail. */
static void segments_init(struct segments *s, const struct spec_coloring *coloring)
{
    uint32_t n = coloring->nstops;
    uint32_t m = 0;

    if (n > SPEC_MAX_STOPS)
        n = SPEC_MAX_STOPS;
    for (uint32_t k = 0; k + 1 < n; k++) {
        double a = coloring->pos[k], b = coloring->pos[k + 1];

        if (!(b > a))
            continue;
        s->start[m] = a;
        s->inv_width[m] = 1.0 / (b - a);
        set_colour(&s->colour[m], &coloring->rgb[k], &coloring->rgb[k + 1]);
        m++;
    }
    if (m == 0) {
        /* No stop spans any width: one flat segment of the last stop's colour. */
        const struct spec_rgb *c = n ? &coloring->rgb[n - 1] : &coloring->interior;

        s->start[0] = 0.0;
        s->inv_width[0] = 1.0;
        set_colour(&s->colour[0], c, c);
        m = 1;
    }
    s->count = m;
    s->start[m] = INFINITY;
    set_colour(&s->colour[m], &coloring->interior, &coloring->interior);
    segments_index(s);
}

/* Colour of one sample, the scalar way: the interpolated stop colour rounded to nearest, or the
 * interior colour for t < 0. f is clamped so that rounding can never leave 0..255 (t - start can
 * exceed the segment's width by an ulp). rgb_block's vector loops compute exactly this, with the
 * same shortcut for uniform palettes (see there). */
static inline void sample_rgb(const struct segments *s, double t, uint8_t out[3])
{
    uint32_t k = s->count;
    double f = 0.0;

    if (t >= 0.0 && s->mode == SEG_UNIFORM) {
        const double tm = t * s->uniform_inv;

        k = (uint32_t)tm;
        k = k > s->count - 1 ? s->count - 1 : k;
        f = tm - (double)k;
    } else if (t >= 0.0) {
        uint32_t b = (uint32_t)(t * SEG_BUCKETS);

        if (b >= SEG_BUCKETS)
            b = SEG_BUCKETS - 1;
        k = (uint32_t)s->bucket[b];
        while (t >= s->start[k + 1])
            k++;
        f = (t - s->start[k]) * s->inv_width[k];
        f = f < 0.0 ? 0.0 : f > 1.0 ? 1.0 : f;
    }
    for (int c = 0; c < 3; c++)
        out[c] = (uint8_t)(s->colour[k].c0[c] + s->colour[k].dc[c] * f + 0.5);
}

/* Colours of BLOCK palette coordinates as RGB bytes (rgb needs 3 * BLOCK + 1 bytes): sample_rgb()
 * for each, the segment and f first, in loops the compiler vectorises across samples, then the
 * three channels at once per sample. byte_shuffle (a constant of each build) packs each sample's
 * bytes with one shuffle, which the AVX2 build has an instruction for (pshufb); without it GCC
 * spells the shuffle out byte by byte, and a loop over the int32s measured ~0.4 ms a tile faster. */
static inline __attribute__((always_inline)) void rgb_block(const struct segments *s,
                                                             const double *restrict t,
                                                             uint8_t *restrict rgb,
                                                             int byte_shuffle)
{
    int32_t seg[BLOCK];
    double f[BLOCK];
    int32_t level[BLOCK][4];

    if (s->mode == SEG_SCAN) {
        for (int i = 0; i < BLOCK; i++)
            sample_rgb(s, t[i], rgb + 3 * i);
        return;
    }
    if (s->mode == SEG_UNIFORM) {
        const int32_t last = (int32_t)s->count - 1, interior = (int32_t)s->count;
        const double segments = s->uniform_inv;

        for (int i = 0; i < BLOCK; i++) {
            /* With m = 2^n segments, k = floor(t * m) (m - 1 for t = 1) is the segment that the
             * bucket and the step would find, and f = t * m - k equals (t - start[k]) *
             * inv_width[k] bit for bit: t - k / m is exact (Sterbenz, or k = 0) and so are the
             * scalings by m. That f is in [0, 1] already, so its clamp is left out. An interior
             * sample (t = -1) gets a finite f and the interior row, whose dc = 0 makes f
             * irrelevant. sample_rgb's uniform branch is the same arithmetic. */
            const double tm = t[i] * segments;
            int32_t k = (int32_t)tm;

            /* Two statements: GCC 12 does not vectorise the nested conditional. */
            k = k < 0 ? 0 : k;
            k = k > last ? last : k;
            f[i] = tm - (double)k;
            seg[i] = tm < 0.0 ? interior : k;
        }
    } else {
        const int64_t interior = s->count;
        int64_t k64[BLOCK];

        for (int i = 0; i < BLOCK; i++) {
            int32_t b = (int32_t)(t[i] * SEG_BUCKETS);

            k64[i] = b < 0 ? 0 : b > SEG_BUCKETS - 1 ? SEG_BUCKETS - 1 : b;
        }
        for (int i = 0; i < BLOCK; i++)
            k64[i] = s->bucket[k64[i]];
        for (int i = 0; i < BLOCK; i++) {
            /* sample_rgb's loop runs at most once here (segments_index checked): one step,
             * comparing t and start[] as integers, which order non-negative doubles as the
             * doubles do (t = -1 compares below every start and is replaced below). */
            const int64_t k = k64[i] + ((int64_t)bits_of(t[i])
                                        >= (int64_t)bits_of(s->start[k64[i] + 1]));
            const double fi = (t[i] - s->start[k]) * s->inv_width[k];
            const int64_t in = -(int64_t)(bits_of(t[i]) >> 63);

            f[i] = fi < 0.0 ? 0.0 : fi > 1.0 ? 1.0 : fi;
            k64[i] = k + ((interior - k) & in);
        }
        for (int i = 0; i < BLOCK; i++)
            seg[i] = (int32_t)k64[i];
    }
    for (int i = 0; i < BLOCK; i++) {
        /* (int32) truncates as sample_rgb's (uint8_t) does: every value is in [0, 255.5]. The
         * shuffle gathers the low bytes of the four int32s; the fourth (0) is overwritten by
         * the next sample or lies in the spare byte. */
        const struct seg_colour *row = &s->colour[seg[i]];
        const v4d v = row->c0 + row->dc * f[i] + 0.5;
        const v4si q = __builtin_convertvector(v, v4si);

        if (byte_shuffle) {
            const v16qu b = __builtin_shuffle((v16qu)q, (v16qu){0, 4, 8, 12, 0, 0, 0, 0,
                                                                0, 0, 0, 0, 0, 0, 0, 0});

            memcpy(rgb + 3 * i, &b, 4);
        } else {
            memcpy(level[i], &q, sizeof(q));
        }
    }
    if (!byte_shuffle)
        for (int i = 0; i < BLOCK; i++)
            for (int c = 0; c < 3; c++)
                rgb[3 * i + c] = (uint8_t)level[i][c];
}

/* Grey levels round(65535 t) of BLOCK palette coordinates, as ss == 1 stores them: 0 for interior
 * samples, whose t = -1 gives a negative level here. */
static inline __attribute__((always_inline)) void grey_block(const double *restrict t,
                                                              uint16_t *restrict g)
{
    for (int i = 0; i < BLOCK; i++) {
        const int32_t v = (int32_t)(65535.0 * t[i] + 0.5);

        g[i] = (uint16_t)(v < 0 ? 0 : v);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Row drivers, instantiated once per instruction set below. */

/* Rounded mean of n sample values: (sum + n/2) / n, with the division, which costs more than the
 * rest of a pixel, done as a multiply by magic = floor(2^32 / n) + 1. That is exact here: sum is
 * below 64 * 65536 = 2^22, so the product overshoots sum/n by less than 2^-10, while sum/n falls
 * at least 1/n >= 1/64 short of the next integer. */
static inline uint64_t mean_magic(uint32_t n)
{
    return (UINT64_C(1) << 32) / n + 1;
}

static inline uint32_t mean_round(uint32_t sum, uint32_t n, uint64_t magic)
{
    return (uint32_t)(((uint64_t)(sum + n / 2) * magic) >> 32);
}

/* Coordinates of n <= BLOCK samples from src into t[0..n); a partial block is padded with 0. */
static inline __attribute__((always_inline)) void coord_samples(const struct coord_params *p,
                                                                 const float *src, uint32_t n,
                                                                 double *t)
{
    float mu[BLOCK];

    if (n == BLOCK) {
        coord_block(p, src, t);
        return;
    }
    memcpy(mu, src, n * sizeof(*mu));
    memset(mu + n, 0, (BLOCK - n) * sizeof(*mu));
    coord_block(p, mu, t);
}

/* RGB bytes of n <= BLOCK samples from src (rgb: 3 * BLOCK + 1 bytes). */
static inline __attribute__((always_inline)) void rgb_run(const struct coord_params *p,
                                                           const struct segments *s,
                                                           const float *src, uint32_t n,
                                                           uint8_t *rgb, int byte_shuffle)
{
    double t[BLOCK];

    if (n < SHORT_RUN) {
        for (uint32_t i = 0; i < n; i++)
            sample_rgb(s, coord_one(p, src[i]), rgb + 3 * i);
        return;
    }
    coord_samples(p, src, n, t);
    rgb_block(s, t, rgb, byte_shuffle);
}

/* Grey levels of n <= BLOCK samples from src. */
static inline __attribute__((always_inline)) void grey_run(const struct coord_params *p,
                                                            const float *src, uint32_t n,
                                                            uint16_t *g)
{
    double t[BLOCK];

    if (n < SHORT_RUN) {
        for (uint32_t i = 0; i < n; i++) {
            const double ti = coord_one(p, src[i]);

            g[i] = ti < 0.0 ? 0 : (uint16_t)(65535.0 * ti + 0.5);
        }
        return;
    }
    coord_samples(p, src, n, t);
    grey_block(t, g);
}

/* One output row of RGB8 from its ss sample rows (`stride` floats apart, width * ss samples
 * each). With ss > 1 the row goes in chunks of BLOCK / ss pixels, whose samples in each sample
 * row fit one block (one pixel in several blocks if ss > BLOCK); each pixel is the rounded mean
 * of its integer sample colours, halves up. */
static inline __attribute__((always_inline)) void rgb8_row(const struct coord_params *p,
                                                            const struct segments *s,
                                                            const float *block, size_t stride,
                                                            uint32_t width, uint32_t ss,
                                                            uint8_t *dst, int byte_shuffle)
{
    uint8_t rgb[3 * BLOCK + 1];

    if (ss == 1) {
        for (uint32_t x = 0; x < width; x += BLOCK) {
            const uint32_t n = width - x < BLOCK ? width - x : BLOCK;

            rgb_run(p, s, block + x, n, rgb, byte_shuffle);
            memcpy(dst + (size_t)x * 3, rgb, (size_t)n * 3);
        }
        return;
    }

    const uint32_t nsamples = ss * ss;
    const uint64_t magic = mean_magic(nsamples);
    const uint32_t chunk = ss <= BLOCK ? BLOCK / ss : 1;
    uint32_t sum[BLOCK][3];

    for (uint32_t x = 0; x < width; x += chunk) {
        const uint32_t npx = width - x < chunk ? width - x : chunk;
        const uint32_t total = npx * ss;

        memset(sum, 0, sizeof(sum));
        for (uint32_t sy = 0; sy < ss; sy++) {
            const float *src = block + (size_t)sy * stride + (size_t)x * ss;

            for (uint32_t done = 0; done < total; done += BLOCK) {
                const uint32_t n = total - done < BLOCK ? total - done : BLOCK;
                uint32_t px = done / ss, left = ss - done % ss;

                rgb_run(p, s, src + done, n, rgb, byte_shuffle);
                for (uint32_t i = 0; i < n; i++) {
                    for (int c = 0; c < 3; c++)
                        sum[px][c] += rgb[3 * i + c];
                    if (--left == 0) {
                        px++;
                        left = ss;
                    }
                }
            }
        }
        for (uint32_t i = 0; i < npx; i++)
            for (int c = 0; c < 3; c++)
                dst[(size_t)(x + i) * 3 + c] = (uint8_t)mean_round(sum[i][c], nsamples, magic);
    }
}

/* As rgb8_row, for grey16. */
static inline __attribute__((always_inline)) void grey16_row(const struct coord_params *p,
                                                              const float *block, size_t stride,
                                                              uint32_t width, uint32_t ss,
                                                              uint16_t *dst)
{
    uint16_t g[BLOCK];

    if (ss == 1) {
        for (uint32_t x = 0; x < width; x += BLOCK) {
            const uint32_t n = width - x < BLOCK ? width - x : BLOCK;

            grey_run(p, block + x, n, g);
            memcpy(dst + x, g, (size_t)n * sizeof(*g));
        }
        return;
    }

    const uint32_t nsamples = ss * ss;
    const uint64_t magic = mean_magic(nsamples);
    const uint32_t chunk = ss <= BLOCK ? BLOCK / ss : 1;
    uint32_t sum[BLOCK];

    for (uint32_t x = 0; x < width; x += chunk) {
        const uint32_t npx = width - x < chunk ? width - x : chunk;
        const uint32_t total = npx * ss;

        memset(sum, 0, sizeof(sum));
        for (uint32_t sy = 0; sy < ss; sy++) {
            const float *src = block + (size_t)sy * stride + (size_t)x * ss;

            for (uint32_t done = 0; done < total; done += BLOCK) {
                const uint32_t n = total - done < BLOCK ? total - done : BLOCK;
                uint32_t px = done / ss, left = ss - done % ss;

                grey_run(p, src + done, n, g);
                for (uint32_t i = 0; i < n; i++) {
                    sum[px] += g[i];
                    if (--left == 0) {
                        px++;
                        left = ss;
                    }
                }
            }
        }
        for (uint32_t i = 0; i < npx; i++)
            dst[x + i] = (uint16_t)mean_round(sum[i], nsamples, magic);
    }
}

/* The two builds of the row loops. The AVX2 one differs only in instruction selection (and in how
 * rgb_block moves finished bytes, BYTE_SHUFFLE): the same IEEE operations in the same order, no
 * FMA (the project builds with -ffp-contract=off and the target adds no "fma"), so both write the
 * same bytes. */
#define COLOR_ROWS(NAME, ATTR, BYTE_SHUFFLE)                                                      \
    ATTR static void rgb8_rows_##NAME(const struct coord_params *p, const struct segments *s,     \
                                      const float *smooth, size_t stride, uint32_t width,         \
                                      uint32_t rows, uint32_t ss, uint8_t *rgb8)                  \
    {                                                                                             \
        for (uint32_t y = 0; y < rows; y++)                                                       \
            rgb8_row(p, s, smooth + (size_t)y * ss * stride, stride, width, ss,                   \
                     rgb8 + (size_t)y * width * 3, BYTE_SHUFFLE);                                 \
    }                                                                                             \
    ATTR static void grey16_rows_##NAME(const struct coord_params *p, const float *smooth,        \
                                        size_t stride, uint32_t width, uint32_t rows,             \
                                        uint32_t ss, uint16_t *grey16)                            \
    {                                                                                             \
        for (uint32_t y = 0; y < rows; y++)                                                       \
            grey16_row(p, smooth + (size_t)y * ss * stride, stride, width, ss,                    \
                       grey16 + (size_t)y * width);                                               \
    }

COLOR_ROWS(base, , 0)
#if defined(__x86_64__) && defined(__GNUC__)
#define COLOR_HAVE_AVX2 1
COLOR_ROWS(avx2, __attribute__((target("avx2"))), 1)
#endif

/* Whether to run the AVX2 build: when the CPU has it, unless FRACTALD_CPU_ISA=base asks for the
 * baseline (cpu_isa.h; the tests use it to compare the two builds). */
static int use_avx2(void)
{
#ifdef COLOR_HAVE_AVX2
    return cpu_isa_widest() >= CPU_ISA_AVX2;
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------------------------------------
 * Public functions. */

const char *const *color_palette_names(size_t *count)
{
    if (count)
        *count = palette_count;
    return palette_names;
}

int color_palette_load(struct spec_coloring *out, const char *name)
{
    const struct palette *p = NULL;

    if (!name)
        return ERR_NOT_FOUND;
    for (size_t i = 0; i < palette_count; i++) {
        if (strcmp(palette_table[i].name, name) == 0) {
            p = &palette_table[i];
            break;
        }
    }
    if (!p)
        return ERR_NOT_FOUND;

    out->nstops = p->nstops;
    for (uint32_t k = 0; k < p->nstops; k++) {
        /* Evenly spaced stops: k / (n - 1), exact for the 65-stop tables; the last is forced to 1
         * so the "pos[nstops-1] == 1" invariant never depends on rounding. */
        out->pos[k] = p->pos ? p->pos[k] : (float)k / (float)(p->nstops - 1);
        out->rgb[k].r = p->rgb[k][0];
        out->rgb[k].g = p->rgb[k][1];
        out->rgb[k].b = p->rgb[k][2];
    }
    out->pos[0] = 0.0f;
    out->pos[p->nstops - 1] = 1.0f;
    return 0;
}

double color_coordinate(const struct spec_coloring *coloring, uint32_t max_iter, float mu)
{
    struct coord_params p;

    coord_params_init(&p, coloring, max_iter);
    return coord_one(&p, mu);
}

void color_rows_rgb8(const struct spec_coloring *coloring, uint32_t max_iter, const float *smooth,
                     size_t stride, uint32_t width, uint32_t rows, uint32_t ss, uint8_t *rgb8)
{
    struct coord_params p;
    struct segments s;

    if (ss == 0)
        ss = 1;
    coord_params_init(&p, coloring, max_iter);
    segments_init(&s, coloring);
#ifdef COLOR_HAVE_AVX2
    if (use_avx2()) {
        rgb8_rows_avx2(&p, &s, smooth, stride, width, rows, ss, rgb8);
        return;
    }
#endif
    rgb8_rows_base(&p, &s, smooth, stride, width, rows, ss, rgb8);
}

void color_rows_grey16(const struct spec_coloring *coloring, uint32_t max_iter, const float *smooth,
                       size_t stride, uint32_t width, uint32_t rows, uint32_t ss, uint16_t *grey16)
{
    struct coord_params p;

    if (ss == 0)
        ss = 1;
    coord_params_init(&p, coloring, max_iter);
#ifdef COLOR_HAVE_AVX2
    if (use_avx2()) {
        grey16_rows_avx2(&p, smooth, stride, width, rows, ss, grey16);
        return;
    }
#endif
    grey16_rows_base(&p, smooth, stride, width, rows, ss, grey16);
}
