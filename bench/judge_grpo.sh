#!/usr/bin/env bash
# A generative judge before and after GRPO training (prefkit judge train / evaluate) on a
# Kaggle-layout arena folder: its train file is split by prompt group into training pairs
# and held-out pairs; the held-out pairs are judged by the starting model and by the trained
# judge (sampled verdicts, both orders).
#
#   bash bench/judge_grpo.sh [DATA_DIR] [MODEL]
#
# DATA_DIR defaults to ../shared/data/arena_alpacaeval_gpt4, MODEL to
# checkpoints/pretrained/SmolLM2-135M-Instruct (any local causal LM with a chat template).
# Sizes from the environment: TRAIN_PAIRS (256), HELDOUT_PAIRS (200), STEPS (200),
# MAX_CHARS (pairs longer than this many characters in all are left out; 6000), and
# EXTRA (more overrides for both commands, e.g. "train.mixed_precision=bf16 grpo.use_vllm=true"
# on a GPU, or "train.device=cpu grpo.max_completion_length=96" for a CPU smoke run).
# The last line is
#   accuracy_before=<v> accuracy_after=<v> flip_before=<v> flip_after=<v> unparseable_before=<v> unparseable_after=<v> logloss_before=<v> logloss_after=<v>
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
DATA=$(data_dir "$ROOT/../shared/data/arena_alpacaeval_gpt4" "$@")
MODEL=${2:-checkpoints/pretrained/SmolLM2-135M-Instruct}
cd "$ROOT"
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/bench_judge_grpo}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
mkdir -p "$OUT"

# held-out pairs share no prompt with the training pairs
"$BIN/python" - "$DATA" "$OUT" "${TRAIN_PAIRS:-256}" "${HELDOUT_PAIRS:-200}" "${MAX_CHARS:-6000}" <<'PY'
import sys
from prefkit.data.formats import read_pairs
from prefkit.text.render import field_text

data, out, n_train, n_held, max_chars = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
pairs = read_pairs(data, "kaggle")
chars = sum(pairs[c].map(lambda t: len(field_text(t))) for c in ("prompt", "response_a", "response_b"))
pairs = pairs[chars <= max_chars].sample(frac=1.0, random_state=0)
groups = pairs["group"].drop_duplicates().tolist()
held_groups = set(groups[: max(1, len(groups) // 5)])
held = pairs[pairs["group"].isin(held_groups)].head(n_held)
train = pairs[~pairs["group"].isin(held_groups)].head(n_train)
train.reset_index(drop=True).to_parquet(f"{out}/train.parquet")
held.reset_index(drop=True).to_parquet(f"{out}/heldout.parquet")
print(f"{len(train)} training pairs, {len(held)} held-out pairs (of {len(pairs)} within {max_chars} characters)", file=sys.stderr)
PY

COMMON=(-c configs/judge/grpo.yaml "model.name_or_path=$MODEL" "${EXTRA_ARGS[@]}")
"$BIN/prefkit" judge evaluate "$OUT/heldout.parquet" --format parquet --out "$OUT/before" --force "${COMMON[@]}" >&2
"$BIN/prefkit" judge train "${COMMON[@]}" data.dir=null data.format=parquet "data.train=$OUT/train.parquet" \
    "train.max_steps=${STEPS:-200}" "output_dir=$OUT" name=judge --force >&2
"$BIN/prefkit" judge evaluate "$OUT/heldout.parquet" --format parquet --run "$OUT/judge" --out "$OUT/after" --force "${COMMON[@]}" >&2

"$BIN/python" - "$OUT" <<'PY'
import json, sys
b, a = (json.load(open(f"{sys.argv[1]}/{k}/metrics.json")) for k in ("before", "after"))
keys = (("accuracy", "accuracy"), ("flip", "flip_rate"), ("unparseable", "unparseable"), ("logloss", "log_loss"))
print(" ".join(f"{name}_{when}={m[key]:.4f}" for name, key in keys for when, m in (("before", b), ("after", a))))
PY
