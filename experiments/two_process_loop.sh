#!/bin/bash
# Runs the two-process command of docs/training.md N times (2 local processes x 2 CPU devices over
# gloo) and counts hangs: a run still going after TMO seconds (default 300) is killed and counted.
#   experiments/two_process_loop.sh 10 readme                                  # that command
#   DS=weather_stations DD=/tmp/full experiments/two_process_loop.sh 3 many --config.eval_batch_size=8
# DS / DD: dataset name and data_dir (default: weather_stations in TFDS's default directory);
# SRC: the source tree to run (default: this repository). Logs and workdirs go to $OUT (/tmp/two_process).
N=${1:-10}; TAG=${2:-run}; shift 2
SRC=${SRC:-$(cd "$(dirname "$0")/.." && pwd)}; OUT=${OUT:-/tmp/two_process}; PY=${PY:-python}
mkdir -p "$OUT"; cd "$SRC" || exit 1
DATA=(--config.dataset.name="${DS:-weather_stations}")
[ -n "$DD" ] && DATA+=(--config.dataset.data_dir="$DD")
hangs=0
for k in $(seq 1 "$N"); do
  W=$OUT/${TAG}_$k; rm -rf "$W"; PORT=$((20000 + RANDOM % 20000)); pids=()
  for i in 0 1; do
    # SIGKILL: JAX's preemption notifier catches SIGTERM, so a plain timeout does not end a hang.
    JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 \
    JAX_COORDINATOR_ADDRESS=localhost:$PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$i \
    timeout -s KILL "${TMO:-300}" "$PY" -m hybrid_jax.main --config=configs/sensor.py:smoke \
      "${DATA[@]}" --workdir="$W" "$@" > "$OUT/${TAG}_${k}_$i.log" 2>&1 &
    pids+=($!)
  done
  rcs=""; for p in "${pids[@]}"; do wait "$p"; rcs="$rcs $?"; done
  echo "run $k exit codes:$rcs"
  case "$rcs" in *137*) hangs=$((hangs + 1));; esac
done
echo "$TAG: $hangs of $N runs hung"
