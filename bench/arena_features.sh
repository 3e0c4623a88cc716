#!/usr/bin/env bash
# Feature model (LightGBM, swap augmentation + swap TTA) -> logistic stacker (nested CV) ->
# temperature -> submission, on a folder in the Kaggle layout; scored against its solution.
#
#   bash bench/arena_features.sh [DATA_DIR]
#
# DATA_DIR defaults to ../shared/data/arena_alpacaeval_gpt4 (relative to the repo root); a
# given DATA_DIR is relative to where the script is called from. Files may be plain or .xz.
# Outputs go to runs/bench_features/<folder name>/ (git-ignored). The last line is
#   test_logloss=<value> oof_logloss=<value>
# (the stack's calibrated OOF log loss; test_logloss=nan without a test and solution file).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
DATA=$(data_dir "$ROOT/../shared/data/arena_alpacaeval_gpt4" "$@")
cd "$ROOT"
BIN=${BIN:-.venv/bin}
OUT=runs/bench_features/$(basename "$DATA")
SUBMISSION=$OUT/submission.csv
rm -f "$SUBMISSION"

"$BIN/prefkit" train-features -c configs/arena_features.yaml \
    data.dir="$DATA" output_dir="$OUT" name=features
"$BIN/prefkit" stack "$OUT/features" -c configs/arena_features.yaml \
    data.dir="$DATA" output_dir="$OUT" stack.name=stack stack.submission="$SUBMISSION"

oof=$("$BIN/python" -c 'import json, sys; print("%.5f" % json.load(open(sys.argv[1]))["oof"]["log_loss"])' "$OUT/stack/metrics.json")
predictions=$SUBMISSION
[ -f "$predictions" ] || predictions=$OUT/stack/test.csv
test=$(test_logloss "$predictions" "$(find_data_file "$DATA" solution)")
echo "test_logloss=$test oof_logloss=$oof"
