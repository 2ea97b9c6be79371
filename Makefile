# Two commands a fresh clone needs: `make demo` and `make test`. Each creates .venv if it is
# missing and installs what it needs. TORCH pins the CPU build that lies on this kind of
# machine; on a GPU box run `make TORCH=torch demo` (or install your CUDA torch in .venv first).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

demo: $(STAMP)
	$(PY) baseline_train/train.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	@scripts/ensure-docker.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
