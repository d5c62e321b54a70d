/* mpfr_brute.h: the deep tests' independent reference: every sample of a deep view iterated
 * plainly in MPFR (no perturbation, nothing of server/deep but the view struct). */
#ifndef FRACTALD_MPFR_BRUTE_H
#define FRACTALD_MPFR_BRUTE_H

#include <stdint.h>

#include "deep.h"

/* Escape counts of the rect of view's sample grid into counts (row-major, rect->width a row), by
 * z = z^2 + c in MPFR at a precision that resolves the spacing with 96 bits to spare, on
 * nthreads threads. The count is the first n < max_iter with |z_n| > R, else max_iter.
 * Returns 0, or -1 when the view does not parse or a thread cannot start. */
int mpfr_brute_render(const struct deep_view *view, const struct spec_rect *rect,
                      uint32_t *counts, unsigned nthreads);

#endif
