# Two commands: `make demo` (set up + run the main job) and `make test` (set up + run the tests).
# `make test-fast` runs the unit tests only (no end-to-end runs marked slow), in under two minutes on 2 cores.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup demo test test-fast bench detector clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned, so nothing resolves a CUDA build on its own; TORCH_INDEX: where the CPU wheel is
	# (e.g. https://download.pytorch.org/whl/cpu; PyPI's Linux wheel is the CUDA build)
	$(PIP) install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -e ".[dev,ray,embed]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) examples/demo.py --out runs/demo

test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

# Remake the shipped detector end to end (see models/detector/recipe.yaml and CARD.md for the CPU time):
# the generational corpus, the simulator's pages, the machine LM, then the detector with its measured figures.
detector: setup
	test -f runs/lm-cpu/corpus/hf/dataset_info.json || $(VENV)/bin/collapse-sim lm --max-train-blocks 256 --out runs/lm-cpu --quiet
	test -f runs/lm-cpu/corpus/train.jsonl || $(VENV)/bin/collapse-sim corpus runs/lm-cpu --split
	test -f runs/pages/train.jsonl || $(VENV)/bin/collapse-sim pages --out runs/pages/train.jsonl --n 600 --split train
	test -f runs/pages/eval.jsonl || $(VENV)/bin/collapse-sim pages --out runs/pages/eval.jsonl --n 150 --split eval --seed 1
	$(VENV)/bin/collapse-sim finetune-lm --recipe models/detector/recipe.yaml --quiet
	$(VENV)/bin/hygiene train-detector --recipe models/detector/recipe.yaml

bench: setup
	for f in benchmarks/[!_]*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) runs
