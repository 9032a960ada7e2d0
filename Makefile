# cvtasks — developer entry points.  `make test` is what CI runs (.ci/run).
#   make deps      install missing Debian packages (scripts/packages.txt)
#   make build     configure + build into build/ (binaries in build/bin)
#   make test      deps + build + C++ tests (ctest) + Python interop tests
#   make unit      C++ tests only (ctest)         make interop   pytest tests/interop only
#   make run       the example CVProject: migrate, seed, then Redis + SMTP sink + Django + worker + beat
#                  under supervisord in the foreground (scripts/run-dev.sh)
#   make bench     bench/run.sh, if present      make clean     remove build/
#   make faults    pytest tests/faults (the fault suite, records in build/faults/results.jsonl)
#   make soak      tests/soak/soak.py (SOAK_SECONDS, default 120)
#   make reliability  faults + soak, then docs/reliability.md from their records
#   make fuzz      scripts/fuzz.sh: libFuzzer on the protocol decoder (clang, build-fuzz/, FUZZ_SECONDS)
#   make sanitize  unit + integration tests built with ASan/UBSan in build-asan/
#   make container-test  scripts/container-test.sh: the Dockerfile + compose.yaml end to end with
#                  podman (image build, tasks from the web container, warm shutdown)
SHELL       := /bin/bash
.SHELLFLAGS := -euo pipefail -c

ROOT        := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
BUILD_DIR   ?= $(ROOT)/build
BUILD_TYPE  ?= RelWithDebInfo
JOBS        ?= 2
PYTHON      ?= /usr/bin/python3
PYTEST_ARGS ?= -q
CMAKE_ARGS  ?=
ASAN_DIR    ?= $(ROOT)/build-asan
SANITIZERS  ?= address,undefined
SOAK_SECONDS ?= 120
FUZZ_SECONDS ?= 60
# CI=true adds the fuzzer, the sanitizers and the soak to `make test`.
CI          ?=

.NOTPARALLEL:
.PHONY: all deps configure build test unit interop faults soak reliability fuzz sanitize run \
        bench clean container-test

all: build

deps:
	$(ROOT)/scripts/deps.sh

configure:
	cmake -S $(ROOT) -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

build: configure
	cmake --build $(BUILD_DIR) -j$(JOBS)

# Both suites always run; the target fails if either failed.
test: deps build
	@rc=0; \
	echo "== C++ tests (ctest)"; \
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j1 || rc=1; \
	echo "== interop tests (pytest)"; \
	(cd $(ROOT) && $(PYTHON) -m pytest $(PYTEST_ARGS) tests/interop) || rc=1; \
	echo "== fault suite (pytest)"; \
	(cd $(ROOT) && $(PYTHON) -m pytest $(PYTEST_ARGS) tests/faults) || rc=1; \
	if [ "$(CI)" = true ]; then \
	  echo "== soak ($(SOAK_SECONDS) s)"; $(MAKE) --no-print-directory soak || rc=1; \
	  echo "== fuzzer ($(FUZZ_SECONDS) s)"; $(MAKE) --no-print-directory fuzz || rc=1; \
	  echo "== sanitizers"; $(MAKE) --no-print-directory sanitize || rc=1; \
	  echo "== container test"; $(MAKE) --no-print-directory container-test || rc=1; \
	fi; \
	if [ $$rc -ne 0 ]; then echo "make test: FAILED"; else echo "make test: OK"; fi; \
	exit $$rc

unit: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure

interop: build
	cd $(ROOT) && $(PYTHON) -m pytest $(PYTEST_ARGS) tests/interop

faults: build
	cd $(ROOT) && $(PYTHON) -m pytest $(PYTEST_ARGS) tests/faults

soak: build
	$(PYTHON) $(ROOT)/tests/soak/soak.py --seconds $(SOAK_SECONDS)

# The table is rendered even when a case failed: it then says FAIL.
reliability: build
	@rc=0; $(MAKE) --no-print-directory faults || rc=1; $(MAKE) --no-print-directory soak || rc=1; \
	$(PYTHON) $(ROOT)/tests/faults/report.py; exit $$rc

fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) JOBS=$(JOBS) $(ROOT)/scripts/fuzz.sh

sanitize:
	cmake -S $(ROOT) -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
	  -DCVTASKS_SANITIZE=$(SANITIZERS) $(CMAKE_ARGS)
	cmake --build $(ASAN_DIR) -j$(JOBS) --target unit_tests integration_tests run_celery_worker run_celery_beat
	ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ctest --test-dir $(ASAN_DIR) --output-on-failure -j1

# Needs no host build: the image compiles its own binaries.
container-test:
	JOBS=$(JOBS) CI=$(CI) $(ROOT)/scripts/container-test.sh

run: deps build
	$(ROOT)/scripts/run-dev.sh

bench: build
	@if [ -x $(ROOT)/bench/run.sh ]; then $(ROOT)/bench/run.sh; \
	elif [ -f $(ROOT)/bench/run.sh ]; then bash $(ROOT)/bench/run.sh; \
	else echo "bench: no bench/run.sh yet"; fi

clean:
	rm -rf $(BUILD_DIR)
