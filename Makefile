# tokenhunt: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LAKE   ?= lake
OUT    ?= out

.PHONY: setup demo test test-fast bench sample lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,spark]'
	@touch $(STAMP)

setup: $(STAMP) ## create the virtual environment and install tokenhunt with its test and spark extras

sample: $(STAMP) ## regenerate sample_logs/ (deterministic)
	$(PY) -m pipeline.samplegen --out sample_logs

demo: $(STAMP) ## run the nightly job on sample_logs/ into ./lake and print the findings
	rm -rf $(LAKE) $(OUT)
	$(VENV)/bin/tokenhunt ingest sample_logs --lake $(LAKE) --quality warn || test $$? -le 1

test: $(STAMP) ## the whole test suite (set-up included)
	$(VENV)/bin/pytest -n 2 -q -p no:cacheprovider tests

test-fast: $(STAMP)
	$(VENV)/bin/pytest -n 2 -q -m "not slow" tests

bench: $(STAMP) ## performance figures (never asserted in tests)
	$(VENV)/bin/tokenhunt bench --out bench_out

clean:
	rm -rf $(VENV) $(LAKE) $(OUT) bench_out .pytest_cache
