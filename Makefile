# The two set-up commands of the README: `make demo` and `make test`.
# `make demo` creates .venv with convnet and its runtime dependencies only; `make test` adds the
# development ones (PyTorch, onnxruntime, pytest, Playwright, build, MPI) to the same .venv.
# The README's "Installing" section says what each installs, how big and how long.
VENV    := .venv
PY      := $(VENV)/bin/python
RUNTIME := $(VENV)/.runtime-installed
DEV     := $(VENV)/.dev-installed

# pip's output goes to .venv/pip.log and is shown only when it fails.
PIP     = $(PY) -m pip install --disable-pip-version-check
LOGGED  = > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }

.PHONY: demo test lint bench dist clean

$(RUNTIME): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "make: installing convnet and its runtime dependencies into $(VENV)"
	@$(PIP) --upgrade pip $(LOGGED)
	@$(PIP) -e . $(LOGGED)
	@touch $@

$(DEV): $(RUNTIME)
	@echo "make: adding the development dependencies to $(VENV)"
	@$(PIP) -e '.[dev,mpi]' $(LOGGED)
	@touch $@

demo: $(RUNTIME)
	@$(VENV)/bin/convnet demo

lint: $(DEV)
	$(VENV)/bin/ruff check convnet tests bench

test: lint
	$(VENV)/bin/python -m pytest -q

bench: $(DEV)
	$(PY) -m bench.run
	$(PY) -m bench.scaling

# The sdist and the wheel in dist/, as a release would build them.
dist: $(DEV)
	$(PY) -m build

clean:
	rm -rf $(VENV) build dist *.egg-info
