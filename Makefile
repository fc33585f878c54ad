# strongroom: `make demo` and `make test` are the Quick start; `make bench` runs the benchmark.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: install demo test lint bench clean system-deps

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) -c constraints.txt -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import strongroom, pyfastcdc; assert pyfastcdc.FastCDC.__module__.startswith('pyfastcdc.cy'), 'pyfastcdc compiled chunker missing'"
	$(PY) -m compileall -q src  # editable installs get no bytecode, and some machines never write it at run time
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) scripts/demo.py

lint: install
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports

# SoftHSM2, PostgreSQL and xfsprogs for the tests that use the real components (installed with apt-get when
# missing; under CI a missing one fails here, elsewhere its tests skip with the reason).
system-deps:
	bash scripts/ensure-softhsm.sh || [ "$$CI" != "true" ]
	sh scripts/ensure-system-deps.sh postgresql >/dev/null || [ "$$CI" != "true" ]
	sh scripts/ensure-system-deps.sh xfsprogs >/dev/null || [ "$$CI" != "true" ]

test: lint system-deps
	$(VENV)/bin/pytest -n 2 -q tests

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
