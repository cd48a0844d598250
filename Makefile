# peftbench: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# torch first: a CPU wheel of 2.13.0 may lie on disk here, and the project's range (>=2.4,<3) then adds nothing.
# An unpinned torch would pull the multi-GB CUDA build on Linux. Skipped when any torch is already installed.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install install-torch install-browser assets demo train test test-slow lint bench bench-gpu clean reproduce-cpu pages

install-torch:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"

install: install-torch
	$(PIP) install -q -e ".[dev,qlora,gguf,energy]"

assets: install
	peftbench-assets fetch

# The main job: full, head-only, LoRA and IA3 on MiniLM + MR, then one comparison table.
demo: assets
	peftbench-train -m experiments=compare/four_methods

# Single default run: LoRA on MiniLM + MR.
train: assets
	peftbench-train

# The browser test of leaderboard.html (tests/test_page.py) drives Debian's chromium headless: installed here
# when missing (as root, else with sudo -n). Where it cannot be, the message says so and the test skips,
# except under CI (CI=true), where both fail.
install-browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else \
	  echo "install-browser: chromium/chromedriver missing; as root: apt-get install chromium chromium-driver" >&2; \
	  [ "$$CI" != true ]; exit; fi; \
	{ $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends chromium chromium-driver; } || { \
	  echo "install-browser: apt-get could not install chromium chromium-driver" >&2; [ "$$CI" != true ]; }

# The default suite (CPU, no network, < 10 min). pytest's exit code 5 (nothing collected) is a failure too.
test: install install-browser
	$(PYTHON) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Slow tests on the real offline models and corpora (needs `make assets`).
test-slow: assets
	$(PYTHON) -m pytest -q -m slow

lint:
	ruff check . && ruff format --check .

# Side-by-side benchmarks (ratios; ~35 min on 2 cores): start-up costs, then peftbench beside a hand loop
# (fp32, bf16) and the HF Trainer on MiniLM + MR (needs `make assets`), then the step's time by op class.
# bench/overhead.py prices the loop alone.
bench: assets
	$(PYTHON) bench/startup.py
	$(PYTHON) bench/anchors.py --out bench/anchors.json
	$(PYTHON) bench/step_profile.py --top 12

# The GPU bench (issue 16): a hand loop, the HF Trainer and peftbench on a Llama-3.2-1B-shaped model, LoRA and
# full fine-tuning: tokens/s, MFU, peak memory (~5 min on one H100; `--shape tiny` checks it on a CPU).
bench-gpu:
	$(PYTHON) bench/gpu_mfu.py --out bench/gpu_mfu.json

clean:
	rm -rf outputs multirun lightning_logs .pytest_cache .ruff_cache

# The CPU-scale paper reproduction (MiniLM on the offline corpora, ~35 min on 2 cores), then its report.
reproduce-cpu: assets
	peftbench-reproduce cpu_minilm_mr/claims

# The committed studies' interactive pages (results/*/leaderboard.html): self-contained, so each inlines plotly's
# JavaScript (~4.9 MB); built from the committed runs here rather than committed. The tables beside them
# regenerate byte-identical. Each command is the one its study README gives.
pages: install
	peftbench-leaderboard results/compare_all_methods/runs --reference full --out results/compare_all_methods
	peftbench-leaderboard results/compare_all_methods_tuned/runs --out results/compare_all_methods_tuned
	peftbench-leaderboard results/cpu_minilm_mr/runs --out results/cpu_minilm_mr
