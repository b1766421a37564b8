#!/usr/bin/env bash
# Issue 7's GPU figures in one go, each section bench vs its named peer in the same process:
#   mfu        training_mfu.py: gpt2-medium full fine-tuning at sequence 512, bench vs Trainer, MFU, then a
#              profile of 5 compiled steps (top operations by GPU time; Chrome trace to $OUT/mfu_trace.json)
#   zero-shot  zero_shot_scoring.py on the full imdb test set (25,000), bench vs lm-eval
#   finetune   finetune_throughput.py on imdb (classification head, max length 512), bench vs Trainer
#   run        `bench run sst2 --method full` end to end: the accounting a user sees on a GPU
# and issue 22's scale-out figures (benchmarks/scaling.py reads the two stores of each comparison):
#   ddp        `bench run sst2 --method full` (DDP_METHOD) on 1 GPU and under `torchrun --nproc-per-node N`
#              on all N, the same global batch: train tokens/s of each, speedup, scaling efficiency
#              (speedup / N), and whether the two runs' eval predictions are the same
#   fsdp       the same run with --fsdp on N GPUs vs DDP on N (the ddp section's store when it ran):
#              tokens/s and peak memory per GPU (the finetune stage's peak_memory_mb, rank 0's)
#   vllm       vllm_vs_hf.py: samsum generation by bench's vLLM backend vs its HF path, identical outputs
#              and new tokens/s; skipped with the reason when vLLM does not import (the device machines
#              have none and cannot download it: VLLM_WHEELS=DIR installs carried wheels to /tmp/vllm-site,
#              VLLM_PYTHON=PATH names another interpreter that has it)
#
#   bash benchmarks/run_gpu.sh DATA_DIR MODEL_DIR [SECTION...]     (default: mfu ddp fsdp vllm)
#
# MODEL_DIR holds a causal LM's config.json and tokenizer; its architecture is built with a seeded
# random init (the arithmetic, hence every speed figure, does not depend on what the weights know, and
# the GPU machines these were measured on cannot reach the hub). Accuracies printed for such a model are
# near chance and serve only to check that bench and the peer compute the same thing. Budget: the mfu
# section alone takes ~5 min on an H100 (torch.compile of gpt2-medium ~2 min once, then 3 x 3 runs);
# pipe the output through `grep --line-buffered` if at all: a killed pipeline loses a buffered tail.
# Expected minutes on H100s with a gpt2-medium MODEL_DIR: set-up 0.3, mfu 5.5, ddp 1.5 (two runs of
# ~40 s: 16,000 sst2 sentences, global batch 64), fsdp 1 (one run, plus one more DDP run when the ddp
# section did not run), vllm 2.5 (engine start ~1.5, 128 dialogues x 60 new tokens, twice a side); on
# one GPU ddp and fsdp print "1 GPU: scaling needs >= 2" and skip at once. The new sections also stop
# at BENCH_GPU_BUDGET seconds from the start (default 540: the device's 10-minute command limit with a
# minute of room), each taking what is left up to its own cap, or printing that it was skipped for time:
# the default set fits 9 minutes on 1 GPU or N. BENCH_GPU_DRY=1 runs ddp, fsdp and vllm at toy sizes
# on the CPU with 2 gloo processes (a check of the script itself, not a figure).
set -u
DATA=$(realpath "${1:?usage: run_gpu.sh DATA_DIR MODEL_DIR [mfu zero-shot finetune run ddp fsdp vllm]}")
CONFIG=$(realpath "${2:?usage: run_gpu.sh DATA_DIR MODEL_DIR [mfu zero-shot finetune run ddp fsdp vllm]}")
shift 2
SECTIONS=${*:-mfu ddp fsdp vllm}
for name in $SECTIONS; do  # a typo must not cost the device time of the sections before it
  case $name in mfu|zero-shot|finetune|run|ddp|fsdp|vllm) ;;
    *) echo "unknown section $name (mfu, zero-shot, finetune, run, ddp, fsdp, vllm)"; exit 2 ;; esac
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

# Issue 22's sections. Sizes for gpt2-medium on H100s; BENCH_GPU_DRY=1: toy sizes, 2 gloo processes, CPU.
BUDGET=${BENCH_GPU_BUDGET:-540} DDP_METHOD=${DDP_METHOD:-full} DDP_DONE=0
VLLM_PYTHON=${VLLM_PYTHON:-python3} VLLM_PATH=${PYTHONPATH:-}
if [[ ${BENCH_GPU_DRY:-0} == 1 ]]; then
  export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  GPUS=${BENCH_GPU_PROCESSES:-2} BATCH=${DDP_BATCH:-8}
  SCALE_SIZES="--train-samples 64 --eval-samples 24 --validation-samples 8 --max-length 48 --eval-batch-size 8"
  VLLM_SIZES="--limit 4 --batch-size 4 --max-new-tokens 8 --max-length 256 --repeats 1 --eager"
else
  GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
  BATCH=${DDP_BATCH:-64}
  SCALE_SIZES="--train-samples 16000 --eval-samples 872 --validation-samples 200 --max-length 128 --eval-batch-size 64"
  VLLM_SIZES="--limit 128 --batch-size 32 --max-new-tokens 60 --repeats 2"
fi
BATCH=$(( (BATCH + GPUS - 1) / (GPUS > 0 ? GPUS : 1) * (GPUS > 0 ? GPUS : 1) ))  # divisible by every rank count used

enough_gpus() {
  (( GPUS >= 2 )) && return 0
  echo "$GPUS GPU: scaling needs >= 2 (skipped)"; return 1
}

time_left() {  # CAP MIN: seconds a command may take, the section's cap or what is left of BUDGET
  local left=$(( BUDGET - SECONDS ))
  if (( left < $2 )); then echo "skipped: ${left} s left of BENCH_GPU_BUDGET=$BUDGET, this needs >= $2" >&2; return 1; fi
  echo $(( $1 < left ? $1 : left ))
}

scaled_run() {  # PROCESSES RESULTS SHARE [OPTION...]: one bench run, its time 1/SHARE of what is left to
  local processes=$1 results=$2 share=$3 seconds started=$SECONDS; shift 3  # the section (SHARE-1 runs follow)
  seconds=$(time_left "${SCALE_SECONDS:-150}" $(( 30 * share ))) || return 1
  seconds=$(( seconds / share ))
  local launch=(python3 -m harness.cli)
  (( processes > 1 )) && launch=(python3 -m torch.distributed.run --standalone --nproc-per-node "$processes" -m harness.cli)
  echo "--- ${launch[*]} run sst2 --method $DDP_METHOD --batch-size $BATCH $* (at most $seconds s)"
  rm -rf "$results"
  timeout "$seconds" "${launch[@]}" run sst2 --models "$MODEL" --method "$DDP_METHOD" --data-dir "$DATA" \
    --results "$results" --batch-size "$BATCH" --evals-per-epoch 1 $SCALE_SIZES ${SCALE_ARGS:-} "$@" >"$results.log" 2>&1
  local status=$?  # the run's last line (tables, wall time), or its error; the whole log stays in $results.log
  grep -v -E '^\s*$' "$results.log" | tail -n $(( status == 0 ? 1 : 15 ))
  echo "--- exit $status after $(( SECONDS - started )) s"
  return $status
}

vllm_ready() {  # find_spec, not an import: importing vllm takes tens of seconds
  if [[ -n ${VLLM_WHEELS:-} ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vllm-site \
      "$VLLM_WHEELS"/*.whl && VLLM_PATH=/tmp/vllm-site${VLLM_PATH:+:$VLLM_PATH}
  fi
  PYTHONPATH=$VLLM_PATH "$VLLM_PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)" &&
    return 0
  echo "skipped: vLLM is not installed for $VLLM_PYTHON (it cannot be downloaded on the device machine): carry its" \
    "wheels and set VLLM_WHEELS=DIR, or VLLM_PYTHON=a python that has it"
  return 1
}

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
    ddp) section "DDP scaling: bench run sst2 --method $DDP_METHOD, 1 process vs $GPUS GPUs, global batch $BATCH"
      enough_gpus && time_left 150 60 >/dev/null || continue
      scaled_run 1 /tmp/bench-gpu-single 2 && scaled_run "$GPUS" /tmp/bench-gpu-ddp 1 && DDP_DONE=1 &&
        python3 benchmarks/scaling.py /tmp/bench-gpu-single:1:single "/tmp/bench-gpu-ddp:$GPUS:DDP" ||
        echo "FAILED: ddp" ;;
    fsdp) section "FSDP: bench run sst2 --method full --fsdp vs DDP, $GPUS GPUs, global batch $BATCH"
      enough_gpus && time_left 150 $(( DDP_DONE == 1 ? 30 : 60 )) >/dev/null || continue
      { [[ $DDP_DONE == 1 && $DDP_METHOD == full ]] || DDP_METHOD=full scaled_run "$GPUS" /tmp/bench-gpu-ddp 2; } &&
        DDP_METHOD=full scaled_run "$GPUS" /tmp/bench-gpu-fsdp 1 --fsdp &&
        python3 benchmarks/scaling.py "/tmp/bench-gpu-ddp:$GPUS:DDP" "/tmp/bench-gpu-fsdp:$GPUS:FSDP" ||
        echo "FAILED: fsdp" ;;
    vllm) section "generation: bench's vLLM backend vs its HF path (vllm_vs_hf.py, samsum)"
      vllm_ready || continue
      seconds=$(time_left "${VLLM_SECONDS:-200}" 60) || continue
      PYTHONPATH=$VLLM_PATH timeout "$seconds" "$VLLM_PYTHON" benchmarks/vllm_vs_hf.py --data-dir "$DATA" \
        --model "$MODEL" ${VLLM_ARGS:-$VLLM_SIZES} || echo "FAILED: vllm" ;;
    *) echo "unknown section $name (mfu, zero-shot, finetune, run, ddp, fsdp, vllm)"; exit 2 ;;
  esac
done
