# Helpers shared by the bench scripts (sourced; they set BIN to the folder holding `prefkit`).

# data_dir DEFAULT [GIVEN]: the absolute data folder, GIVEN (relative to where the script
# was called from: call this before changing directory) or else DEFAULT.
data_dir() {
    if [ $# -ge 2 ]; then (cd "$2" && pwd); else echo "$1"; fi
}

# find_data_file DIR STEM: DIR/STEM.csv, plain or compressed; prints nothing when absent.
find_data_file() {
    local suffix
    for suffix in "" .xz .gz .bz2 .zip .zst; do
        [ -f "$1/$2.csv$suffix" ] && { echo "$1/$2.csv$suffix"; return; }
    done
}

# test_logloss PREDICTIONS SOLUTION: the log loss with 5 decimals (all scores go to stderr),
# or nan when there is no solution or no prediction file.
test_logloss() {
    [ -n "$2" ] && [ -f "$1" ] || { echo nan; return; }
    local scores
    scores=$("$BIN/prefkit" score "$1" "$2") || return
    echo "$scores" >&2  # (tee /dev/stderr would reopen, and so truncate, a redirected log file)
    echo "$scores" | tail -n 1 \
        | sed -n 's/^log_loss=\([^ ]*\).*/\1/p' | xargs printf '%.5f'
}

# comparison_files DIR: sets COMPARISONS and DOCS to DIR's comparisons.csv and docs.csv (plain or
# compressed), or stops with a message naming the missing one.
comparison_files() {
    COMPARISONS=$(find_data_file "$1" comparisons || true)
    DOCS=$(find_data_file "$1" docs || true)
    [ -n "$COMPARISONS" ] || { echo "no comparisons.csv (plain or compressed) in $1" >&2; exit 2; }
    [ -n "$DOCS" ] || { echo "no docs.csv (plain or compressed) in $1" >&2; exit 2; }
}
