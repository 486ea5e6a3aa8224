# Every target creates the virtualenv on first use, so a fresh clone needs only python3.11.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test test-slow demo bench bench-stream bench-soak lint clean

# uv (from PyPI, into the virtualenv) installs in ~30 s what pip takes ~75 s for; should it
# be unavailable, pip does the same install.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	( $(PY) -m pip install --quiet --disable-pip-version-check uv && \
	  $(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[test]" ) || \
	  $(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

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
	$(PY) benchmarks/bench_soak.py

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff mypy
	$(VENV)/bin/ruff check scoring streams tests benchmarks
	$(VENV)/bin/mypy scoring

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
