#!/usr/bin/env bash
# Out-of-fold MCRMSE of the absolute-only head against the two-stage scorer (stage 1 on
# soft-BT pairs from the labels, stage 2 a regressor warm-started from it), on any essay
# folder: train.csv (plain or compressed; an id column, a text column, one or more numeric
# target columns) and optionally a fold map (fold_map.json / fold_map.csv / folds.csv; else
# 5 folds are made).
#
#   bash bench/fb3_two_stage.sh [DIR] [--test FILE] [--config FILE] [key=value ...]
#
# DIR defaults to ../shared/data/fb3_ell (relative to the repo root); paths given are
# relative to where the script is called from. --test fits on all of DIR and scores FILE
# (the same columns). --config: a configs/absolute YAML (default configs/absolute/fb3_frozen.yaml,
# frozen MiniLM embeddings on the CPU; mode: finetune for a GPU); key=value arguments are dotted overrides of it. The last line is
#   mcrmse_absolute=<v> mcrmse_two_stage=<v> [test_mcrmse_absolute=<v> test_mcrmse_two_stage=<v>]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
abs_path() { (cd "$(dirname "$1")" && echo "$(pwd)/$(basename "$1")"); }
DIR_ARG=() TEST=() OVERRIDES=() CONFIG="$ROOT/configs/absolute/fb3_frozen.yaml"
while [ $# -gt 0 ]; do
    case "$1" in
        --test) TEST=(--test "$(abs_path "$2")"); shift 2 ;;
        --config) CONFIG=$(abs_path "$2"); shift 2 ;;
        *=*) OVERRIDES+=("$1"); shift ;;
        *) DIR_ARG=("$1"); shift ;;
    esac
done
DATA=$(data_dir "$ROOT/../shared/data/fb3_ell" "${DIR_ARG[@]}")
cd "$ROOT"
BIN=${BIN:-.venv/bin}
"$BIN/prefkit" models fetch all-MiniLM-L6-v2 >&2
"$BIN/prefkit" absolute run -c "$CONFIG" --data "$DATA" "${TEST[@]}" --out runs/bench_fb3_two_stage --no-progress "${OVERRIDES[@]}"
