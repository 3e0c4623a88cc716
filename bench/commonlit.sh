#!/usr/bin/env bash
# Held-out-fold Spearman (mean over 5 folds) with the target of: a regressor on the labels,
# the soft-BT scalar scorer (trained on pairs sigmoid(gamma (y_i - y_j)), K partners per
# item), and 4N comparative scoring (a soft-BT pair model compares each unseen text with
# about 4 anchors of known score; Bradley-Terry fit with the anchors as strong priors). On a
# subset of unseen texts, all-pairs comparisons are the reference (printed before the last line).
#
#   bash bench/commonlit.sh [DIR]
#
# DIR (default ../shared/data/commonlit, relative to the repo root; a given DIR relative to
# where the script is called from) holds train.csv (plain or compressed) with an id, a text
# and a `target` column (or one numeric column), optionally a fold map. The last line is
#   spearman_regression=<v> spearman_soft_bt=<v> spearman_4n=<v>
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
DATA=$(data_dir "$ROOT/../shared/data/commonlit" "$@")
cd "$ROOT"
BIN=${BIN:-.venv/bin}
"$BIN/prefkit" models fetch all-MiniLM-L6-v2 >&2
"$BIN/prefkit" absolute compare -c configs/absolute/commonlit.yaml --data "$DATA" --out runs/bench_commonlit --no-progress
