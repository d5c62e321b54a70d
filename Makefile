# fractald: the two set-up commands of the README, and a few more for developers.
#   make run    install missing packages, build, start fractald on 127.0.0.1:50051 (ARGS=... adds flags)
#   make test   install missing packages, build, run every test (ctest)
#   make install   build, then install into $(DESTDIR)$(PREFIX) (README: Install)
BUILD      ?= build
ASAN_BUILD ?= build-asan
BUILD_TYPE ?= RelWithDebInfo
WERROR     ?= OFF
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
ARGS       ?=
PREFIX     ?= /usr/local
DESTDIR    ?=
CMAKE_FLAGS = -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DFRACTALD_WERROR=$(WERROR)

.PHONY: all deps build run test test-asan bench install clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/server/fractald $(ARGS)

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

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
