# vox3d: two commands.  `make run` builds Voxceleb-3D on the embedded default,
# `make test` runs the test suite.  Both set up .venv first (pinned requirements).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vox3d-installed
CORES ?= all
# pip on some machines warns once per package about missing local index folders: drop that noise.
PIPFILTER := { grep -v -e '^WARNING: Location' -e 'is neither a file nor a directory' || true; }

# Every cache the project writes stays in the checkout's .cache/ (README, "Caches"):
# pip's and Snakemake's (XDG), numba's, matplotlib's, torch's, Hugging Face's and vox3d's own.
export XDG_CACHE_HOME ?= $(CURDIR)/.cache
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
export MPLCONFIGDIR ?= $(CURDIR)/.cache/matplotlib
export TORCH_HOME ?= $(CURDIR)/.cache/torch
export HF_HOME ?= $(CURDIR)/.cache/huggingface
export VOX3D_CACHE ?= $(CURDIR)/.cache/vox3d
export PYTHONHASHSEED := 0

SIM3DR_SRC := $(wildcard Sim3DR/*.pyx Sim3DR/*.cpp Sim3DR/*.h Sim3DR/*.pxd)

.PHONY: setup run test test-fast lint fmt bench clean report run-both

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml setup.py $(SIM3DR_SRC)
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  echo ">> ffmpeg/ffprobe not found: installing Debian's ffmpeg (needs apt and root)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg) \
	  || { echo "!! could not install ffmpeg; install it yourself (apt-get install ffmpeg)"; exit 1; }; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | $(PIPFILTER)
	$(BIN)/python -m pip install -q -r requirements.lock 2>&1 | $(PIPFILTER)
	$(BIN)/python -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | $(PIPFILTER)
	@mkdir -p $(NUMBA_CACHE_DIR) $(MPLCONFIGDIR) $(TORCH_HOME) $(HF_HOME) $(VOX3D_CACHE)
	@touch $(STAMP)

run: setup
	$(BIN)/snakemake --cores $(CORES) --profile profiles/default

report: setup
	$(BIN)/snakemake --cores $(CORES) --profile profiles/default --report report.html

# Both voice models side by side: the supervised one and CMP's unsupervised variant
# (knowledge distillation, no 3D labels; vox3d/voice/distill.py), on the embedded default.
run-both: setup
	$(BIN)/snakemake --cores $(CORES) --profile profiles/default --config train='{mode: both}'

# A test still running after 30 minutes is hung (the longest take a few): pytest-timeout
# then prints every thread's stack and stops the run, instead of CI's 90 minutes running out.
test: setup
	$(BIN)/python -m pytest -m "slow or not slow" -q --timeout=1800 --timeout-method=thread

test-fast: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check vox3d scripts tests bench Sim3DR setup.py
	$(BIN)/ruff format --check vox3d scripts tests bench setup.py
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint --cores 1

fmt: setup
	$(BIN)/ruff format vox3d scripts tests bench setup.py
	$(BIN)/ruff check --fix vox3d scripts tests bench setup.py
	$(BIN)/snakefmt Snakefile rules

clean:
	rm -rf $(VENV) build *.egg-info Sim3DR/*.so Sim3DR/_sim3dr.cpp .snakemake
