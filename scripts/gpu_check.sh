#!/usr/bin/env bash
# One prepared check for a lent GPU machine (about 7 minutes): the GPU tests, the bench for `small`
# and `base` (fp32 eager and bf16 autocast with the transformers reference, bf16 compiled) and a
# 2-minute `small` pre-training run. Prints every figure; BENCHMARKS.md records the output.
#
# The lent machines have no network but carry PyTorch (CUDA), transformers, tokenizers, safetensors,
# scikit-learn, matplotlib and pytest: the package runs from src/ with that Python, and pip is used
# only where something is missing. Pre-training data: DATA (a folder made by `electra prepare`, e.g.
# carried beside the checkout), else CORPUS (default: the shared IMDB file).
# Dry run anywhere: DEVICE=cpu BATCH=4 PRESETS=tiny BUDGET=20s COMPILE= bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-128} PRESETS=${PRESETS:-small base} BUDGET=${BUDGET:-90s}
COMPILE=${COMPILE---compile}
python3 -c "import torch, tokenizers, safetensors, sklearn, matplotlib, tqdm, transformers, pytest" 2>/dev/null ||
  pip install --quiet torch -e ".[test]" 2>&1 | tail -1
if ! command -v electra >/dev/null; then  # an `electra` command for `timeout` to run
  mkdir -p /tmp/electra-bin && printf '#!/bin/sh\nexec python3 -m electra "$@"\n' > /tmp/electra-bin/electra
  chmod +x /tmp/electra-bin/electra && export PATH=/tmp/electra-bin:$PATH
fi
step() { echo; echo "\$ $*"; timeout "$T" "$@"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
T=180 step python3 -m pytest -o addopts= -m gpu -q -p no:cacheprovider  # -o addopts=: the lent machine may lack pytest-xdist
for preset in $PRESETS; do  # fp32 for the first preset only: the second is for its bf16 MFU
  [[ $preset == "${PRESETS%% *}" ]] &&
    T=120 step electra bench --preset "$preset" --device "$DEVICE" --dtype fp32 --batch "$BATCH" --reference hf
  T=120 step electra bench --preset "$preset" --device "$DEVICE" --dtype bf16 --batch "$BATCH" --reference hf
  [[ -n $COMPILE ]] && T=180 step electra bench --preset "$preset" --device "$DEVICE" --dtype bf16 --batch "$BATCH" $COMPILE
done
if [[ -n ${DATA:-} ]]; then source=(--data "$DATA"); else
  corpus=${CORPUS:-../shared/data/pretrain/imdb-unsup.txt}
  [[ -f $corpus ]] || { head -c 20000000 /dev/urandom | base64 > /tmp/corpus.txt; corpus=/tmp/corpus.txt; }
  source=(--corpus "$corpus")
fi
rm -rf /tmp/gpu-run
T=300 step electra pretrain "${source[@]}" --preset "${PRESETS%% *}" --device "$DEVICE" --out /tmp/gpu-run \
  --time-budget "$BUDGET" --eval-every 500 --no-progress
tail -n 3 /tmp/gpu-run/metrics.jsonl
