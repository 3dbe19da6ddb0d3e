#!/usr/bin/env bash
# Issue 5 on a lent GPU machine in one call (estimated 9 minutes, not yet run on one): `electra compare` of
# ELECTRA and the masked LM, `small` preset, BUDGET of pre-training each, then both encoders and a
# random one fine-tuned on TASK with 3 seeds (on the GPU too). `compare` prints each median and the
# FLOPs spent; the report and results.json come back under $OUT (or /tmp/gpu-compare without one).
#
# The lent machine has no ../shared, so carry the corpus (gzipped: under the 64 MiB carry limit)
# and the task, as ignored paths of the checkout:
#   mkdir -p runs/gpu-data/glue && gzip -c ../shared/data/pretrain/imdb-unsup.txt > runs/gpu-data/imdb-unsup.txt.gz
#   cp -r ../shared/data/glue/SST-2 runs/gpu-data/glue/
#   then: run  command "bash scripts/gpu_compare.sh"  carry ["runs/gpu-data"]  timeout_s 600
# The `small` preset's 10,000 warm-up steps are the official schedule for 10^6 steps; a run of a
# minute or two gets 100 (WARMUP). Dry run on a CPU:
#   DEVICE=cpu PRESET=tiny BUDGET=15s TASK=rte CORPUS=../shared/data/pretrain/wikitext-2/wiki.valid.raw \
#     GLUE=../shared/data/glue bash scripts/gpu_compare.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda} PRESET=${PRESET:-small} BUDGET=${BUDGET:-60s} TASK=${TASK:-sst2} EPOCHS=${EPOCHS:-1}
WARMUP=${WARMUP:-100} CORPUS=${CORPUS:-runs/gpu-data/imdb-unsup.txt.gz} GLUE=${GLUE:-runs/gpu-data/glue}
RESULT=${OUT:-/tmp}/gpu-compare
python3 -c "import torch, tokenizers, safetensors, sklearn, matplotlib, tqdm" 2>/dev/null ||
  pip install --quiet torch -e . 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
rm -rf "$RESULT"
start=$(date +%s)
python3 -m electra compare --corpus "$CORPUS" --budget "$BUDGET" --task "$TASK" --data "$GLUE" --out "$RESULT" \
  --preset "$PRESET" --epochs "$EPOCHS" --set train.device="$DEVICE" --set train.warmup_steps="$WARMUP" \
  --no-progress 2>&1 | grep -v "^step "
echo "compare took $(( $(date +%s) - start )) s"
rm -rf "$RESULT"/{data,tokenizer} "$RESULT"/runs/*/checkpoints "$RESULT"/finetune/*/*/best  # keep what comes back small
