# tokenhunt: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LAKE   ?= lake
OUT    ?= out

.PHONY: setup demo test test-fast bench sample lint clean report-check lint-sql generated test-spark

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
	test -f sample_logs/expected.json || $(PY) -m pipeline.samplegen --out sample_logs
	# exit 10 (new findings) and 20 (retention below policy) are the demo's point, not failures;
	# --as-of pins the retention verdicts to the sample's last day (2026-11-20).
	$(VENV)/bin/tokenhunt nightly sample_logs --keys sample_logs/jwks --indicators sample_logs/indicators \
		--exclude expected.json --lake $(LAKE) --out $(OUT) --profile minimal --as-of 2026-11-20 \
		|| test $$? -eq 10 -o $$? -eq 20

test: $(STAMP) ## the whole test suite (set-up included)
	$(VENV)/bin/pytest -n 2 --dist loadgroup -q -p no:cacheprovider tests

lint-sql: $(STAMP) ## portable-SQL lint of every detection and hunt (also part of `make test`: tests/test_sql_portability.py)
	$(VENV)/bin/tokenhunt sql lint
	$(VENV)/bin/tokenhunt sql transpile --all --check

generated: $(STAMP) ## regenerate queries/generated/{spark,trino}/<id>.sql after changing a detection (commit the result)
	$(VENV)/bin/tokenhunt sql transpile --all --write

test-spark: $(STAMP) ## DuckDB vs Spark (local mode) parity on the sample lake (needs Java 17; part of `make test`)
	$(VENV)/bin/pytest -q -p no:cacheprovider -m spark tests/test_spark_parity.py

test-fast: $(STAMP)
	$(VENV)/bin/pytest -n 2 -q -m "not slow" tests

bench: $(STAMP) ## performance figures (never asserted in tests)
	$(VENV)/bin/tokenhunt bench --out bench_out

report-check: $(STAMP) ## render the retention report of the demo lake to out/retention.html; screenshot with headless Chromium if installed
	test -d $(LAKE) || $(MAKE) demo
	mkdir -p $(OUT)
	$(VENV)/bin/tokenhunt retention --lake $(LAKE) --format html --out $(OUT)/retention.html || test $$? -ge 20
	@if [ -x /usr/bin/chromium ]; then \
		/usr/bin/chromium --headless --disable-gpu --no-sandbox --hide-scrollbars --window-size=1400,2600 \
			--screenshot=$(abspath $(OUT))/retention.png file://$(abspath $(OUT))/retention.html && echo "screenshot: $(OUT)/retention.png"; \
	else echo "no /usr/bin/chromium: screenshot skipped; open $(OUT)/retention.html"; fi

clean:
	rm -rf $(VENV) $(LAKE) $(OUT) bench_out .pytest_cache
