#!/bin/sh
# ax_run_model's own benchmark of the deployed model.
#   sh bench.sh AX_RUN_MODEL MODEL WARMUP REPEAT
ax=$1 model=$2 w=$3 r=$4
"$ax" -m "$model" -w "$w" -r "$r" 2>&1
