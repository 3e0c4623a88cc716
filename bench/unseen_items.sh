#!/usr/bin/env bash
# Scores for texts never compared: a text scorer (task item_scorer, default all-MiniLM-L6-v2)
# trained on the comparisons among 80% of the documents predicts the comparisons among the other
# 20% (held-out comparison log loss), against the constant; a Bradley-Terry fit cannot score
# unseen documents. Any folder with comparisons.csv (doc_a, doc_b, winner a/b/tie, optional
# worker_id) and docs.csv (document_id, text), plain or compressed.
#
#   bash bench/unseen_items.sh [DATA_DIR] [--max-train-pairs N] [--model DIR] [overrides...]
#
# DATA_DIR defaults to ../shared/data/sentimentit_human_rights (relative to the repo root); a
# given DATA_DIR is relative to where the script is called from. Outputs in
# runs/bench_unseen_items/<folder name>/. The last line is
#   heldout_logloss_text_scorer=<v> heldout_logloss_constant=<v>
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
given=()
if [ $# -ge 1 ] && [ "${1#-}" = "$1" ] && [ "${1#*=}" = "$1" ]; then given=("$1"); shift; fi
DATA=$(data_dir "$ROOT/../shared/data/sentimentit_human_rights" "${given[@]}")
cd "$ROOT"
BIN=${BIN:-.venv/bin}
comparison_files "$DATA"
MODEL=checkpoints/pretrained/all-MiniLM-L6-v2
if [ ! -f "$MODEL/config.json" ]; then "$BIN/prefkit" models fetch all-MiniLM-L6-v2; fi
OUT=runs/bench_unseen_items/$(basename "$DATA")
rm -rf "$OUT/text_scorer"  # a fresh run: another split or model must not meet an earlier fold
"$BIN/python" bench/unseen_items.py "$COMPARISONS" --docs "$DOCS" --out "$OUT" "$@"
