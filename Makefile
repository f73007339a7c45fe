# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv at the repository root when it is missing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,mpi]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/convnet demo

lint: $(STAMP)
	$(VENV)/bin/ruff check convnet tests bench

test: lint
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(PY) -m bench.run
	$(PY) -m bench.scaling

clean:
	rm -rf $(VENV) build *.egg-info
