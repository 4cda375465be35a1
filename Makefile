# The two commands: `make demo` and `make test`. Each sets up its own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := outputs/demo
export JAX_PLATFORMS ?= cpu
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,torch,tpu]'
	# The reference LPIPS for tests/test_lpips.py, without the torchvision it asks for: PyPI's is
	# built for CUDA and does not load beside the CPU torch (the test declares AlexNet's layers).
	$(BIN)/python -m pip install --quiet --no-deps lpips==0.1.4
	touch $@

# The whole system on the CPU, with the same commands a TPU user types (configs/tiny.py):
# a world rendered, four models trained, held-out portraits animated in every mode, evaluated.
# Training resumes and finished stages are kept, so a second `make demo` picks up where it stopped.
TINY := --config=configs/tiny.py
# A demo folder serves only the world version it was made in: an older world's finished runs would
# otherwise be taken as done and silently reused beside a dataset rendered anew.
WORLD := $(shell sed -n 's/^ *config.version = "\(.*\)"/\1/p' configs/data/synthetic.py)
FROZEN := --config.frozen.vae=$(DEMO)/vae --config.frozen.motion=$(DEMO)/motion
# Every stage reads the demo folder's own dataset (the configs' default is outputs/demo/data).
DATA := --config.input.data_dir=$(DEMO)/data
MODES := static-frontal,static-novel,camera-sweep,all-moving,expression-only,pose-only
# On one device: the VAE's image stage (its batch of 8 single frames took 0.6 s a step on 8
# simulated devices against 0.2 on one), the motion run (1.19 s a step against 1.85, medians once
# its people are rendered), sampling and evaluation (each of 8 simulated devices would take one
# example of a batch padded to 8, where one video's guidance branches are 2; fp-eval: 2 min 23 s
# against 3 min 45 s, the same figures).
ONE_DEVICE := XLA_FLAGS=
demo: export XLA_FLAGS = --xla_force_host_platform_device_count=8
demo: setup
	mkdir -p $(DEMO)
	@made=$$(cat $(DEMO)/world_version 2>/dev/null); \
	if [ -n "$$(ls -A $(DEMO))" ] && [ "$$made" != "$(WORLD)" ]; then \
	  echo "error: $(DEMO) holds a demo of world version $${made:-older than 1.4.0}, this is $(WORLD);" \
	       "remove it (rm -r $(DEMO)) or choose another folder (make demo DEMO=DIR)"; exit 2; fi
	echo $(WORLD) > $(DEMO)/world_version
	$(BIN)/fp-data --config=configs/data/synthetic.py:demo --data_dir=$(DEMO)/data
	$(BIN)/fp-preview --data_dir=$(DEMO)/data --name=demo --split=test --out=$(DEMO)/previews
	$(ONE_DEVICE) $(BIN)/fp-train $(TINY):vae_image --workdir=$(DEMO)/vae_image $(DATA)
	$(BIN)/fp-train $(TINY):vae --workdir=$(DEMO)/vae --config.init.run=$(DEMO)/vae_image $(DATA)
	$(ONE_DEVICE) $(BIN)/fp-train $(TINY):motion --workdir=$(DEMO)/motion $(DATA)
	$(BIN)/fp-train $(TINY):identity --workdir=$(DEMO)/identity $(DATA)
	test -d $(DEMO)/latents || $(BIN)/fp-cache-latents $(TINY):dit --out=$(DEMO)/latents $(FROZEN) $(DATA)
	$(BIN)/fp-train $(TINY):dit --workdir=$(DEMO)/dit $(FROZEN) $(DATA) \
	    --config.input.cached_latents=$(DEMO)/latents
	$(ONE_DEVICE) $(BIN)/fp-sample $(TINY) --workdir=$(DEMO)/dit $(FROZEN) $(DATA) \
	    --image=clip:test/0@0 --driving=clip:test/5 --mode=$(MODES) --out=$(DEMO)/videos
	$(ONE_DEVICE) $(BIN)/fp-eval $(TINY) --workdir=$(DEMO)/dit $(FROZEN) $(DATA) \
	    --config.frozen.identity=$(DEMO)/identity --split=test --clips=8 --out=$(DEMO)/report.json
	@echo "demo: dataset $(DEMO)/data, previews $(DEMO)/previews, runs $(DEMO)/{vae,motion,identity,dit},"
	@echo "      videos and panels $(DEMO)/videos, evaluation $(DEMO)/report.md and report.json"

test: setup
	$(BIN)/python -m pytest -q -n 2 --durations=15 tests

clean:
	rm -rf $(VENV) outputs
