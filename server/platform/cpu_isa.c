/* cpu_isa.c: the vector instruction set the SIMD code paths may use (cpu_isa.h). */
#include <stdlib.h>
#include <string.h>

#include "cpu_isa.h"

enum cpu_isa cpu_isa_widest(void)
{
    const char *want = getenv("FRACTALD_CPU_ISA");

    if (want && strcmp(want, "base") == 0)
        return CPU_ISA_BASE;
#if defined(__x86_64__) && defined(__GNUC__)
    /* No __builtin_cpu_init(): libgcc's constructor has filled the CPU model before main, and
     * several threads may ask at once. */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        !(want && strcmp(want, "avx2") == 0))
        return CPU_ISA_AVX512;
    if (__builtin_cpu_supports("avx2"))
        return CPU_ISA_AVX2;
#endif
    return CPU_ISA_BASE;
}
