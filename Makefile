# tokenhunt: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LAKE   ?= lake
OUT    ?= out

.PHONY: setup demo test test-fast bench sample lint clean report-check

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
