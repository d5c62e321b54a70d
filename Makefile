# fractald: the two set-up commands of the README, and a few more for developers.
#   make run    install missing packages, build, start fractald on 127.0.0.1:50051 with its HTTP
#               listener and viewer on 127.0.0.1:8080 (HTTP=... moves it, HTTP= turns it off;
#               ARGS=... adds flags)
#   make test   install missing packages, build, run every test (ctest)
#   make install   build, then install into $(DESTDIR)$(PREFIX) (README: Install)
#   make fuzz   build the libFuzzer targets (clang) in build-fuzz, run each FUZZ_SECONDS (tests/fuzz)
BUILD      ?= build
ASAN_BUILD ?= build-asan
BUILD_TYPE ?= RelWithDebInfo
WERROR     ?= OFF
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
ARGS       ?=
HTTP       ?= 127.0.0.1:8080
PREFIX     ?= /usr/local
DESTDIR    ?=
CMAKE_FLAGS = -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DFRACTALD_WERROR=$(WERROR)
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 30

.PHONY: all deps build run test test-asan bench install clean fuzz-build fuzz fuzz-smoke

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

run: build
	@if [ -n "$(HTTP)" ]; then echo "viewer: http://$(HTTP)/"; fi
	$(BUILD)/server/fractald $(if $(HTTP),--http-listen $(HTTP)) $(ARGS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

# The test suite again under AddressSanitizer + UndefinedBehaviorSanitizer (CI runs this too).
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DFRACTALD_SANITIZE=ON -DFRACTALD_WERROR=$(WERROR)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

bench: build
	$(BUILD)/bench/bench_cpu

# The programs, libfractal (shared, static, headers, fractal.pc), the protos, man pages, the systemd
# unit and an example config. Paths written into fractal.pc and the unit are PREFIX's, not DESTDIR's.
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

# libFuzzer targets (tests/fuzz): their own clang build, every library instrumented; each target
# runs FUZZ_SECONDS on one core, new inputs kept in $(FUZZ_BUILD)/fuzz-work, not in the repository;
# any crash, sanitizer report or failed check fails the run. fuzz-smoke is CI's short version.
fuzz-build: deps
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFRACTALD_FUZZ=ON -DBUILD_TESTING=OFF -DFRACTALD_WERROR=$(WERROR)
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_targets

fuzz: fuzz-build
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz-smoke: fuzz-build
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SMOKE_SECONDS)

# A soak of SOAK_MINUTES against a real fractald on 127.0.0.1: 32 clients of mixed traffic, a kill -9
# and restart every SOAK_KILL_EVERY_S; fails on a lost call or job or unbounded RSS or fds. Not in
# `make test` or CI (tests/soak/README.md; SOAK_* variables given to make reach the script).
SOAK_MINUTES ?= 30
.PHONY: soak
soak: build
	SOAK_MINUTES=$(SOAK_MINUTES) FRACTALD_BIN=$(abspath $(BUILD))/server/fractald FRACTAL_PY_GEN=$(abspath $(BUILD))/tests/pygen \
	  /usr/bin/python3 tests/soak/soak.py

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
