# moekit top-level entry points. The real build is CMake; this file gives
# the two set-up commands of the README (`make demo`, `make test`) and a few
# conveniences. Every target installs dependencies first (idempotent).
BUILD      ?= build
BUILD_SAN  ?= build-san
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CC         ?= cc
FUZZ_SECONDS ?= 30
DEMO_MODEL ?= models/tiny-qwen35moe

.PHONY: all deps build build-san test test-fast test-san demo fuzz fuzz-smoke bench clean format

all: build

.deps-stamp: scripts/install-deps.sh $(wildcard scripts/install-deps.d/*.sh)
	bash scripts/install-deps.sh
	@touch $@

deps: .deps-stamp

build: .deps-stamp
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j$(JOBS)

# The sanitizer build also holds the libFuzzer targets (MK_FUZZ): one clang
# build serves the ASan+UBSan tests and the fuzz smoke run.
build-san: .deps-stamp
	cmake -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=Debug -DMK_SANITIZE=ON -DMK_FUZZ=ON -DCMAKE_C_COMPILER=clang
	cmake --build $(BUILD_SAN) -j$(JOBS)

# Everything: the optimized build with gcc, the ASan+UBSan build with clang,
# and a short fuzz run over the parsers.
test: build build-san
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)
	cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j$(JOBS) -LE slow
	$(MAKE) fuzz-smoke
	@echo "make test: all suites passed"

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# `make fuzz FUZZ_SECONDS=600` for a longer run; `make test` runs 30 s.
fuzz: build-san
	bash tests/fuzz/run.sh $(BUILD_SAN) $(FUZZ_SECONDS)

fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=30

demo: build
	bash scripts/demo.sh $(BUILD)/moekit $(DEMO_MODEL)

bench: build
	bash bench/run.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(BUILD_SAN) .deps-stamp
