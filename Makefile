# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint benchmark docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned on the same command line so no CUDA build is ever pulled in.
	$(PY) -m pip install --quiet torch==2.13.0 -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true $(VENV)/bin/medunlearn demo --output_dir demo_output

# One pytest worker per core (files stay whole, so a module's shared fixture runs once), one torch thread each.
test: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check medunlearn_monai tests benchmarks
	$(VENV)/bin/ruff format --check medunlearn_monai tests benchmarks

benchmark: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true $(PY) benchmarks/tissuemnist_demo.py

# The documentation site into site/ (mkdocs.yml); --strict fails on a broken link or a page missing from the nav.
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet torch==2.13.0 -e ".[test,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) demo_output mlflow.db mlruns .medunlearn site
