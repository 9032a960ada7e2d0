# cvtasks — developer entry points.  `make test` is what CI runs (.ci/run).
#   make deps      install missing Debian packages (scripts/packages.txt)
#   make build     configure + build into build/ (binaries in build/bin)
#   make test      deps + build + C++ tests (ctest) + Python interop tests
#   make unit      C++ tests only (ctest)         make interop   pytest tests/interop only
#   make run       the example CVProject: migrate, seed, then Redis + SMTP sink + Django + worker + beat
#                  under supervisord in the foreground (scripts/run-dev.sh)
#   make bench     bench/run.sh, if present      make clean     remove build/
SHELL       := /bin/bash
.SHELLFLAGS := -euo pipefail -c

ROOT        := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
BUILD_DIR   ?= $(ROOT)/build
BUILD_TYPE  ?= RelWithDebInfo
JOBS        ?= 2
PYTHON      ?= /usr/bin/python3
PYTEST_ARGS ?= -q
CMAKE_ARGS  ?=

.NOTPARALLEL:
.PHONY: all deps configure build test unit interop run bench clean

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
	if [ $$rc -ne 0 ]; then echo "make test: FAILED"; else echo "make test: OK"; fi; \
	exit $$rc

unit: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure

interop: build
	cd $(ROOT) && $(PYTHON) -m pytest $(PYTEST_ARGS) tests/interop

run: deps build
	$(ROOT)/scripts/run-dev.sh

bench: build
	@if [ -x $(ROOT)/bench/run.sh ]; then $(ROOT)/bench/run.sh; \
	elif [ -f $(ROOT)/bench/run.sh ]; then bash $(ROOT)/bench/run.sh; \
	else echo "bench: no bench/run.sh yet"; fi

clean:
	rm -rf $(BUILD_DIR)
