#!/usr/bin/env bash
# Zero-shot LLM judge (`prefkit judge annotate`): every pair asked in both orders, the verdict read from
# the option tokens' next-token probabilities.
#
#   bash bench/judge_zero_shot.sh [DATA_DIR] [MODEL] [--max-rows N] [--max-length L] [--dtype T] [--device D] [--batch-size B]
#
# DATA_DIR (default ../shared/data/llmfao_crowd, relative to the repo root; a given one is relative to where
# the script is called from) is either
#   * a crowd-votes folder (votes.csv, plain or compressed; LLMFAO layout): the Bradley-Terry model scores
#     fitted from the annotations are compared with those fitted from the crowd votes (Spearman over the
#     models), the annotations with the vote shares (pair-level log loss); last line
#       spearman_vs_crowd=<v> pair_logloss=<v> flip_rate=<v>
#   * a Kaggle-layout folder (train.csv, test.csv, solution.csv): the test file is annotated and scored
#     against solution.csv (on the annotated rows with --max-rows); last line
#       test_logloss=<v> flip_rate=<v>
# MODEL: a causal LM folder, or a .gguf file (default: SmolLM2-135M-Instruct, fetched with
# `prefkit models fetch` when absent). --max-rows N annotates a seeded random N rows of each file (CPU).
# --dtype (default bfloat16: 1.7x faster than float32 on a CPU with AVX512-BF16, the usual choice on a GPU);
# --max-length defaults to configs/judge/zero_shot.yaml's (256 tokens, template included).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
POSITIONAL=() OPTIONS=() DTYPE=bfloat16
while [ $# -gt 0 ]; do
    case "$1" in
        --max-rows) OPTIONS+=("annotate.max_rows=$2"); shift 2 ;;
        --max-length) OPTIONS+=("render.max_length=$2"); shift 2 ;;
        --device) OPTIONS+=("annotate.device=$2"); shift 2 ;;
        --dtype) DTYPE=$2; shift 2 ;;
        --batch-size) OPTIONS+=("annotate.batch_size=$2"); shift 2 ;;
        --*) echo "unknown option $1" >&2; exit 2 ;;
        *) POSITIONAL+=("$1"); shift ;;
    esac
done
DATA=$(data_dir "$ROOT/../shared/data/llmfao_crowd" "${POSITIONAL[@]:0:1}")
MODEL=${POSITIONAL[1]:-}
[ -z "$MODEL" ] || MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
cd "$ROOT"
BIN=${BIN:-.venv/bin}
if [ -z "$MODEL" ]; then
    MODEL=checkpoints/pretrained/SmolLM2-135M-Instruct
    [ -f "$MODEL/model.safetensors" ] || "$BIN/prefkit" models fetch SmolLM2-135M-Instruct --convert-gguf >&2
fi
if [ "${MODEL%.gguf}" != "$MODEL" ]; then  # a GGUF file: its folder, and the file inside it
    MODEL_ARGS=("model.name_or_path=$(dirname "$MODEL")" "model.gguf_file=$(basename "$MODEL")")
else
    MODEL_ARGS=("model.name_or_path=$MODEL")
fi
MODEL_ARGS+=("model.dtype=$DTYPE")
WORK=runs/bench_judge/$(basename "$DATA")
mkdir -p "$WORK"
VOTES=$(find_data_file "$DATA" votes || true)
TRAIN=$(find_data_file "$DATA" train || true)
START=$(date +%s)

if [ -n "$VOTES" ]; then
    "$BIN/prefkit" judge annotate -c configs/judge/zero_shot.yaml "data.train=$VOTES" data.format=votes \
        "${MODEL_ARGS[@]}" "output_dir=$WORK" name=judge annotate.scores=true "${OPTIONS[@]}" >&2
    "$BIN/prefkit" scores fit votes "$VOTES" --out "$WORK/crowd_scores" --top 0 >&2
    echo "wall $(( $(date +%s) - START ))s" >&2
    "$BIN/python" - "$WORK" <<'EOF'
import json, sys
import pandas as pd
from scipy.stats import spearmanr
work = sys.argv[1]
judge = pd.read_csv(f"{work}/judge/scores/scores.csv").set_index("item")["score"]
crowd = pd.read_csv(f"{work}/crowd_scores/scores.csv").set_index("item")["score"]
common = judge.index.intersection(crowd.index)
m = json.load(open(f"{work}/judge/metrics.json"))
rho = spearmanr(judge[common], crowd[common]).statistic
print(f"{len(common)} models; judge seconds {m['seconds_annotating']} ({m['pairs_per_s']} pairs/s on {m['device']}, "
      f"{m['torch_threads']} threads, mean {m['mean_tokens']:.0f} tokens); mean P(first) {m['position_bias']['mean_p_first']:.4f}; "
      f"vote-weighted log loss {m['labels']['weighted']['log_loss']:.5f}", file=sys.stderr)
print(f"spearman_vs_crowd={rho:.4f} pair_logloss={m['labels']['pair_log_loss']:.5f} flip_rate={m['position_bias']['flip_rate']:.4f}")
EOF
elif [ -n "$TRAIN" ]; then
    SOLUTION=$(find_data_file "$DATA" solution || true)
    "$BIN/prefkit" judge annotate -c configs/judge/zero_shot.yaml "data.dir=$DATA" \
        "${MODEL_ARGS[@]}" "output_dir=$WORK" name=judge "${OPTIONS[@]}" >&2
    echo "wall $(( $(date +%s) - START ))s" >&2
    SCORED=""
    if [ -n "$SOLUTION" ]; then  # the solution rows that were annotated (all of them without --max-rows)
        SCORED=$WORK/solution_annotated.csv
        "$BIN/python" - "$SOLUTION" "$WORK/judge/test.csv" "$SCORED" <<'EOF'
import sys
import pandas as pd
solution = pd.read_csv(sys.argv[1], dtype={"id": str})
ids = set(pd.read_csv(sys.argv[2], dtype={"id": str})["id"])
solution[solution["id"].isin(ids)].to_csv(sys.argv[3], index=False)
EOF
    fi
    LOSS=$(test_logloss "$WORK/judge/test.csv" "$SCORED")
    FLIP=$("$BIN/python" -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['test_position_bias']['flip_rate']:.4f}\")" "$WORK/judge/metrics.json")
    echo "test_logloss=$LOSS flip_rate=$FLIP"
else
    echo "no votes.csv or train.csv (plain or compressed) in $DATA" >&2
    exit 2
fi
