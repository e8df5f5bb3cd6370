# Everything runs against the pinned torch wheel in .venv/: tch finds
# libtorch through that python (LIBTORCH_USE_PYTORCH), and build.rs bakes
# its lib directory into the binaries' rpath.

VENV := $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export LIBTORCH_USE_PYTORCH := 1
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)

.PHONY: venv build test bench bench-audit lint loss-curves train tensorboard reproduce gpu-stage clean-venv

# `make train COCO=/data/coco` trains configs/coco.yaml on that dataset;
# plain `make train` trains configs/demo.yaml on the built-in synthetic
# shapes. CONFIG= picks another recipe, ARGS= adds flags (e.g. ARGS="--set train.epochs=2").
# GPUS=8 trains on 8 GPUs of this node: one process each, launched by torchrun.
COCO ?=
CONFIG ?= $(if $(COCO),configs/coco.yaml,configs/demo.yaml)
SYNTH := runs/data/synth
ARGS ?=
GPUS ?= 1
ASL := $(if $(filter-out 1,$(GPUS)),$(VENV)/bin/torchrun --standalone --nproc-per-node=$(GPUS) --no-python )./target/release/asl

venv: $(STAMP)

# One pip command for the whole pinned set, so timm cannot upgrade torch.
$(STAMP): third_party/requirements.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r third_party/requirements.txt
	touch $@

build: venv
	cargo build --release

# Release profile, like `make build`: a newcomer's `make train` then
# `make test` compile the dependency tree once, and the tests that decode
# real images run at full speed.
test: venv
	cargo test --release --all-targets --no-fail-fast

lint: venv
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

# Criterion benches, then the PyTorch baselines on the same machine, then
# one table of ours ÷ baseline.
bench: venv
	mkdir -p target/bench
	$(PYTHON) models/export.py --model tresnet_m --num-classes 80 --img-size 224 --out target/bench/tresnet_m_224.pt
	cargo bench --bench loss --bench metrics --bench pipeline --bench train_step
	$(PYTHON) bench/loss_baseline.py --out target/bench/loss_baseline.json
	$(PYTHON) bench/pipeline_baseline.py --out target/bench/pipeline_baseline.json --workers 2
	$(PYTHON) bench/train_step_baseline.py --model target/bench/tresnet_m_224.pt --out target/bench/train_step_baseline.json
	$(PYTHON) bench/train_step_baseline.py --model target/bench/tresnet_m_224.pt --same-settings \
	  --out target/bench/train_step_same_settings_baseline.json
	cargo build --release
	$(PYTHON) bench/infer_baseline.py --model target/bench/tresnet_m_224.pt
	$(PYTHON) bench/ml_decoder_head.py --out target/bench/ml_decoder_head.json
	$(PYTHON) bench/report.py

# asl audit against the raw probability, cleanlab and in-sample probabilities on synthetic data with known
# label corruptions, and relabeled.yaml against the noisy labels (8 seeds): about 16 minutes on 2 cores.
bench-audit: build
	bash bench/audit.sh

train: build
ifneq ($(COCO),)
	$(ASL) train --config $(CONFIG) --data $(COCO) $(ARGS)
else
	test -f $(SYNTH)/annotations/instances_val.json || ./target/release/asl synth --out $(SYNTH) --train-images 3000 --val-images 500
	$(ASL) train --config $(CONFIG) --data $(SYNTH) $(ARGS)
endif

tensorboard: venv
	$(VENV)/bin/tensorboard --logdir runs

# The paper's loss comparison at CPU scale, with adaptive asymmetry at three
# Δp targets (Table 3): about 10 minutes on 2 cores.
reproduce: build
	./target/release/asl reproduce --out runs/reproduce --adaptive-targets 0,0.1,0.2

loss-curves: build
	./target/release/asl loss-curves --out runs/loss-curves

# Stages in .device/ (git-ignored) what bench/gpu.sh needs on the borrowed
# GPU machine: the release binary, the loss bench and a copy of coco-mini.
# Then: device run, carry [".device"], command `bash bench/gpu.sh` (and
# `bash bench/gpu_distributed.sh` for NCCL against no process group).
COCO_MINI ?= ../shared/data/coco-mini
gpu-stage: build
	rm -rf .device && mkdir -p .device
	cp target/release/asl .device/asl
	cargo bench --no-run --bench loss --message-format=json \
	  | $(PYTHON) -c 'import json, sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("target", {}).get("name") == "loss" and m.get("executable")][0])' \
	  | xargs -I{} cp {} .device/loss_bench
	cp -r $(COCO_MINI) .device/coco-mini

clean-venv:
	rm -rf $(VENV)
