#!/bin/bash
# eval-npu on the board: ax_run_model once per input (or once for all), each output committed by a rename,
# a status line per input, then one tar of what the host has not pulled yet. bash: arrays, $EPOCHREALTIME.
#   bash eval.sh MODE BUNDLE_DIR RUN_DIR OUTPUT_BYTES AX_RUN_MODEL FRESH PULL_NAME IDS...
set -u
mode=$1 bundle=$2 run=$3 nb=$4 ax=$5 fresh=$6 pull=$7
shift 7
model="$bundle/model/compiled.axmodel"
[ -f "$model" ] || { echo "error: $model not found; run invoke deploy first" >&2; exit 3; }
mkdir -p "$bundle/runs" || exit 3
# one eval per run dir at a time: a re-run waits for a loop left running by a dropped connection
exec 9>>"$run.lock"
if command -v flock >/dev/null 2>&1; then
  flock -w 600 9 || { echo "error: another eval-npu still holds $run.lock" >&2; exit 4; }
fi
if [ "$fresh" = 1 ]; then rm -rf "$run"; fi
mkdir -p "$run/output" "$run/logs" || exit 3
rm -rf "$run/tmp"
find "$run" -maxdepth 1 -name 'pull-*.tar' -mmin +120 -exec rm -f {} + 2>/dev/null
mkdir -p "$run/tmp" || exit 3
# microseconds from bash's clock (no process per reading); date(1) if the shell lacks it
now_us() { if [ -n "${EPOCHREALTIME:-}" ]; then us=${EPOCHREALTIME//[.,]/}; else us=$(($(date +%s%N) / 1000)); fi; }
finish() {  # k rc ms outdir strict: judge, append the status line to logs/k.txt, commit output/k
  k=$1 rc=$2 ms=$3 od=$4 st=ok why=-
  lg="$run/logs/$k.txt"
  sz=$(stat -c %s "$od/output.bin" 2>/dev/null || echo none)
  err=0
  if [ "$5" = 1 ]; then
    while IFS= read -r line; do [[ $line == *"[ERROR]"* ]] && { err=1; break; }; done < "$lg"
  fi
  if [ "$err" = 1 ]; then st=fail why="[ERROR] in the ax_run_model printout (exit status $rc)"
  elif [ "$sz" != "$nb" ]; then st=fail why="no complete output.bin ($sz bytes, expected $nb; exit status $rc)"
  fi
  printf 'status\t%s\t%s\t%s\t%s\n' "$st" "$rc" "$ms" "$why" >> "$lg"
  # the rename of output/k is the commit point: a complete output/k/output.bin exists only after it
  if [ "$st" = ok ]; then mv -T "$od" "$run/output/$k" || exit 3; fi
  echo "KWS $st $k $ms"
}
if [ "$mode" = per-input ]; then
  dirs=()
  for k in "$@"; do dirs+=("$run/tmp/$k/out"); done
  mkdir -p "${dirs[@]}" || exit 3  # one process for all the work dirs
  for k in "$@"; do
    if [ -f "$run/output/$k/output.bin" ]; then echo "KWS skip $k"; continue; fi
    t="$run/tmp/$k"
    printf '%s\n' "$k" > "$t/list.txt" || exit 3
    now_us; t0=$us
    "$ax" -m "$model" -i "$bundle/input/" -o "$t/out/" -l "$t/list.txt" > "$run/logs/$k.txt" 2>&1 9>&-
    rc=$?
    now_us
    finish "$k" "$rc" $(( (us - t0) / 1000 )) "$t/out/$k" 1
  done
else
  : > "$run/tmp/list.txt"
  for k in "$@"; do
    if [ -f "$run/output/$k/output.bin" ]; then echo "KWS skip $k"; else printf '%s\n' "$k" >> "$run/tmp/list.txt"; fi
  done
  if [ -s "$run/tmp/list.txt" ]; then
    mkdir -p "$run/tmp/out"
    now_us; t0=$us
    "$ax" -m "$model" -i "$bundle/input/" -o "$run/tmp/out/" -l "$run/tmp/list.txt" > "$run/logs/batch.txt" 2>&1 9>&-
    rc=$?
    now_us
    echo "KWS batch $(( (us - t0) / 1000 )) $rc"
    while IFS= read -r k; do
      printf 'batch mode: see logs/batch.txt\n' > "$run/logs/$k.txt"
      finish "$k" "$rc" -1 "$run/tmp/out/$k" 0
    done < "$run/tmp/list.txt"
  fi
fi
cd "$run" || exit 3
: >> tmp/list.txt
printf 'tmp/list.txt\n' > tmp/pull.list
for k in "$@"; do
  [ -d "output/$k" ] && printf 'output/%s\n' "$k" >> tmp/pull.list
  [ -f "logs/$k.txt" ] && printf 'logs/%s.txt\n' "$k" >> tmp/pull.list
done
[ -f logs/batch.txt ] && printf 'logs/batch.txt\n' >> tmp/pull.list
tar -cf "$pull.tmp" -T tmp/pull.list && mv -f "$pull.tmp" "$pull" || exit 3
echo "KWS pull $run/$pull"
