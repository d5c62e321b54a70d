/* cl_source.h: the OpenCL program text of server/engines/engine_cl.c, generated at build time from
 * kernels/render.cl with kernels/escape.h inlined (kernels/embed.cmake). */
#ifndef FRACTALD_CL_SOURCE_H
#define FRACTALD_CL_SOURCE_H

#include <stddef.h>

extern const char cl_source_text[];   /* NUL-terminated */
extern const size_t cl_source_len;    /* without the NUL */

#endif
