/* rect_fill.c: Mariani-Silver rectangle fill as a layer between the scheduler and any device
 * (rect_fill.h): borders through the device, interior-bordered boxes filled, the rest split. */
#include "rect_fill.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* A border with fewer interior samples than 1 in SPARSE_DIV counts as having none: scattered
 * interior specks (workload A at max_iter 1000) would otherwise split boxes down to leaves, a
 * device call each, with nothing to fill. On workload C it costs 1 % of the filled samples. */
#define SPARSE_DIV 20u

/* Columns of a band worked on at once (a multiple of RECT_FILL_BOX_COLS): bounds the buffers at
 * 4 MiB however wide the grid (up to 2^19 samples). */
#define CHUNK_COLS 8192u

/* What a box's border holds: (almost) no interior, some, or nothing else. */
enum border { BORDER_NONE, BORDER_SOME, BORDER_ALL };

/* One rect_fill_render call. The work goes band by band (RECT_FILL_BAND_ROWS rows of the grid,
 * aligned to the grid's row 0); within a band, the boxes of RECT_FILL_BOX_COLS columns that the
 * caller's rectangle touches, aligned to column 0, are worked on in a buffer of their own, which
 * may hold border samples outside the rectangle: a box is decided on its whole border whatever
 * the rectangle, so that the result is the same however the grid is cut. */
struct fill_job {
    struct rect_fill *rf;
    const struct render_spec *spec;
    const struct spec_rect *rect;   /* the caller's, in the grid */
    uint32_t *counts;               /* the caller's outputs, rect->width-strided; either may be NULL */
    float *smooth;
    const atomic_int *cancel;
    char *msg;
    size_t msglen;
    /* The chunk of a band being worked on: grid columns [bx, bx + bw), rows [by, by + bh), and
     * the caller's part of it in band coordinates, columns [tx0, tx1), rows [ty0, ty1). */
    uint32_t bx, by, bw, bh, tx0, tx1, ty0, ty1;
    /* The band's counts (always: interior is read from them) and smooth values (if the caller
     * wants them), bw-strided: the caller's outputs themselves when the band lies wholly in the
     * rectangle (an aligned band: nothing to copy), else the private pc and ps. */
    uint32_t *bc, *pc;
    float *bs, *ps;
    uint64_t band_iterations;       /* escape counts the band's device calls and fills added */
    /* Whether the band's top row is in the buffer already (computed with the band above), and
     * whether this band may compute the next band's top row into buffer row bh: when its boxes
     * are all sparse, that row then comes with the same call. */
    bool top_known, may_extend, extended;
    uint32_t *scratch_counts;       /* pieces narrower than the band */
    float *scratch_smooth;
    size_t scratch_cap;
    uint64_t tiles;
};

void rect_fill_init(struct rect_fill *rf, const struct device_ops *ops, void *backend)
{
    memset(rf, 0, sizeof(*rf));
    rf->ops = ops;
    rf->backend = backend;
}

static bool grow_scratch(struct fill_job *j, size_t n)
{
    uint32_t *c;

    if (n <= j->scratch_cap)
        return true;
    if (!(c = realloc(j->scratch_counts, n * sizeof(*c))))
        return false;
    j->scratch_counts = c;
    if (j->bs) {
        float *s = realloc(j->scratch_smooth, n * sizeof(*s));
        if (!s)
            return false;
        j->scratch_smooth = s;
    }
    j->scratch_cap = n;
    return true;
}

/* Computes the piece (x, y, w, h) of the band (band coordinates) with one device call: full-width
 * pieces straight into the band's buffers, others through the scratch. */
static int compute(struct fill_job *j, uint32_t x, uint32_t y, uint32_t w, uint32_t h)
{
    const size_t n = (size_t)w * h, off = (size_t)y * j->bw + x;
    const bool direct = w == j->bw;
    struct spec_rect piece = {j->bx + x, j->by + y, w, h};
    struct engine_cpu_stats st = {0, 0};
    uint32_t *c;
    float *s;
    int err;

    if (w == 0 || h == 0)
        return 0;
    if (j->cancel && atomic_load(j->cancel))
        return ERR_CANCELLED;
    if (!direct && !grow_scratch(j, n)) {
        snprintf(j->msg, j->msglen, "rectangle fill: out of memory");
        return ERR_NOMEM;
    }
    c = direct ? j->bc + off : j->scratch_counts;
    s = j->bs ? (direct ? j->bs + off : j->scratch_smooth) : NULL;
    j->rf->device_calls++;
    if ((err = j->rf->ops->render(j->rf->backend, j->spec, &piece, c, s, j->cancel, &st, j->msg,
                                  j->msglen)) < 0)
        return err;
    j->rf->samples_computed += n;
    j->rf->iterations_computed += st.iterations;
    j->band_iterations += st.iterations;
    j->tiles += st.tiles;
    if (!direct) {
        for (uint32_t r = 0; r < h; r++) {
            memcpy(j->bc + off + (size_t)r * j->bw, c + (size_t)r * w, w * sizeof(*c));
            if (s)
                memcpy(j->bs + off + (size_t)r * j->bw, s + (size_t)r * w, w * sizeof(*s));
        }
    }
    return 0;
}

/* Computes the part of the piece (x, y, w, h) that lies in the caller's rectangle: samples no
 * decision reads are computed only where they are wanted. */
static int compute_wanted(struct fill_job *j, uint32_t x, uint32_t y, uint32_t w, uint32_t h)
{
    uint32_t x0 = x > j->tx0 ? x : j->tx0, x1 = x + w < j->tx1 ? x + w : j->tx1;
    uint32_t y0 = y > j->ty0 ? y : j->ty0, y1 = y + h < j->ty1 ? y + h : j->ty1;

    return x0 < x1 && y0 < y1 ? compute(j, x0, y0, x1 - x0, y1 - y0) : 0;
}

static bool interior_at(const struct fill_job *j, uint32_t x, uint32_t y)
{
    return j->bc[(size_t)y * j->bw + x] >= j->spec->max_iter;
}

/* Interior samples of band row y, columns [x0, x1]. */
static size_t interior_in_row(const struct fill_job *j, uint32_t y, uint32_t x0, uint32_t x1)
{
    size_t in = 0;
    for (uint32_t x = x0; x <= x1; x++)
        in += interior_at(j, x, y);
    return in;
}

/* The border of the box [x0, x1] x [y0, y1] (band coordinates, inclusive, every border sample
 * computed). */
static enum border classify(const struct fill_job *j, uint32_t x0, uint32_t y0, uint32_t x1, uint32_t y1)
{
    size_t in = interior_in_row(j, y0, x0, x1) + interior_in_row(j, y1, x0, x1);
    size_t total = 2 * (size_t)(x1 - x0 + 1) + 2 * (size_t)(y1 - y0 - 1);

    for (uint32_t y = y0 + 1; y < y1; y++)
        in += interior_at(j, x0, y) + interior_at(j, x1, y);
    return in == total ? BORDER_ALL : in * SPARSE_DIV < total ? BORDER_NONE : BORDER_SOME;
}

/* Writes interior into the part of the piece (x, y, w, h) the caller wants: count max_iter,
 * smooth -1. */
static void fill(struct fill_job *j, uint32_t x, uint32_t y, uint32_t w, uint32_t h)
{
    uint32_t x0 = x > j->tx0 ? x : j->tx0, x1 = x + w < j->tx1 ? x + w : j->tx1;
    uint32_t y0 = y > j->ty0 ? y : j->ty0, y1 = y + h < j->ty1 ? y + h : j->ty1;

    for (uint32_t r = y0; r < y1; r++) {
        size_t off = (size_t)r * j->bw;
        for (uint32_t k = x0; k < x1; k++) {
            j->bc[off + k] = j->spec->max_iter;
            if (j->bs)
                j->bs[off + k] = -1.0f;
        }
    }
    if (x0 < x1 && y0 < y1) {
        j->rf->samples_filled += (uint64_t)(x1 - x0) * (y1 - y0);
        j->band_iterations += (uint64_t)(x1 - x0) * (y1 - y0) * j->spec->max_iter;
    }
}

/* Whether the box [x0, x1] x [y0, y1] holds a sample the caller wants. */
static bool wanted(const struct fill_job *j, uint32_t x0, uint32_t y0, uint32_t x1, uint32_t y1)
{
    return x0 < j->tx1 && x1 >= j->tx0 && y0 < j->ty1 && y1 >= j->ty0;
}

/* Resolves the inside of the box [x0, x1] x [y0, y1] whose border is computed: fills it when the
 * border is all interior; computes it when the border has (almost) no interior sample (an island
 * wholly inside is then computed, not filled: a missed saving, never a wrong pixel) or when
 * halving would make a side shorter than RECT_FILL_MIN_SIDE; otherwise computes the middle line across the
 * longer side and resolves both halves, which share it. Every decision reads the box's own
 * samples only, and halves the caller does not want are skipped. */
static int solve(struct fill_job *j, uint32_t x0, uint32_t y0, uint32_t x1, uint32_t y1)
{
    const uint32_t bw = x1 - x0 + 1, bh = y1 - y0 + 1, split = 2 * RECT_FILL_MIN_SIDE - 1;
    enum border b;
    int err;

    if (bw < 3 || bh < 3 || !wanted(j, x0 + 1, y0 + 1, x1 - 1, y1 - 1))
        return 0;
    b = classify(j, x0, y0, x1, y1);
    if (b == BORDER_ALL) {
        fill(j, x0 + 1, y0 + 1, bw - 2, bh - 2);
        return 0;
    }
    if (b == BORDER_NONE || (bw < split && bh < split))
        return compute_wanted(j, x0 + 1, y0 + 1, bw - 2, bh - 2);
    /* Not both sides are short here, so the longer one can be halved. */
    if (bw >= bh) {
        uint32_t xm = x0 + (x1 - x0) / 2;
        if ((err = compute(j, xm, y0 + 1, 1, bh - 2)) < 0 || (err = solve(j, x0, y0, xm, y1)) < 0)
            return err;
        return solve(j, xm, y0, x1, y1);
    } else {
        uint32_t ym = y0 + (y1 - y0) / 2;
        if ((err = compute(j, x0 + 1, ym, bw - 2, 1)) < 0 || (err = solve(j, x0, y0, x1, ym)) < 0)
            return err;
        return solve(j, x0, ym, x1, y1);
    }
}

/* Box k of the band (band coordinates): columns [*x0, *x1]. */
static void box_cols(const struct fill_job *j, uint32_t k, uint32_t *x0, uint32_t *x1)
{
    *x0 = k * RECT_FILL_BOX_COLS;
    *x1 = (k + 1) * RECT_FILL_BOX_COLS < j->bw ? (k + 1) * RECT_FILL_BOX_COLS - 1 : j->bw - 1;
}

/* Whether box k's top row is (almost) without interior: then the box is computed, not filled.
 * One decision per box on its top row, which one call computes for the whole band, keeps
 * escape-dominated views (A, B) at two device calls per band. */
static bool box_sparse(const struct fill_job *j, uint32_t k)
{
    uint32_t x0, x1;
    box_cols(j, k, &x0, &x1);
    return interior_in_row(j, 0, x0, x1) * SPARSE_DIV < x1 - x0 + 1;
}

/* Resolves the band set up in j: the top row, then per run of boxes alike either the rest at
 * once (sparse top rows) or borders and solve. */
static int do_band(struct fill_job *j)
{
    const uint32_t nbox = (j->bw + RECT_FILL_BOX_COLS - 1) / RECT_FILL_BOX_COLS;
    int err;

    j->extended = false;
    if (!j->top_known && (err = compute(j, 0, 0, j->bw, 1)) < 0)
        return err;
    for (uint32_t k = 0; k < nbox;) {
        bool sparse = box_sparse(j, k);
        uint32_t end = k + 1, x0, x1, e0, e1;
        while (end < nbox && box_sparse(j, end) == sparse)
            end++;
        box_cols(j, k, &x0, &e0);
        box_cols(j, end - 1, &e0, &x1);
        if ((sparse || j->bh < 3) && k == 0 && end == nbox && j->may_extend) {
            /* The whole band computed at once, with the next band's top row. */
            uint32_t y0 = j->ty0 > 1 ? j->ty0 : 1;
            if ((err = compute(j, 0, y0, j->bw, j->bh + 1 - y0)) < 0)
                return err;
            j->extended = true;
        } else if (sparse || j->bh < 3) {
            if ((err = compute_wanted(j, x0, 1, x1 - x0 + 1, j->bh - 1)) < 0)
                return err;
        } else {
            if ((err = compute(j, x0, j->bh - 1, x1 - x0 + 1, 1)) < 0)
                return err;
            for (uint32_t b = k; b < end; b++) {
                box_cols(j, b, &e0, &e1);
                if ((err = compute(j, e0, 1, 1, j->bh - 2)) < 0 ||
                    (e1 > e0 && (err = compute(j, e1, 1, 1, j->bh - 2)) < 0) ||
                    (err = solve(j, e0, 0, e1, j->bh - 1)) < 0)
                    return err;
            }
        }
        k = end;
    }
    return 0;
}

int rect_fill_render(void *ctx, const struct render_spec *spec, const struct spec_rect *rect,
                     uint32_t *counts, float *smooth, const atomic_int *cancel,
                     struct engine_cpu_stats *stats, char *msg, size_t msglen)
{
    struct rect_fill *rf = ctx;
    struct engine_cpu_stats local = {0, 0};
    const uint32_t gw = spec->width * spec->supersample, gh = spec->height * spec->supersample;
    const uint32_t rx1 = rect->x + rect->width, ry1 = rect->y + rect->height;
    const uint32_t cx0 = rect->x / RECT_FILL_BOX_COLS * RECT_FILL_BOX_COLS;
    struct fill_job j;
    size_t cap;
    int err = 0;

    if (!stats)
        stats = &local;
    *stats = (struct engine_cpu_stats){0, 0};
    /* Off, or nothing to look at: one call of the device, exactly. */
    if (!spec->rect_fill || (!counts && !smooth) || rect->width == 0 || rect->height == 0) {
        rf->device_calls++;
        if ((err = rf->ops->render(rf->backend, spec, rect, counts, smooth, cancel, stats, msg, msglen)) < 0)
            return err;
        rf->samples_computed += (uint64_t)rect->width * rect->height;
        rf->iterations_computed += stats->iterations;
        return 0;
    }
    memset(&j, 0, sizeof(j));
    j.rf = rf;
    j.spec = spec;
    j.rect = rect;
    j.counts = counts;
    j.smooth = smooth;
    j.cancel = cancel;
    j.msg = msg;
    j.msglen = msglen;
    /* Buffers for one chunk of a band (and the next band's top row): the boxes the rectangle
     * touches, at most CHUNK_COLS. */
    cap = (rx1 + RECT_FILL_BOX_COLS - 1) / RECT_FILL_BOX_COLS * RECT_FILL_BOX_COLS - cx0;
    cap = (cap < CHUNK_COLS ? cap : CHUNK_COLS) * (RECT_FILL_BAND_ROWS + 1);
    j.pc = malloc(cap * sizeof(*j.pc));
    j.ps = smooth ? malloc(cap * sizeof(*j.ps)) : NULL;
    if (!j.pc || (smooth && !j.ps)) {
        snprintf(msg, msglen, "rectangle fill: out of memory");
        err = ERR_NOMEM;
        goto done;
    }
    for (uint32_t by = rect->y / RECT_FILL_BAND_ROWS * RECT_FILL_BAND_ROWS; by < ry1; by += RECT_FILL_BAND_ROWS) {
        j.by = by;
        j.bh = gh - by < RECT_FILL_BAND_ROWS ? gh - by : RECT_FILL_BAND_ROWS;
        j.ty0 = rect->y > by ? rect->y - by : 0;
        j.ty1 = (ry1 < by + j.bh ? ry1 : by + j.bh) - by;
        for (uint32_t cx = cx0; cx < rx1; cx += CHUNK_COLS) {
            bool aligned, next_inside;
            j.bx = cx;
            j.bw = (gw - cx < CHUNK_COLS ? gw - cx : CHUNK_COLS);
            j.tx0 = rect->x > cx ? rect->x - cx : 0;
            j.tx1 = (rx1 < cx + j.bw ? rx1 : cx + j.bw) - cx;
            /* Whole boxes only, up to the last one the rectangle touches. */
            if (j.bw > (j.tx1 + RECT_FILL_BOX_COLS - 1) / RECT_FILL_BOX_COLS * RECT_FILL_BOX_COLS)
                j.bw = (j.tx1 + RECT_FILL_BOX_COLS - 1) / RECT_FILL_BOX_COLS * RECT_FILL_BOX_COLS;
            /* The band (in one chunk) lies wholly in the rectangle: work in the caller's outputs.
             * So does the next band: its top row may come with this band's last call. */
            aligned = j.tx0 == 0 && j.tx1 == j.bw && j.ty0 == 0 && j.ty1 == j.bh;
            next_inside = by + j.bh < gh &&
                          by + j.bh + (gh - by - j.bh < RECT_FILL_BAND_ROWS ? gh - by - j.bh : RECT_FILL_BAND_ROWS) <= ry1;
            j.may_extend = aligned && next_inside;
            if (!aligned)
                j.top_known = false;
            j.bc = aligned && counts ? counts + (size_t)(by - rect->y) * rect->width : j.pc;
            j.bs = aligned ? (smooth ? smooth + (size_t)(by - rect->y) * rect->width : NULL) : j.ps;
            j.band_iterations = 0;
            if ((err = do_band(&j)) < 0)
                goto done;
            if (aligned) {
                /* Every sample computed or filled is the caller's, each once. */
                stats->iterations += j.band_iterations;
            } else {
                /* The caller's part, and its escape counts: the sum brute force reports wherever
                 * the fill is right (a filled sample counts max_iter). */
                for (uint32_t y = j.ty0; y < j.ty1; y++) {
                    const size_t in = (size_t)y * j.bw + j.tx0;
                    const size_t out = (size_t)(by + y - rect->y) * rect->width + (cx + j.tx0 - rect->x);
                    const uint32_t n = j.tx1 - j.tx0;
                    for (uint32_t x = 0; x < n; x++)
                        stats->iterations += j.bc[in + x];
                    if (counts)
                        memcpy(counts + out, j.bc + in, n * sizeof(*counts));
                    if (smooth)
                        memcpy(smooth + out, j.bs + in, n * sizeof(*smooth));
                }
            }
            /* A next band's top row computed here sits in row bh: in the caller's outputs it is
             * already in place; in the private counts it moves to row 0. */
            j.top_known = j.extended;
            if (j.extended && j.bc == j.pc)
                memcpy(j.pc, j.pc + (size_t)j.bh * j.bw, j.bw * sizeof(*j.pc));
        }
    }
    stats->tiles = (uint32_t)j.tiles;

done:
    free(j.pc);
    free(j.ps);
    free(j.scratch_counts);
    free(j.scratch_smooth);
    return err;
}
