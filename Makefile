# The README's commands: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the project into it when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test check lint browser notebooks lab bench clean install export-job flex-template flex-run

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m txpipe demo

# Two workers (each with its own emulators; a module or a notebook stays on one worker, so
# module-scoped fixtures run once and a notebook's cells share one kernel).
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadfile
test: $(STAMP) lint browser
	$(PY) -m pytest $(XDIST) tests
	$(PY) -m pytest $(XDIST) --nbval notebooks --nbval-current-env --sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m ruff check .

# The dashboard's browser test drives Debian's Chromium: installed here where that can be done
# (root with apt, as on CI); elsewhere that test skips and names the command.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		>/dev/null; } || echo "no chromium: the dashboard's browser test will skip" \
		"(apt-get update && apt-get install -y chromium)"

# The quick tier for day-to-day work (under two minutes): lint and every test with none of the
# markers `emulator`, `subprocess`, `slow` (declared in pyproject.toml; a new test file is in
# it unless it needs more). `make test` remains the whole suite, with the notebooks.
QUICK := not emulator and not subprocess and not slow
check: $(STAMP) lint
	$(PY) -m pytest -q $(XDIST) -m "$(QUICK)" tests

# Dataflow (docs/dataflow.md). export-job needs no cloud account: it writes the streaming job
# that `run --runner DataflowRunner` would submit to ./job. flex-template / flex-run build and
# run the Flex Template with gcloud; they refuse without a real PROJECT_ID.
export-job: $(STAMP)
	$(PY) -m txpipe export-job --output job --streaming

flex-template: $(STAMP)
	PY=$(PY) dataflow/flex-template.sh build

flex-run: $(STAMP)
	PY=$(PY) dataflow/flex-template.sh run

# Notebooks (notebooks/README.md): `lab` opens them; `notebooks` re-executes every one and saves
# its outputs in place (seeded data, fixed timestamps: the same results each time).
# `lab` brings the local stack up first (the Pub/Sub emulator, PUBSUB_EMULATOR_HOST exported for
# the kernels) and stops it on exit if it started it; without the emulator notebook 05 says so.
lab: $(STAMP)
	@up=$$($(PY) -m txpipe local up 2>&1); echo "$$up"; \
	eval "$$($(PY) -m txpipe local env 2>/dev/null)"; \
	case "$$up" in *" started:"*) trap '$(PY) -m txpipe local down' EXIT INT TERM;; esac; \
	$(VENV)/bin/jupyter lab notebooks

notebooks: $(STAMP)
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.kernel_name=python3 --ExecutePreprocessor.timeout=600 \
		--ExecutePreprocessor.record_timing=False notebooks/[0-9]*.ipynb

# Benchmarks (benchmarks/README.md): every figure against its baseline in one run; replaces the
# table there. BENCH_ARGS="--transactions 100000 --large 0 --skip simulator" for a quick one.
bench: $(STAMP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf .local build dist *.egg-info .pytest_cache .ruff_cache
