#!/usr/bin/env bash
# gpu-debs.sh: downloads into DIR every Debian package (.deb) that bench/gpu-check.sh unpacks on
# an offline GPU host: the toolchain, fractald's build and test libraries, PoCL, and all that they
# depend on (the full Depends/Pre-Depends closure, no Recommends), for this machine's architecture.
# Run it on a machine with network and apt of the same release as the one the .debs should come
# from (Debian 12 bookworm here). Usage: bench/gpu-debs.sh DIR   (bench/README.md: GPU check)
set -euo pipefail

if [ $# -ne 1 ] || [ "${1:0:1}" = "-" ]; then
  echo "usage: $0 DIR   (downloads the .debs bench/gpu-check.sh needs into DIR)" >&2
  exit 2
fi
dir=$1

# The roots of the closure. Keep in step with scripts/install-deps.sh for what the build needs;
# the Python, protoc and man-db packages are left out (no test that gpu-check.sh runs uses them).
roots=(
  gcc g++ make libc6-dev binutils cmake pkgconf       # toolchain (CMake enables C and CXX)
  patchelf                                            # points the unpacked programs at the unpacked libc
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler   # gRPC C core, protobuf-c (protoc-c)
  grpc-proto                                          # grpc/health/v1/health.proto
  libpng-dev zlib1g-dev libcjson-dev libinih-dev libsqlite3-dev libcmocka-dev
  ocl-icd-opencl-dev opencl-headers ocl-icd-libopencl1
  pocl-opencl-icd                                     # PoCL: the CPU OpenCL device (and its LLVM)
  clinfo                                              # the device list in the summary
  libmpfr-dev libgmp-dev                              # deep zoom: reference orbits in MPFR
  libmicrohttpd-dev libjs-leaflet                     # HTTP front end and its embedded viewer
)

arch=$(dpkg --print-architecture)
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq

# The closure: apt-cache prints each package once at column 0 (virtual ones in <angle brackets>,
# which have no .deb of their own; the real package that provides one is in the list by its name).
# Alternatives (a | b) bring both, so the list is a superset of what any one install needs.
mapfile -t pkgs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances "${roots[@]}" |
  grep -E '^[a-z0-9]' | sed "s/:$arch\$//" | grep -v ':' | sort -u)

# Only packages with a candidate version for this architecture can be downloaded (a virtual name
# that slipped through, or another architecture's package, has none).
real=()
for p in "${pkgs[@]}"; do
  cand=$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: //p')
  if [ -n "$cand" ] && [ "$cand" != "(none)" ]; then
    real+=("$p")
  fi
done

mkdir -p "$dir"
echo "gpu-debs: downloading ${#real[@]} packages into $dir"
(cd "$dir" && apt-get download -q "${real[@]}" >/dev/null)
# A manifest beside the .debs: what was asked for and what came, for the record.
{
  echo "# gpu-debs.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME") ($arch)"
  echo "# roots: ${roots[*]}"
  (cd "$dir" && ls -1 ./*.deb | sed 's|^\./||')
} >"$dir/MANIFEST"
n=$(ls -1 "$dir"/*.deb | wc -l)
echo "gpu-debs: $n .debs, $(du -sh "$dir" | cut -f1) in $dir"
