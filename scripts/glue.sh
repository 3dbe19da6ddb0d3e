#!/usr/bin/env bash
# Fine-tune one model on GLUE tasks, 3 seeds each, then print the table of dev medians.
#   scripts/glue.sh MODEL OUT_ROOT [TASK...]      MODEL: a run directory, or none (random init)
# With MODEL=none, TOKENIZER (a run or tokenizer folder) gives the vocabulary; THREADS caps torch's;
# EPOCHS and LR override the task's epochs and the preset's learning rate.
set -euo pipefail
model=$1; root=$2; shift 2
tasks=${*:-cola mrpc rte sst2 stsb}
glue=${GLUE:-../shared/data/glue}
extra=()
[[ $model == none ]] && extra=(--tokenizer "${TOKENIZER:?set TOKENIZER for MODEL=none}")
for task in $tasks; do
  [[ -f $root/$task/metrics.json ]] && continue  # done already: the script can be rerun to continue
  electra finetune --model "$model" "${extra[@]}" --task "$task" --data "$glue" --out "$root/$task" \
    --seeds 1,2,3 --threads "${THREADS:-0}" ${EPOCHS:+--epochs $EPOCHS} ${LR:+--lr $LR} --no-progress
done
python "$(dirname "$0")/glue_report.py" "$root"
