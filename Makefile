# Every target creates the virtualenv on first use, so a fresh clone needs only python3.11.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The exact versions of every dependency the tests ran with (a constraints file made by uv from
# pyproject.toml's ranges): installs here, in CI and in the Dockerfile use it.
LOCK   := requirements.lock
UV_VERSION ?= 0.13.9
UV     := $(VENV)/bin/uv
# One resolution for every platform and Python >= 3.11, so the lock serves Linux, macOS and the image.
LOCK_COMPILE := $(UV) pip compile pyproject.toml --extra test --universal --python-version 3.11 \
                --custom-compile-command "make lock" --quiet -o $(LOCK)

.PHONY: venv test test-slow demo bench bench-stream bench-soak bench-ops lint lock lock-upgrade clean

# uv (from PyPI, into the virtualenv) installs in ~30 s what pip takes ~75 s for; should it
# be unavailable, pip does the same install. Both take the versions from $(LOCK).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	( $(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)" && \
	  $(UV) pip install --quiet --python $(PY) -c $(LOCK) -e ".[test]" ) || \
	  $(PY) -m pip install --quiet --disable-pip-version-check -c $(LOCK) -e ".[test]"
	touch $(STAMP)

$(UV):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# After a change to the dependencies in pyproject.toml: resolve again, keeping every pinned
# version that still fits. Then `make venv` installs the result.
lock: $(UV)
	$(LOCK_COMPILE)

# Every dependency to its newest version within pyproject.toml's ranges (then run the tests).
lock-upgrade: $(UV)
	$(LOCK_COMPILE) --upgrade

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

demo: $(STAMP)
	$(VENV)/bin/mmc demo

bench: $(STAMP)
	$(PY) benchmarks/bench_scoring.py

bench-stream: $(STAMP)
	$(PY) benchmarks/bench_stream.py

bench-soak: $(STAMP)
	$(PY) benchmarks/bench_soak.py --rounds 60 --round-seconds 10

# Ingestion with 1 and 2 workers, `mmc rebuild --wipe` at 2,000 and 10,000 models, live page
# fan-out to 100, 500 and 1,000 clients, side by side in one run (a quiet machine).
bench-ops: $(STAMP)
	$(PY) benchmarks/bench_ops.py

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff mypy import-linter
	$(VENV)/bin/ruff format --check scoring streams tests benchmarks
	$(VENV)/bin/ruff check scoring streams tests benchmarks
	$(VENV)/bin/mypy scoring streams
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
