#!/usr/bin/env bash
# Frozen all-MiniLM-L6-v2 features on the arena data: embedding time, then the feature model's
# test log loss with and without them. Outputs under runs/bench_embeddings/ (git-ignored).
#
#   bash bench/arena_embeddings.sh [DATA_DIR [extra `prefkit embed` options, e.g. --device cuda]]
#
# On a 2-core CPU the embedding (about 44k distinct texts at 256 tokens) takes the better part
# of an hour; it is cached, so a second run goes straight to the feature models. DATA_DIR is a
# Kaggle-layout folder (plain or compressed CSVs), relative to the repo root. The last line is
#   test_logloss_features=<value> test_logloss_features_embeddings=<value>
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/arena_alpacaeval_gpt4}
shift || true
BIN=${BIN:-.venv/bin}
source bench/lib.sh
OUT=runs/bench_embeddings
FEATS=$OUT/arena_minilm_L256_svd16.parquet
mkdir -p "$OUT"

"$BIN/prefkit" models fetch all-MiniLM-L6-v2
"$BIN/prefkit" embed "$(find_data_file "$DATA" train)" "$(find_data_file "$DATA" test)" --out "$FEATS" \
    --model checkpoints/pretrained/all-MiniLM-L6-v2 --max-length 256 --svd-dim 16 "$@"

declare -A logloss
for run in base emb; do
    extra=()
    [ "$run" = emb ] && extra=("features.extra_features=[$FEATS]")
    "$BIN/prefkit" train-features data.dir="$DATA" name="features_$run" output_dir="$OUT" "${extra[@]}"
    echo "== features_$run: test"
    logloss[$run]=$(test_logloss "$OUT/features_$run/test.csv" "$(find_data_file "$DATA" solution)")
done
echo "test_logloss_features=${logloss[base]} test_logloss_features_embeddings=${logloss[emb]}"
