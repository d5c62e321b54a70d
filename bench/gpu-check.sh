#!/usr/bin/env bash
# gpu-check.sh: on a host with no network and none of fractald's packages, unpacks the .debs of
# bench/gpu-debs.sh into a private root, builds fractald with the toolchain from that root, runs the
# OpenCL unit tests and bench_cl / bench_server on the host's OpenCL devices (its NVIDIA GPU), and
# leaves logs and figures under $OUT. Exits 0 only when every step passed (bench/README.md: GPU check).
#
#   OUT=/some/dir bench/gpu-check.sh --debs DIR [--work DIR] [--keep] [--no-pocl]
#
# Every program from the root runs on the root's own glibc: its executables are pointed at the
# root's dynamic loader (patchelf, itself run through that loader), and what the build links gets
# the same loader and an RPATH into the root. The host's libc version therefore does not matter,
# and LD_LIBRARY_PATH is never set, so the host's own programs (sh, coreutils) are untouched.
set -euo pipefail

usage() {
  echo "usage: OUT=DIR $0 --debs DIR [--work DIR] [--keep] [--no-pocl]" >&2
  echo "  --debs DIR   the .debs of bench/gpu-debs.sh (or DEBS=DIR)" >&2
  echo "  --work DIR   where the root and the build go (default: a new directory under /tmp)" >&2
  echo "  --keep       keep the work directory (default: removed at the end)" >&2
  echo "  --no-pocl    leave the unpacked PoCL out of the unit tests (GPU ICDs only)" >&2
  exit 2
}

DEBS=${DEBS:-}
WORK=${GPU_CHECK_WORK:-}
KEEP=0
USE_POCL=1
while [ $# -gt 0 ]; do
  case $1 in
    --debs) [ $# -ge 2 ] || usage; DEBS=$2; shift 2 ;;
    --debs=*) DEBS=${1#--debs=}; shift ;;
    --work) [ $# -ge 2 ] || usage; WORK=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-pocl) USE_POCL=0; shift ;;
    -h|--help) usage ;;
    *) echo "gpu-check: unknown argument '$1'" >&2; usage ;;
  esac
done
if [ -z "$DEBS" ] || ! ls "$DEBS"/*.deb >/dev/null 2>&1; then
  echo "gpu-check: no .debs in '${DEBS}' (give --debs DIR or DEBS=DIR; bench/gpu-debs.sh makes one)" >&2
  exit 2
fi
if [ -z "${OUT:-}" ]; then
  OUT=$(mktemp -d /tmp/gpu-check-out.XXXXXX)
  echo "gpu-check: OUT not set, writing to $OUT"
fi
DEBS=$(cd "$DEBS" && pwd)
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "$WORK" ]; then
  WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
else
  mkdir -p "$WORK"
  WORK=$(cd "$WORK" && pwd)
fi
ROOT=$WORK/root
BUILD=$WORK/build
JOBS=$(nproc 2>/dev/null || echo 2)
MA=x86_64-linux-gnu
LDSO=$ROOT/lib/$MA/ld-linux-x86-64.so.2
ROOT_LIBS=$ROOT/lib/$MA:$ROOT/usr/lib/$MA:$ROOT/lib:$ROOT/usr/lib
# The whole run must fit in 6 minutes on the GPU host; each step gets at most what is left.
BUDGET_S=${GPU_CHECK_BUDGET_S:-330}
START_S=$(date +%s)
export DEBS OUT SRC WORK ROOT BUILD JOBS MA LDSO ROOT_LIBS USE_POCL
export LC_ALL=C

cleanup() {
  cp "$WORK/pocl-ld.log" "$OUT/logs/pocl-ld.log" 2>/dev/null || true
  if [ "$KEEP" -eq 0 ] && [ -n "$WORK" ] && [ -d "$WORK" ]; then
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# --- the steps: each runs in its own bash (set -euo pipefail) under a timeout, output to a log ---

# Unpacks every .deb into $ROOT (dpkg-deb -x; without dpkg-deb, the ar members by hand and tar),
# then re-points absolute symlinks into the root (libz.so -> /lib/... would otherwise name the host).
step_unpack() {
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  if command -v dpkg-deb >/dev/null; then
    echo "extracting with $(command -v dpkg-deb)"
    find "$DEBS" -maxdepth 1 -name '*.deb' -print0 | xargs -0 -P "$JOBS" -n 8 sh -c 'for d; do dpkg-deb -x "$d" "$0" || exit 1; done' "$ROOT"
  else
    echo "no dpkg-deb: extracting the data.tar member of each .deb with dd and tar"
    for d in "$DEBS"/*.deb; do deb_extract "$d" "$ROOT"; done
  fi
  n=0
  while IFS= read -r l; do
    ln -sfn "$ROOT$(readlink "$l")" "$l"
    n=$((n + 1))
  done < <(find "$ROOT" -type l -lname '/*')
  echo "re-pointed $n absolute symlinks into the root"
  test -x "$LDSO"
  "$LDSO" --version | sed -n 1p
  du -sh "$ROOT"
}

# A .deb is an ar archive: "!<arch>\n", then 60-byte headers (name 16, size at 48, 10 chars), each
# member padded to an even length. Only coreutils' dd is needed besides tar (and xz for .xz).
deb_extract() {
  local deb=$1 dest=$2 off=8 size name hdr
  local total
  total=$(stat -c %s "$deb")
  while [ "$off" -lt "$total" ]; do
    hdr=$(dd if="$deb" bs=1 skip="$off" count=60 2>/dev/null)
    name=${hdr:0:16}; name=${name%% *}; name=${name%/}
    size=${hdr:48:10}; size=${size%% *}
    if [[ $name == data.tar* ]]; then
      tail -c +$((off + 61)) "$deb" | head -c "$size" | tar -xf - -C "$dest"
      return 0
    fi
    off=$((off + 60 + size + size % 2))
  done
  echo "no data.tar member in $deb" >&2
  return 1
}

# Points every executable of the root at the root's dynamic loader with an RPATH into the root.
# patchelf itself comes from the root, so it runs through that loader explicitly.
step_relocate() {
  # A copy: patchelf rewriting its own running file would truncate it under itself.
  cp "$ROOT/usr/bin/patchelf" "$WORK/patchelf"
  "$LDSO" --library-path "$ROOT_LIBS" "$WORK/patchelf" --version
  find "$ROOT"/usr/bin "$ROOT"/bin "$ROOT"/usr/sbin "$ROOT"/usr/lib/gcc/$MA "$ROOT"/usr/libexec \
       "$ROOT"/usr/lib/llvm-*/bin -maxdepth 2 -type f -print0 2>/dev/null |
    xargs -0 -r -P "$JOBS" -n 16 bash -c 'for f; do relocate_one exe "$f"; done' _ >"$WORK/relocated-exe"
  echo "pointed $(wc -l <"$WORK/relocated-exe") executables at $LDSO"
  # A library with its own DT_RUNPATH (libclang-cpp, libLLVM: \$ORIGIN/../lib) does not search the
  # program's RPATH for what it needs, so the root goes first in its RUNPATH too; else the loader
  # would take the host's copies through /etc/ld.so.cache.
  find "$ROOT"/usr/lib/$MA "$ROOT"/lib/$MA "$ROOT"/usr/lib/llvm-*/lib -maxdepth 1 -type f -name '*.so*' -print0 |
    xargs -0 -r -P "$JOBS" -n 16 bash -c 'for f; do relocate_one lib "$f"; done' _ >"$WORK/relocated-lib"
  echo "put the root first in the RUNPATH of $(wc -l <"$WORK/relocated-lib") libraries:"
  sed "s|^$ROOT/|  |" "$WORK/relocated-lib"
  "$ROOT/usr/bin/gcc" --version | sed -n 1p
  "$ROOT/usr/bin/cmake" --version | sed -n 1p
  "$ROOT/usr/bin/make" --version | sed -n 1p
}

# relocate_one exe|lib FILE: an ELF program with an interpreter gets the root's loader and the
# root's directories first in its RPATH; a library gets them first in the RUNPATH it already has.
# Prints FILE when it changed it.
relocate_one() {
  local kind=$1 f=$2 rp magic
  local pe=("$LDSO" --library-path "$ROOT_LIBS" "$WORK/patchelf")
  magic=$(head -c 4 "$f" | od -An -c | tr -d ' ')
  [ "$magic" = '177ELF' ] || return 0
  if [ "$kind" = exe ]; then
    "${pe[@]}" --print-interpreter "$f" >/dev/null 2>&1 || return 0   # libraries, static programs
    rp=$("${pe[@]}" --print-rpath "$f")
    "${pe[@]}" --set-interpreter "$LDSO" --force-rpath --set-rpath "$ROOT_LIBS${rp:+:$rp}" "$f"
  else
    rp=$("${pe[@]}" --print-rpath "$f" 2>/dev/null) || return 0
    [ -n "$rp" ] || return 0
    "${pe[@]}" --set-rpath "$ROOT_LIBS:$rp" "$f"
  fi
  echo "$f"
}

# The environment every later step runs in: the root's tools first on PATH; pkg-config looks
# only in the root and prefixes its paths with it.
toolchain_env() {
  export PATH=$ROOT/usr/bin:$ROOT/bin:$PATH
  export PKG_CONFIG_LIBDIR=$ROOT/usr/lib/$MA/pkgconfig:$ROOT/usr/lib/pkgconfig:$ROOT/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$ROOT
  export PKG_CONFIG_PATH=
  export CMAKE_PREFIX_PATH=$ROOT/usr
  unset LD_LIBRARY_PATH CPATH C_INCLUDE_PATH LIBRARY_PATH GCC_EXEC_PREFIX COMPILER_PATH
  LINK_FLAGS="-Wl,--dynamic-linker=$LDSO -Wl,--disable-new-dtags -Wl,-rpath,$ROOT_LIBS"
}

# Compiles, links and runs a C and a C++ program with the root's compiler and --sysroot, and fails
# when the program loads any library from outside the root.
step_toolchain() {
  toolchain_env
  local t=$WORK/toolchain
  mkdir -p "$t"
  printf '#include <stdio.h>\n#include <math.h>\n#include <gnu/libc-version.h>\nint main(void) { printf("hello from glibc %%s, sqrt(2) = %%.3f\\n", gnu_get_libc_version(), sqrt(2.0)); return 0; }\n' >"$t/h.c"
  printf '#include <iostream>\nint main() { std::cout << "hello from C++" << std::endl; return 0; }\n' >"$t/h.cpp"
  gcc -v --sysroot="$ROOT" -O2 "$t/h.c" -o "$t/h" $LINK_FLAGS -lm 2>&1 | grep -E '^ /|^Target|^gcc version|cc1|collect2' | cut -c1-400
  g++ --sysroot="$ROOT" -O2 "$t/h.cpp" -o "$t/hpp" $LINK_FLAGS
  "$t/h"
  "$t/hpp"
  echo "libraries the C++ program loads:"
  LD_TRACE_LOADED_OBJECTS=1 "$t/hpp" | tee "$t/libs"
  if grep '=>' "$t/libs" | grep -v "=> $ROOT/"; then
    echo "a library came from outside $ROOT" >&2
    return 1
  fi
}

# resolve_lib NAME: the host's path of library NAME (its ld.so.cache, then the usual directories),
# or NAME itself when neither has it (the root's loader then searches for it by name).
resolve_lib() {
  local lib=$1 path dir
  path=$( { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true; } |
    awk -v l="$lib" '$1 == l && /x86-64/ && !p { print $NF; p = 1 }' 2>/dev/null) || path=
  if [ -z "$path" ]; then
    for dir in /usr/lib/$MA /usr/lib64 /usr/lib /lib/$MA /lib64 /usr/local/nvidia/lib64 /usr/lib/wsl/lib; do
      if [ -e "$dir/$lib" ]; then path=$dir/$lib; break; fi
    done
  fi
  echo "${path:-$lib}"
}

# Private ICD lists: the host's vendors (NVIDIA's, from the driver) with their library resolved to an
# absolute path, and the root's PoCL unless --no-pocl. The host's own PoCL (if any) is left out: it
# would need the host's LLVM. A driver whose ICD file is missing (some containers) still counts
# when libnvidia-opencl.so.1 is there.
step_icds() {
  local v lib path base
  mkdir -p "$WORK/icd-gpu" "$WORK/icd-all"
  : >"$WORK/icd-gpu.txt"
  for v in /etc/OpenCL/vendors/*.icd; do
    [ -f "$v" ] || continue
    base=$(basename "$v")
    lib=$(sed -n '1{s/\r$//;p}' "$v")
    echo "host ICD $v: $lib"
    case $base in pocl*) echo "  (the host's PoCL: left out)"; continue ;; esac
    path=$lib
    [[ $lib == /* ]] || path=$(resolve_lib "$lib")
    echo "  -> $path"
    echo "$path" >"$WORK/icd-gpu/$base"
    echo "$base" >>"$WORK/icd-gpu.txt"
  done
  if [ ! -s "$WORK/icd-gpu.txt" ]; then
    path=$(resolve_lib libnvidia-opencl.so.1)
    if [[ $path == /* ]]; then
      echo "no ICD file, but the NVIDIA driver's $path: using it"
      echo "$path" >"$WORK/icd-gpu/nvidia.icd"
      echo nvidia.icd >>"$WORK/icd-gpu.txt"
    fi
  fi
  cp "$WORK"/icd-gpu/*.icd "$WORK/icd-all/" 2>/dev/null || true
  if [ "$USE_POCL" -eq 1 ]; then
    echo "$ROOT/usr/lib/$MA/libpocl.so.2" >"$WORK/icd-all/pocl.icd"
  fi
  if [ ! -s "$WORK/icd-gpu.txt" ]; then
    echo "no host ICD (no NVIDIA driver's OpenCL): the benches run on the unpacked PoCL"
    echo "$ROOT/usr/lib/$MA/libpocl.so.2" >"$WORK/icd-gpu/pocl.icd"
  fi
  make_pocl_ld
  echo "unit tests see: $(ls "$WORK/icd-all" | tr '\n' ' ')"
  echo "benches see:    $(ls "$WORK/icd-gpu" | tr '\n' ' ')"
  ls "$WORK"/icd-all/*.icd >/dev/null
}

# The devices the unit tests will see (clinfo from the root), for the summary and the record.
step_devices() {
  toolchain_env
  OCL_ICD_VENDORS=$WORK/icd-all clinfo -l | tee "$OUT/devices.txt"
  OCL_ICD_VENDORS=$WORK/icd-all clinfo >"$OUT/clinfo.txt" 2>&1 || true
  # What the ICDs load from outside the root: the NVIDIA driver's libraries, nothing else.
  echo "libraries loaded from outside the root:"
  OCL_ICD_VENDORS=$WORK/icd-all LD_DEBUG=libs clinfo -l 2>&1 >/dev/null |
    sed -n 's/.*calling init: //p' | grep -v "^$ROOT/" | sort -u | sed 's/^/  /' || true
  grep -q 'Device #' "$OUT/devices.txt"
}

# PoCL links each kernel into a shared object through the clang driver (in-process), which runs
# `ld` from PATH with the host's library directories (-L/usr/lib/...): a bare host has no libc.so
# or libgcc there, and a host with a compiler has its own libc. This `ld`, first on PATH while the
# tests and benches run, drops those directories and links against the root (--sysroot, and its gcc
# directory for -lgcc and -lgcc_s). Each command line goes to $WORK/pocl-ld.log.
make_pocl_ld() {
  local gccdir
  gccdir=$(ls -d "$ROOT"/usr/lib/gcc/$MA/*/ | sed -n 1p)
  mkdir -p "$WORK/pocl-bin"
  {
    echo '#!/usr/bin/env bash'
    echo 'args=()'
    echo 'for a in "$@"; do'
    echo "  case \$a in -L$ROOT/*) args+=(\"\$a\") ;; -L/*) ;; *) args+=(\"\$a\") ;; esac"
    echo 'done'
    echo "printf 'ld %s\\n' \"\$*\" >>'$WORK/pocl-ld.log'"
    echo "exec '$ROOT/usr/bin/ld' --sysroot='$ROOT' -L'${gccdir%/}' \"\${args[@]}\""
  } >"$WORK/pocl-bin/ld"
  chmod +x "$WORK/pocl-bin/ld"
}

# What the tests and benches run in: the toolchain's PATH behind PoCL's ld (make_pocl_ld).
runtime_env() {
  toolchain_env
  export PATH=$WORK/pocl-bin:$PATH
  # PoCL's kernel cache stays in the work directory, not in the host's ~/.cache.
  export POCL_CACHE_DIR=$WORK/pocl-cache
  mkdir -p "$POCL_CACHE_DIR"
}

# Scripts that stand in for tools the CMake files look for but the steps here never run (the Python
# stubs, the man-page test): CMake's find_program needs a value; running one says why it is missing.
make_stubs() {
  local s
  mkdir -p "$WORK/stubs"
  for s in protoc grpc_python_plugin python3 man lexgrog; do
    printf '#!/bin/sh\necho "gpu-check: %s is not part of this check (bench/gpu-check.sh)" >&2\nexit 1\n' "$s" >"$WORK/stubs/$s"
    chmod +x "$WORK/stubs/$s"
  done
}

step_configure() {
  toolchain_env
  make_stubs
  rm -rf "$BUILD"
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_MAKE_PROGRAM="$ROOT/usr/bin/make" \
    -DCMAKE_C_COMPILER="$ROOT/usr/bin/gcc" -DCMAKE_CXX_COMPILER="$ROOT/usr/bin/g++" \
    -DCMAKE_SYSROOT="$ROOT" \
    -DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY \
    -DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY \
    -DCMAKE_EXE_LINKER_FLAGS="$LINK_FLAGS" -DCMAKE_SHARED_LINKER_FLAGS="$LINK_FLAGS" \
    -DPKG_CONFIG_EXECUTABLE="$ROOT/usr/bin/pkgconf" \
    -DPROTOC_C="$ROOT/usr/bin/protoc-c" -DHEALTH_PROTO_DIR="$ROOT/usr/share/grpc-proto" \
    -DMAKE_PROGRAM="$ROOT/usr/bin/make" \
    -DPROTOC="$WORK/stubs/protoc" -DGRPC_PYTHON_PLUGIN="$WORK/stubs/grpc_python_plugin" \
    -DSYSTEM_PYTHON3="$WORK/stubs/python3" -DMAN_PROGRAM="$WORK/stubs/man" \
    -DLEXGROG_PROGRAM="$WORK/stubs/lexgrog"
  # Every library the build found must be the root's.
  if grep -E '^[A-Za-z0-9_]+(_LIBRARY|_LINK_LIBRARIES|_INCLUDE_DIR)[A-Za-z_]*:' "$BUILD/CMakeCache.txt" |
     grep -E '=/(usr|lib)/'; then
    echo "the cache above names a path outside $ROOT" >&2
    return 1
  fi
}

step_build() {
  toolchain_env
  cmake --build "$BUILD" -j "$JOBS" --target unit_tests bench_cl bench_server
  echo "libraries unit_tests loads:"
  LD_TRACE_LOADED_OBJECTS=1 "$BUILD/tests/unit_tests" | tee "$WORK/unit_libs"
  if grep '=>' "$WORK/unit_libs" | grep -v "=> $ROOT/"; then
    echo "a library came from outside $ROOT" >&2
    return 1
  fi
}

step_unit() {
  runtime_env
  export OCL_ICD_VENDORS=$WORK/icd-all
  # One test at a time: engine_cl and sched time cancellations, which a second test would slow.
  ctest --test-dir "$BUILD" -R 'unit[.](engine_cl|sched)' --output-on-failure --timeout 200 -j 1 \
    --output-junit "$OUT/unit-tests.xml"
}

# The benches see the host's GPU ICDs only (PoCL would share the CPU engine's cores and add its
# cold compiles); with no host ICD they run on the root's PoCL, with one round, as a smoke test.
bench_env() {
  runtime_env
  export OCL_ICD_VENDORS=$WORK/icd-gpu
  # bench_cl's PyOpenCL peer needs the host's python3 and pyopencl: not part of this check.
  export BENCH_PEERS_DIR=${BENCH_PEERS_DIR:-$WORK/no-peers}
  REPS=${BENCH_REPS:-3}
  if [ ! -s "$WORK/icd-gpu.txt" ]; then REPS=${BENCH_REPS:-1}; fi
}

step_bench_cl() {
  bench_env
  "$BUILD/bench/bench_cl" "$REPS" | tee "$OUT/bench_cl.txt"
}

step_bench_server() {
  bench_env
  "$BUILD/bench/bench_server" "$REPS" | tee "$OUT/bench_server.txt"
}

export -f step_unpack deb_extract step_relocate relocate_one toolchain_env step_toolchain resolve_lib step_icds step_devices make_pocl_ld runtime_env make_stubs \
  step_configure step_build step_unit bench_env step_bench_cl step_bench_server

# --- the runner ---

names=()
declare -A result seconds
failed=0
# run NAME TIMEOUT_S RESERVE_S NEEDS...: runs step_NAME unless a step it needs did not pass, for at
# most TIMEOUT_S and never into the last RESERVE_S of the budget; records the result.
run() {
  local name=$1 limit=$2 reserve=$3 need left t0 rc log
  shift 3
  log=$OUT/logs/$(printf '%02d' $(( ${#names[@]} + 1 )))-$name.log
  names+=("$name")
  for need in "$@"; do
    if [ "${result[$need]:-}" != pass ]; then
      result[$name]="skip (needs $need)"; seconds[$name]=0; failed=1
      echo "gpu-check: $name: skipped, $need did not pass"
      return 0
    fi
  done
  left=$(( BUDGET_S - ($(date +%s) - START_S) ))
  if [ $((left - reserve)) -ge 30 ]; then left=$((left - reserve)); fi
  if [ "$left" -lt 15 ]; then
    result[$name]="skip (out of time)"; seconds[$name]=0; failed=1
    echo "gpu-check: $name: skipped, out of time"
    return 0
  fi
  [ "$limit" -le "$left" ] || limit=$left
  echo "gpu-check: $name (at most ${limit} s, log $log)"
  t0=$(date +%s)
  rc=0
  timeout -k 10 "$limit" bash -euo pipefail -c "step_$name" >"$log" 2>&1 </dev/null || rc=$?
  seconds[$name]=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 0 ]; then
    result[$name]=pass
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    result[$name]="FAIL (timed out after ${limit} s)"; failed=1
  else
    result[$name]="FAIL (exit $rc)"; failed=1
  fi
  echo "gpu-check: $name: ${result[$name]} in ${seconds[$name]} s"
  if [ "$rc" -ne 0 ]; then
    tail -n 15 "$log" | sed 's/^/    | /'
  fi
}

# The host, for the record (never a failed step: nvidia-smi is optional).
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "uname: $(uname -a)"
  echo "os: $( (. /etc/os-release && echo "$PRETTY_NAME") 2>/dev/null || echo unknown)"
  echo "host glibc: $(getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown)"
  echo "cpus: $JOBS"
  echo "source: $SRC ($(cd "$SRC" && git rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
  echo "debs: $DEBS ($(ls "$DEBS"/*.deb | wc -l) files)"
  echo "work: $WORK"
  echo "host ICDs: $(ls /etc/OpenCL/vendors/ 2>/dev/null | tr '\n' ' ')"
} >"$OUT/host.txt"
if command -v nvidia-smi >/dev/null; then
  timeout 60 nvidia-smi -q >"$OUT/nvidia-smi.txt" 2>&1 || true
  timeout 30 nvidia-smi -L >>"$OUT/host.txt" 2>&1 || true
else
  echo "nvidia-smi: not present" >>"$OUT/host.txt"
fi
cat "$OUT/host.txt"

# run NAME LIMIT_S RESERVE_S NEEDS...: RESERVE_S is kept back for the steps after it.
run unpack 120 0
run relocate 60 0 unpack
run toolchain 60 0 relocate
run icds 30 0 relocate
run devices 60 0 icds
run configure 120 0 toolchain
run build 200 0 configure
run unit 150 120 build icds
run bench_cl 150 60 build icds
run bench_server 150 0 build icds

total=$(( $(date +%s) - START_S ))
{
  echo "== gpu-check summary ($(date -u +%H:%M:%SZ), ${total} s in all, budget ${BUDGET_S} s)"
  echo "host: $(sed -n 's/^os: //p' "$OUT/host.txt"), glibc $(getconf GNU_LIBC_VERSION 2>/dev/null | cut -d' ' -f2), $JOBS cpus"
  grep -E '^GPU ' "$OUT/host.txt" || true
  echo "OpenCL devices (unit tests):"
  if [ -s "$OUT/devices.txt" ]; then sed 's/^/  /' "$OUT/devices.txt"; else echo "  (none listed)"; fi
  if [ -f "$WORK/icd-gpu.txt" ] && [ ! -s "$WORK/icd-gpu.txt" ]; then
    echo "  no NVIDIA (no host ICD in /etc/OpenCL/vendors): benches ran on the unpacked PoCL"
  fi
  echo "steps:"
  for n in "${names[@]}"; do
    printf '  %-13s %-30s %4s s  logs/%s\n' "$n" "${result[$n]}" "${seconds[$n]}" \
      "$(cd "$OUT/logs" && ls -- *-"$n".log 2>/dev/null)"
  done
  if ls "$OUT"/logs/*-unit.log >/dev/null 2>&1; then
    grep -E 'tests passed|Test +#|\*\*\*' "$OUT"/logs/*-unit.log 2>/dev/null | sed 's/^/  /' || true
  fi
  if [ -s "$OUT/bench_cl.txt" ]; then
    echo "bench_cl (Giter/s):"
    grep -E '^  \[|^dev |^[0-9]+ +[ABC] ' "$OUT/bench_cl.txt" | sed 's/^/  /' || true
  fi
  if [ -s "$OUT/bench_server.txt" ]; then
    echo "bench_server (Giter/s):"
    grep -E '^  [a-z]|^wl |^[ABC] +fp' "$OUT/bench_server.txt" | sed 's/^/  /' || true
  fi
  if [ "$failed" -eq 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
} | tee "$OUT/summary.txt"
exit "$failed"
