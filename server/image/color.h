/* color.h: built-in palettes, smooth colouring and the supersample reduction: rows of smooth
 * values in, rows of RGB8 or grey16 pixels out. */
#ifndef FRACTALD_COLOR_H
#define FRACTALD_COLOR_H

#include <stddef.h>
#include <stdint.h>

#include "spec.h"

/* Names of the built-in palettes, in a fixed order ("inferno" first, the default).
 * *count receives how many there are. The array and strings are static. */
const char *const *color_palette_names(size_t *count);

/* Fills out->nstops/pos/rgb with the built-in palette `name` (exact, case-sensitive match) and
 * leaves out's other fields alone. Returns 0, or ERR_NOT_FOUND for an unknown name. */
int color_palette_load(struct spec_coloring *out, const char *name);

/* Palette coordinate of a smooth value: t in [0, 1] for an escaped sample (mu >= 0), or a negative
 * number for an interior sample (mu < 0, or NaN). With cycle == 0: t = ln(1 + mu) / ln(1 + max_iter),
 * clamped to 1; with cycle > 0: t = frac(mu / cycle + offset). reverse turns t into 1 - t.
 * ln is the project's logarithm (platform/fastlog.h), not libm's: correctly rounded but in rare
 * cases (within 2^-12 ulp of a rounding boundary), and the same on every host. The row functions below colour each sample
 * at exactly this t. */
double color_coordinate(const struct spec_coloring *coloring, uint32_t max_iter, float mu);

/* Colours `rows` output rows of `width` pixels from a block of smooth values that is
 * (width*ss) samples wide and (rows*ss) samples high, row-major, `stride` floats per sample row.
 * A sample's colour is the palette at color_coordinate(), interpolated linearly in sRGB between
 * the stops around it and rounded to nearest (where two stops share a position, the later one
 * holds from there on), or coloring->interior for an interior sample.
 * Each pixel is the mean of its ss x ss sample colours, rounded to nearest (halves up).
 * rgb8: 3 bytes per pixel, tightly packed rows. Both row functions keep no state: several threads
 * may colour different bands at once. They run an AVX2 build where the CPU has it and a baseline
 * x86-64 build elsewhere (or with FRACTALD_CPU_ISA=base, as for the CPU engine); both write the
 * same bytes. */
void color_rows_rgb8(const struct spec_coloring *coloring, uint32_t max_iter, const float *smooth,
                     size_t stride, uint32_t width, uint32_t rows, uint32_t ss, uint8_t *rgb8);

/* As color_rows_rgb8, but each pixel is the grey level round(65535 * t) of the palette coordinate
 * (0 for interior samples), averaged over the ss x ss samples and rounded to nearest (halves up);
 * native-endian uint16 per pixel. */
void color_rows_grey16(const struct spec_coloring *coloring, uint32_t max_iter, const float *smooth,
                       size_t stride, uint32_t width, uint32_t rows, uint32_t ss, uint16_t *grey16);

#endif
