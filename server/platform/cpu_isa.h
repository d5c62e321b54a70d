/* cpu_isa.h: which x86 vector instruction set the SIMD code paths (CPU engine, colour pass) may
 * use: the widest the CPU runs, narrowed on request by FRACTALD_CPU_ISA for tests and benchmarks. */
#ifndef FRACTALD_CPU_ISA_H
#define FRACTALD_CPU_ISA_H

enum cpu_isa {
    CPU_ISA_BASE,       /* baseline of the build target (SSE2 on x86-64) */
    CPU_ISA_AVX2,
    CPU_ISA_AVX512,     /* AVX-512F and VL */
};

/* The widest set this CPU runs, or a narrower one when FRACTALD_CPU_ISA=avx2|base asks for it
 * ("avx512" or anything else asks for nothing narrower); a set the CPU lacks is never returned.
 * Reads the environment on every call, so a test may switch between builds; safe from any thread
 * while nobody changes the environment. */
enum cpu_isa cpu_isa_widest(void);

#endif
