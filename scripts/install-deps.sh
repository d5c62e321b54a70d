#!/usr/bin/env bash
# install-deps.sh: installs the Debian packages fractald's build, tests and `make run` need.
# Skips what is already installed; uses sudo when not root.
set -euo pipefail

packages=(
  build-essential g++ cmake pkg-config                   # toolchain (g++: the public header is checked as C++)
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler      # gRPC C core, protobuf-c
  grpc-proto                                             # grpc/health/v1/health.proto
  libpng-dev zlib1g-dev libcjson-dev                     # PNG encoder, PNG text chunks, JSON mapping
  libinih-dev                                            # device-selection config file (INI)
  ocl-icd-opencl-dev opencl-headers pocl-opencl-icd      # OpenCL loader, headers, PoCL CPU device
  libsqlite3-dev                                         # job store journal (server/jobs/jobs.c)
  libpq-dev postgresql                                   # --job-store (server/jobs/jobs_pg*.c); initdb for test_jobs_pg.py
  libmpfr-dev                                            # arbitrary precision reference orbits (server/deep/)
  libcmocka-dev                                          # unit-test framework
  python3 python3-grpcio python3-protobuf                # black-box tests from Python
  protobuf-compiler protobuf-compiler-grpc               # protoc (also the reflection descriptors) + grpc_python_plugin
  man-db                                                 # man --warnings, lexgrog: the man pages' test
  openssl                                                # certificates made by tests/python/test_security.py
  libmicrohttpd-dev                                      # the HTTP listener, --http-listen (server/http/)
  libjs-leaflet                                          # Leaflet, embedded in the viewer at / (no CDN)
  prometheus                                             # promtool: tests/python/test_http.py checks /metrics
  chromium chromium-driver python3-selenium              # the viewer's browser test (test_http_browser.py)
  wrk                                                    # bench/bench_http.py: tile throughput
  # deploy/: nginx for tests/python/test_nginx.py, which runs its own in the foreground on an
  # ephemeral port. On a host (not a container with policy-rc.d) the package also starts
  # nginx.service on port 80: `systemctl disable --now nginx` if it should not run; the test never
  # uses it. python3-yaml: tests/python/test_deploy_manifests.py reads the Kubernetes manifests.
  nginx python3-yaml
  # make fuzz (tests/fuzz): clang with libFuzzer. On Debian 12 clang (clang-14) only recommends the
  # compiler-rt runtimes, and this script skips recommends: libclang-rt-dev (libclang-rt-14-dev)
  # brings libclang_rt.fuzzer, asan and ubsan, without which -fsanitize=fuzzer does not link.
  clang libclang-rt-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
