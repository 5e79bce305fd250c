# The two commands: `make demo` runs the product on a simulated fleet, `make test` runs the tests.
# Both set everything up on a fresh machine (virtualenv, packages, embedded PostgreSQL/Redis).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint bench bench-learning bench-loop bench-storage bench-history browser clean

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

demo: $(INSTALLED)
	$(PY) -m sentinel.demo

test: $(INSTALLED) browser
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

# The browser tests drive Debian's Chromium; install it when we may (root), else they skip.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver for the browser tests"; \
	    (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1)) || \
	    echo "could not install chromium: the browser tests will be skipped"; \
	  else echo "chromium not found: the browser tests will be skipped (apt-get install chromium chromium-driver)"; fi; \
	fi

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy agent learning mitigations

# Figures, not pass/fail: the data path with real simulated agents, one worker at full rate
# (replayed checkpoints), and the agent's own cost on a host.
bench: $(INSTALLED)
	$(PY) bench/ingest --agents 100
	$(PY) bench/ingest --replay --agents 1000
	$(PY) bench/agent_cost.py --checkpoints 30 --interval-s 1.0

evaluate:: ; @$(MAKE) --no-print-directory $(INSTALLED) && $(PY) evaluate/run

# Whether the forecasts' bands hold what came, against "it stays as it is".
evaluate-forecasts:: ; @$(MAKE) --no-print-directory $(INSTALLED) && $(PY) evaluate/forecasts

# What the predictions cost: each detector and forecast, the state graph, the whole analysis
# of one checkpoint as the worker runs it (budget 2 ms CPU), and training on 10,000 windows.
bench-learning: $(INSTALLED)
	$(PY) bench/learning_speed.py
	$(PY) bench/analysis_speed.py

# The self-healing loop: the learner taking over from a scripted operator on the simulated
# fleet, the safety drills, and the reaction time through the real processes at a 1 s poll.
bench-loop: $(INSTALLED)
	$(PY) bench/loop
	$(PY) bench/reaction

# Checkpoint storage per host-day, raw and as 1-minute rollups, and what rolling up and
# pruning a day cost (a few hosts, a day at the 5 s poll; under 3 minutes).
bench-storage: $(INSTALLED)
	$(PY) bench/storage

# The incident history pages on a big history: 100,000 incidents and 10 million checkpoints,
# loaded once into a database of its own (sentinel_history; reused by later runs, --reload to
# load again), then the list, incident, export and patterns pages timed (p50/p95/max, queries).
bench-history: $(INSTALLED)
	$(PY) bench/history

clean:
	rm -rf $(VENV) .sentinel
