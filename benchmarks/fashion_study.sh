#!/bin/sh
# The Fashion-MNIST study (presets/yosinski-fashion-mnist.yaml) end to end in a fresh clone,
# as a new user runs it, with each stage's wall time and peak RSS (GNU time -v):
#
#   sh benchmarks/fashion_study.sh [DIR] [DATA_ROOT]
#
# DIR (default /tmp/fashion-study): the clone, its own empty variant store (DIR-store, so
# everything trains) and the logs (DIR-logs). DATA_ROOT (default /usr/share/datasets):
# where fashion-mnist/ lies (Debian's dataset-fashion-mnist; or torchvision's layout).
# `make repro` first (environment, install, the default digits run), then the preset
# written into params.yaml / recipe.yaml, then each stage in the pipeline's order with
# `dvc repro --single-item`, then one plain `dvc repro` that must find nothing to do.
# With KILL_AFTER=SECONDS, sweep@1 is killed that long after it starts and rerun: the
# rerun must reuse every variant the killed run stored (its log says how many).
# Prints a table: stage, wall s, peak RSS MiB; the logs keep each stage's output.
set -eu
DIR=${1:-/tmp/fashion-study}
DATA_ROOT=${2:-/usr/share/datasets}
SRC=$(cd "$(dirname "$0")/.." && pwd)
LOGS=$DIR-logs
rm -rf "$DIR" "$DIR-store" "$LOGS"
mkdir -p "$LOGS"
git clone -q "$SRC" "$DIR"
cd "$DIR"
export TRANSFERLAB_STORE="$DIR-store"
TABLE=$LOGS/table.tsv
printf 'stage\twall_s\tpeak_rss_mib\n' > "$TABLE"

timed() {  # timed NAME COMMAND...: run it under GNU time, append a row to the table
    name=$1; shift
    /usr/bin/time -v -o "$LOGS/$name.time" "$@" > "$LOGS/$name.log" 2>&1 || {
        echo "$name failed:"; tail -20 "$LOGS/$name.log"; exit 1; }
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = 0;
        for (i = 1; i <= n; i++) s = s * 60 + t[i]; printf "%.1f", s}' "$LOGS/$name.time")
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$LOGS/$name.time")
    printf '%s\t%s\t%s\n' "$name" "$wall" "$rss" >> "$TABLE"
    printf '%-18s %8s s %8s MiB\n' "$name" "$wall" "$rss"
}

timed make-repro make repro
. .venv/bin/activate
python -m transferlab.config.presets yosinski-fashion-mnist --write > "$LOGS/preset.log"
python - "$DATA_ROOT" <<'EOF'
import sys
import yaml
with open("recipe.yaml") as f:
    recipe = yaml.safe_load(f)
recipe["data"]["root"] = sys.argv[1]
with open("recipe.yaml", "w") as f:
    yaml.safe_dump(recipe, f, sort_keys=False)
EOF
for stage in check_params sources_used prepare pretrain@A pretrain@B transfer sweep@0 sweep@1 binary_aux \
             features heads diagnostics transferability rank_sources report; do
    if [ "$stage" = sweep@1 ] && [ -n "${KILL_AFTER:-}" ]; then
        start=$(date +%s)
        dvc repro --single-item "$stage" > "$LOGS/$stage-killed.log" 2>&1 &
        sleep "$KILL_AFTER"
        # SIGTERM: a non-interactive shell starts background jobs with SIGINT ignored
        pkill -TERM -f "stages/sweep.py --seed 1" || true
        wait || true
        echo "sweep@1 killed after $(( $(date +%s) - start )) s" | tee -a "$LOGS/killed.txt"
    fi
    timed "$stage" dvc repro --single-item "$stage"
done
timed noop dvc repro
grep -q "up to date" "$LOGS/noop.log" || { echo "second dvc repro ran something"; exit 1; }
awk -F'\t' 'NR > 1 && $1 != "make-repro" && $1 != "noop" {s += $2; if ($3 > m) m = $3}
    END {printf "study (preset stages): %.1f s = %.1f min, peak RSS %d MiB\n", s, s / 60, m}' \
    "$TABLE" | tee "$LOGS/total.txt"
