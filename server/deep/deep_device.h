/* deep_device.h: a deep reference's orbits and BLA tables as a plain-data job for a device
 * (server/engines/engine_cl_deep.h), with deep_render.c's sample mapping. */
#ifndef FRACTALD_DEEP_DEVICE_H
#define FRACTALD_DEEP_DEVICE_H

#include <stddef.h>

#include "deep.h"
#include "engine_cl_deep.h"

/*
 * Fills *out with rect of view rendered against ref, as deep_render would compute it in fp64
 * mode: the reference's orbits and BLA tables (borrowed: the arrays stay valid while the caller
 * holds its reference to ref), the spacing s = width / grid_w in double exactly as deep_render.c
 * rounds it, half the grid, the centre and c, max_iter and the escape radius, and (Julia) the
 * hook that recomputes in MPFR the samples whose deltas lost the count, as deep_render does: the
 * job borrows ref and view (its strings too) until its render returns.
 * Returns 0; ERR_INVALID when deep_ref_fits(ref, view) is false or rect is empty or outside the
 * grid; ERR_PRECONDITION when the reference is in extended mode (no device path: its deltas
 * leave double's range). msg (may be NULL) gets one line on error.
 */
int deep_ref_device_job(struct engine_cl_deep_job *out, const deep_ref *ref,
                        const struct deep_view *view, const struct spec_rect *rect, char *msg,
                        size_t msglen);

#endif
