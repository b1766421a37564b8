#!/usr/bin/env bash
# Issue 7's GPU figures in one go, each section bench vs its named peer in the same process:
#   mfu        training_mfu.py: gpt2-medium full fine-tuning at sequence 512, bench vs Trainer, MFU, then a
#              profile of 5 compiled steps (top operations by GPU time; Chrome trace to $OUT/mfu_trace.json)
#   zero-shot  zero_shot_scoring.py on the full imdb test set (25,000), bench vs lm-eval
#   finetune   finetune_throughput.py on imdb (classification head, max length 512), bench vs Trainer
#   run        `bench run sst2 --method full` end to end: the accounting a user sees on a GPU
#
#   bash benchmarks/run_gpu.sh DATA_DIR MODEL_DIR [SECTION...]
#
# MODEL_DIR holds a causal LM's config.json and tokenizer; its architecture is built with a seeded
# random init (the arithmetic, hence every speed figure, does not depend on what the weights know, and
# the GPU machines these were measured on cannot reach the hub). Accuracies printed for such a model are
# near chance and serve only to check that bench and the peer compute the same thing. Budget: the mfu
# section alone takes ~5 min on an H100 (torch.compile of gpt2-medium ~2 min once, then 3 x 3 runs);
# pipe the output through `grep --line-buffered` if at all: a killed pipeline loses a buffered tail.
set -u
DATA=$(realpath "${1:?usage: run_gpu.sh DATA_DIR MODEL_DIR [mfu zero-shot finetune run]}")
CONFIG=$(realpath "${2:?usage: run_gpu.sh DATA_DIR MODEL_DIR [mfu zero-shot finetune run]}")
shift 2
SECTIONS=${*:-mfu zero-shot finetune run}
for name in $SECTIONS; do  # a typo must not cost the device time of the sections before it
  case $name in mfu|zero-shot|finetune|run) ;; *) echo "unknown section $name (mfu, zero-shot, finetune, run)"; exit 2 ;; esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=${BENCH_GPU_MODEL:-/tmp/bench-random-model}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$HERE/.."

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
python3 - "$CONFIG" "$MODEL" <<'EOF'
import sys, time
import torch, transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}")
torch.manual_seed(0)
started = time.perf_counter()
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(sys.argv[1])).save_pretrained(sys.argv[2])
AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
print(f"random-init model of {sys.argv[1]} written to {sys.argv[2]} in {time.perf_counter() - started:.1f} s")
EOF

section() { echo; echo "=== $1 ($(date +%T))"; }
for name in $SECTIONS; do
  case $name in
    mfu) section "training MFU: gpt2-medium, sequence 512, bench vs Trainer"
      timeout "${MFU_SECONDS:-330}" python3 benchmarks/training_mfu.py --data-dir "$DATA" --tokenizer "$CONFIG" \
        --arch "${MFU_ARCH:-gpt2-medium}" --steps "${MFU_STEPS:-40}" --profile "${MFU_PROFILE_STEPS:-5}" \
        --trace "${OUT:-/tmp}/mfu_trace.json" || echo "FAILED: mfu" ;;
    zero-shot) section "zero-shot scoring: imdb test, bench vs lm-eval"
      timeout "${ZERO_SHOT_SECONDS:-220}" python3 benchmarks/zero_shot_scoring.py --data-dir "$DATA" --model "$MODEL" \
        --cases imdb --batch-size 32 ${ZERO_SHOT_LIMIT:+--limit $ZERO_SHOT_LIMIT} || echo "FAILED: zero-shot" ;;
    finetune) section "fine-tuning throughput: imdb, bench vs Trainer(padding=max_length)"
      timeout "${FINETUNE_SECONDS:-150}" python3 benchmarks/finetune_throughput.py --data-dir "$DATA" --model "$MODEL" \
        --train-samples "${FINETUNE_TRAIN:-2000}" --validation-samples "${FINETUNE_VALIDATION:-500}" || echo "FAILED: finetune" ;;
    run) section "bench run sst2 --method full on the GPU"
      rm -rf /tmp/bench-gpu-results  # only this run's stages below
      timeout "${RUN_SECONDS:-120}" python3 -m harness.cli run sst2 --models "$MODEL" --method full --data-dir "$DATA" \
        --results /tmp/bench-gpu-results ${RUN_ARGS:-} && python3 -c "
import json, sqlite3
for stage, info in sqlite3.connect('/tmp/bench-gpu-results/bench.sqlite').execute('SELECT stage, info FROM stages'):
    print(stage, json.dumps({k: v for k, v in json.loads(info).items() if k != 'params'}))" || echo "FAILED: run" ;;
    *) echo "unknown section $name (mfu, zero-shot, finetune, run)"; exit 2 ;;
  esac
done
