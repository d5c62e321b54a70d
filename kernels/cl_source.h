/* cl_source.h: the OpenCL program texts, generated at build time (kernels/embed.cmake) with
 * kernels/escape.h inlined: kernels/render.cl for server/engines/engine_cl.c, kernels/deep.cl for
 * the deep-zoom kernel of server/engines/engine_cl_deep.c. */
#ifndef FRACTALD_CL_SOURCE_H
#define FRACTALD_CL_SOURCE_H

#include <stddef.h>

extern const char cl_source_text[];   /* NUL-terminated */
extern const size_t cl_source_len;    /* without the NUL */

extern const char cl_deep_source_text[];   /* NUL-terminated */
extern const size_t cl_deep_source_len;    /* without the NUL */

#endif
