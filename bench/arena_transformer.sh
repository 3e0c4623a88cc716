#!/usr/bin/env bash
# Transformer pair classifier (default: all-MiniLM-L6-v2 cross-encoder) per fold -> stacked with the
# feature model (nested CV, temperature) -> submission, scored against the folder's solution.
#
#   bash bench/arena_transformer.sh [DATA_DIR] [MODEL] [--device auto|cpu|cuda] [--max-train-pairs N]
#                                   [--max-length L] [--epochs E] [--folds 0,1] [extra overrides...]
#
# DATA_DIR: a folder in the Kaggle layout (default ../shared/data/arena_alpacaeval_gpt4, relative to the
# repo root; files plain or .xz). MODEL: a local model folder (default checkpoints/pretrained/all-MiniLM-L6-v2,
# fetched with `prefkit models fetch` when missing). What was used is saved in each run's config.yaml and
# echoed below. With --folds, only those folds are trained and the stacker is fitted on the rows they cover.
# Outputs go to runs/bench_transformer/<folder name>/ (git-ignored). The last line is
#   test_logloss=<stacked> features_only=<value> transformer_only=<value>
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=$ROOT/../shared/data/arena_alpacaeval_gpt4
MODEL=checkpoints/pretrained/all-MiniLM-L6-v2
positional=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) extra+=("train.device=$2"); shift 2 ;;
        --max-train-pairs) extra+=("train.max_train_pairs=$2"); shift 2 ;;
        --max-length) extra+=("render.max_length=$2"); shift 2 ;;
        --epochs) extra+=("train.epochs=$2"); shift 2 ;;
        --folds) extra+=("train.folds=[$2]"); shift 2 ;;
        *=*) extra+=("$1"); shift ;;
        *) positional+=("$1"); shift ;;
    esac
done
[ ${#positional[@]} -ge 1 ] && DATA=$(cd "${positional[0]}" && pwd)
[ ${#positional[@]} -ge 2 ] && MODEL=$(cd "${positional[1]}" && pwd)
cd "$ROOT"
BIN=${BIN:-.venv/bin}
source bench/lib.sh
OUT=runs/bench_transformer/$(basename "$DATA")
mkdir -p "$OUT"

if [ "$MODEL" = checkpoints/pretrained/all-MiniLM-L6-v2 ] && [ ! -f "$MODEL/config.json" ]; then
    "$BIN/prefkit" models fetch all-MiniLM-L6-v2
fi

echo "== transformer: model=$MODEL overrides: ${extra[*]:-none}"
start=$(date +%s)
"$BIN/prefkit" train-transformer -c configs/minilm.yaml \
    data.dir="$DATA" output_dir="$OUT" name=transformer model.name_or_path="$MODEL" "${extra[@]}"
echo "transformer training and inference took $(( $(date +%s) - start )) s"

echo "== feature model"
"$BIN/prefkit" train-features -c configs/arena_features.yaml data.dir="$DATA" output_dir="$OUT" name=features

"$BIN/prefkit" stack "$OUT/features" -c configs/arena_features.yaml \
    data.dir="$DATA" output_dir="$OUT" stack.name=stack_features stack.submission="$OUT/features_only.csv"
"$BIN/prefkit" stack "$OUT/features" "$OUT/transformer" -c configs/arena_features.yaml \
    data.dir="$DATA" output_dir="$OUT" stack.name=stack_all stack.submission="$OUT/submission.csv"

solution=$(find_data_file "$DATA" solution)
stacked=$(test_logloss "$OUT/submission.csv" "$solution")
features=$(test_logloss "$OUT/features_only.csv" "$solution")
transformer=$(test_logloss "$OUT/transformer/test.csv" "$solution")
echo "test_logloss=$stacked features_only=$features transformer_only=$transformer"
