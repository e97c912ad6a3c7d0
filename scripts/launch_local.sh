#!/usr/bin/env bash
# Run one study as N jaxdyn processes on this machine (jax.distributed over localhost), to try
# the multi-process path: process 0 writes the run folder, every process's devices hold members.
# Options after STUDY go to every `jaxdyn run`.
#
#   scripts/launch_local.sh N STUDY.toml [--out RUN_DIR] [--set KEY=VALUE ...]
#   scripts/launch_local.sh N --resume RUN_DIR [--set train.steps=MORE ...]     (continue a run of N processes)
#
# Environment: JAXDYN_CPU_DEVICES (CPU devices per process; default 1), JAXDYN_PORT (the
# coordinator's port; default a free one), JAXDYN_LOG_DIR (where processes 1..N-1 log; default
# a temporary folder; process 0 prints here), JAXDYN_GPUS_PER_PROCESS (G: process i sees GPUs
# i*G ... i*G+G-1 through CUDA_VISIBLE_DEVICES; default: every process sees every GPU, which
# jax refuses to share), PYTHON (default python3).
# A SIGTERM or Ctrl-C is passed on to every process (each saves a checkpoint after the same chunk).
# The exit status is the first non-zero status of any process, else 0.
set -u
if [ $# -lt 2 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N STUDY.toml [jaxdyn run options...], or $0 N --resume RUN_DIR   (N: the number of processes, 1 or more)" >&2
  exit 2
fi
n=$1
shift
python=${PYTHON:-python3}
port=${JAXDYN_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
logs=${JAXDYN_LOG_DIR:-$(mktemp -d -t jaxdyn-launch-XXXXXX)}
mkdir -p "$logs"
export JAXDYN_CPU_DEVICES=${JAXDYN_CPU_DEVICES:-1}
pids=()
for ((i = 0; i < n; i++)); do
  args=(run "$@" --distributed --coordinator "127.0.0.1:$port" --num-processes "$n" --process-id "$i")
  if [ -n "${JAXDYN_GPUS_PER_PROCESS:-}" ]; then
    g=$JAXDYN_GPUS_PER_PROCESS
    export CUDA_VISIBLE_DEVICES=$(seq -s, $((i * g)) $((i * g + g - 1)))
  fi
  if [ "$i" -eq 0 ]; then
    "$python" -m jaxdyn "${args[@]}" &
  else
    "$python" -m jaxdyn "${args[@]}" > "$logs/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done
if [ "$n" -gt 1 ]; then
  echo "[launch_local] $n processes, coordinator 127.0.0.1:$port; processes 1-$((n - 1)) log to $logs" >&2
fi
forward() { kill -"$1" "${pids[@]}" 2>/dev/null; }
trap 'forward TERM' TERM
trap 'forward INT' INT
status=0
for pid in "${pids[@]}"; do
  while true; do
    wait "$pid"
    rc=$?
    # A trapped signal interrupts `wait` (status > 128) while the process still runs: wait again.
    kill -0 "$pid" 2>/dev/null || break
  done
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
done
exit $status
