#!/usr/bin/env bash
# The arena stack with and without an item scorer as a base model: the feature model (LightGBM)
# and a Siamese item scorer (task item_scorer, configs/arena_scorer.yaml: all-MiniLM-L6-v2,
# s(prompt, response), Davidson ties) trained per fold on the same folds; the stacker (nested CV,
# temperature) of the feature model alone and of both; each submission scored on the solution.
#
#   bash bench/arena_scorer.sh [DATA_DIR] [--train-rows N] [--test-rows M] [--folds K] [overrides...]
#
# DATA_DIR: a folder in the Kaggle layout with solution.csv (default ../shared/data/arena_alpacaeval_gpt4,
# relative to the repo root; a given one is relative to where the script is called from; files plain
# or compressed). A cheap CPU setting by default: a random 800 training and 400 test rows (0: all)
# copied to runs/bench_arena_scorer/<folder>/data, 2 folds, 32 tokens per item; overrides (key=value,
# e.g. render.max_length=512 on a GPU) go to the scorer.
# The last line is
#   test_logloss=<stack with the scorer> without_scorer=<stack of the feature model alone>
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
given=() extra=(render.max_length=32) TRAIN_ROWS=800 TEST_ROWS=400 FOLDS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --train-rows) TRAIN_ROWS=$2; shift 2 ;;
        --test-rows) TEST_ROWS=$2; shift 2 ;;
        --folds) FOLDS=$2; shift 2 ;;
        *=*) extra+=("$1"); shift ;;
        *) given=("$1"); shift ;;
    esac
done
DATA=$(data_dir "$ROOT/../shared/data/arena_alpacaeval_gpt4" "${given[@]}")
cd "$ROOT"
BIN=${BIN:-.venv/bin}
OUT=runs/bench_arena_scorer/$(basename "$DATA")
MODEL=checkpoints/pretrained/all-MiniLM-L6-v2
[ -f "$MODEL/config.json" ] || "$BIN/prefkit" models fetch all-MiniLM-L6-v2
rm -rf "$OUT" && mkdir -p "$OUT/data"

# the subset (same rows for every model): train, test, its sample submission and solution
"$BIN/python" - "$DATA" "$OUT/data" "$TRAIN_ROWS" "$TEST_ROWS" <<'PY'
import sys
from pathlib import Path

import pandas as pd

from prefkit.data.kaggle import locate_kaggle_files

src, out, n_train, n_test = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
found = locate_kaggle_files(src)
if found.test is None or found.solution is None or found.sample_submission is None:
    sys.exit(f"{src}: needs train, test, sample_submission and solution files")
train = pd.read_csv(found.train, dtype=str, keep_default_na=False)
test = pd.read_csv(found.test, dtype=str, keep_default_na=False)
if 0 < n_train < len(train):
    train = train.sample(n_train, random_state=0)
if 0 < n_test < len(test):
    test = test.sample(n_test, random_state=0)
ids = set(test["id"])
for name, table in (("train", train), ("test", test)):
    table.to_csv(out / f"{name}.csv", index=False)
for name, path in (("sample_submission", found.sample_submission), ("solution", found.solution)):
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table[table["id"].isin(ids)].to_csv(out / f"{name}.csv", index=False)
print(f"subset: {len(train)} training and {len(test)} test rows of {src}")
PY
SUB=$OUT/data
common=(data.dir="$SUB" output_dir="$OUT" folds.n_folds="$FOLDS")

echo "== feature model"
"$BIN/prefkit" train-features -c configs/arena_features.yaml "${common[@]}" name=features
echo "== item scorer: overrides ${extra[*]:-none}"
start=$(date +%s)
"$BIN/prefkit" train-transformer -c configs/arena_scorer.yaml "${common[@]}" name=scorer model.name_or_path="$MODEL" "${extra[@]}"
echo "item scorer training and inference took $(( $(date +%s) - start )) s"

"$BIN/prefkit" stack "$OUT/features" -c configs/arena_features.yaml "${common[@]}" \
    stack.name=stack_features stack.submission="$OUT/without_scorer.csv"
"$BIN/prefkit" stack "$OUT/features" "$OUT/scorer" -c configs/arena_features.yaml "${common[@]}" \
    stack.name=stack_with_scorer stack.submission="$OUT/with_scorer.csv"

solution=$SUB/solution.csv
scorer_only=$(test_logloss "$OUT/scorer/test.csv" "$solution")
echo "item scorer alone: test log loss $scorer_only"
with=$(test_logloss "$OUT/with_scorer.csv" "$solution")
without=$(test_logloss "$OUT/without_scorer.csv" "$solution")
echo "test_logloss=$with without_scorer=$without"
