# Two entry points on a fresh machine: `make demo` (the main job end to end) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-cluster docs venv clean nip-weights

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: the CPU wheel pinned by the project (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,docs,ray]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/neuralimaging demo --out demo-output

test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Sweeps on a real two-node Ray cluster on this machine (a worker node lost mid-run, the driver lost): minutes.
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/experiments/test_sweep_cluster.py

# The API reference, generated from the docstrings (mkdocs + mkdocstrings): site/index.html.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

# Re-creates the shipped DNet (docs/pretrained.md): the demo's default data, the first 4,500 steps of the `cpu`
# preset, then 1,500 steps from there with the learning rate annealed from 3e-4 (about 90 minutes on a 2-core
# CPU), exported into the package. Rerunning resumes where it stopped.
NIP_WORK := nip-weights
nip-weights: $(STAMP)
	$(BIN)/neuralimaging data synth --camera nikon-d90 --shots 8 --out $(NIP_WORK)/raw
	$(BIN)/neuralimaging data prepare --raw-dir $(NIP_WORK)/raw --out $(NIP_WORK)/data
	$(BIN)/neuralimaging train nip --data $(NIP_WORK)/data --preset cpu --out $(NIP_WORK) --name dnet-cpu --resume \
		--no-progress --max-steps 4500
	$(BIN)/neuralimaging train nip --data $(NIP_WORK)/data --preset cpu --out $(NIP_WORK) --name dnet-cpu-anneal \
		--resume --no-progress --set init=$(NIP_WORK)/dnet-cpu/checkpoints/step-000004500/nip.safetensors \
		--set lr=3e-4 --set validate_every=250 --epochs 1500 --export src/neuralimaging/acquisition/weights/dnet-nikon-d90

clean:
	rm -rf $(VENV) demo-output site
