#!/usr/bin/env bash
# Held-out comparison log loss (5 folds over comparisons) of Bradley-Terry (Davidson ties,
# L2 prior chosen by CV inside each training part) against the smoothed win rate, on any
# folder with comparisons.csv (doc_a, doc_b, winner a/b/tie, optional worker_id) and
# docs.csv (document_id, text), plain or compressed.
#
#   bash bench/scores_heldout.sh [DATA_DIR]
#
# DATA_DIR defaults to ../shared/data/sentimentit_human_rights (relative to the repo root);
# a given DATA_DIR is relative to where the script is called from. The last line is
#   heldout_logloss_bt=<v> heldout_logloss_winrate=<v> n_items=<v>
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
DATA=$(data_dir "$ROOT/../shared/data/sentimentit_human_rights" "$@")
cd "$ROOT"
BIN=${BIN:-.venv/bin}
comparison_files "$DATA"

"$BIN/prefkit" scores heldout comparisons "$COMPARISONS" --docs "$DOCS" --l2 cv --folds 5
