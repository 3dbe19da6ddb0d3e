#!/usr/bin/env bash
# One prepared check for a lent GPU machine (well under 10 minutes): the GPU tests, the bench for
# `small` and `base` (fp32 eager, bf16, bf16 compiled) with the transformers reference, and a
# 2-minute pre-training run. Prints every figure; paste the output into BENCHMARKS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-gpu && . .venv-gpu/bin/activate
pip install --quiet torch -e ".[test]" 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.total --format=csv
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
python -m pytest -m gpu -q 2>&1 | tail -3
for preset in small base; do
  electra bench --preset $preset --device cuda --dtype fp32 --batch 128 --reference hf
  electra bench --preset $preset --device cuda --dtype bf16 --batch 128 --reference hf
  electra bench --preset $preset --device cuda --dtype bf16 --batch 128 --compile
done
data=../shared/data/pretrain/imdb-unsup.txt
[[ -f $data ]] || { head -c 20000000 /dev/urandom | base64 > /tmp/corpus.txt; data=/tmp/corpus.txt; }
electra pretrain --corpus "$data" --preset small --out /tmp/gpu-run --time-budget 2m --no-progress --eval-every 200 | tail -8
