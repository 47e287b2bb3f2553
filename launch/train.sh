#!/usr/bin/env bash
# Trains a config: install what is missing, build, run t6-train (under mpirun with -n).
# Usage: launch/train.sh CONFIG.yaml [-n NPROC] [--hostfile FILE] [t6-train args: --set k=v, --resume auto]
#   -n NPROC         data-parallel processes (default 1: no mpirun)
#   --hostfile FILE  spread them over the machines in FILE (launch/hostfile.example)
# Each process gets cores/NPROC OpenMP threads unless OMP_NUM_THREADS is set; the environment
# (OMP_*, T6_*, NCCL_*) is forwarded to every rank; NVLink multicast stays off
# (NCCL_NVLS_ENABLE=0) unless you set it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
config="$1"; shift
nproc=1; hostfile=""; args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--nproc)
      if [ $# -lt 2 ] || ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
        echo "train.sh: $1 expects a number of processes (1 or more), got '${2-}'" >&2
        exit 2
      fi
      nproc="$2"; shift 2 ;;
    --hostfile)
      if [ $# -lt 2 ] || [ ! -f "$2" ]; then
        echo "train.sh: --hostfile expects an existing file (launch/hostfile.example), got '${2-}'" >&2
        exit 2
      fi
      hostfile="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
"$root/launch/setup.sh" >/dev/null
"$root/launch/build.sh" >/dev/null
bin="${T6_BUILD_DIR:-$root/build}/trainer/t6-train"
if [ "$nproc" -eq 1 ] && [ -z "$hostfile" ]; then
  exec "$bin" --config "$config" "${args[@]}"
fi

export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / nproc > 0 ? $(nproc) / nproc : 1 ))}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
mpi=(mpirun -np "$nproc" --bind-to none --map-by slot)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
[ -n "$hostfile" ] && mpi+=(--hostfile "$hostfile") || mpi+=(--oversubscribe)
# Forward the variables that shape a run to every rank (mpirun passes -x NAME from our environment).
for v in $(env | cut -d= -f1 | grep -E '^(OMP_|T6_|NCCL_|CUDA_VISIBLE_DEVICES$)' || true); do mpi+=(-x "$v"); done
# mpirun exits 1 when it is signalled itself, even after every rank saved and stopped cleanly; but
# it passes SIGUSR1 on to the ranks without ending the job. So SIGINT/SIGTERM/SIGHUP to this script
# (a scheduler's cancel or time limit, a terminal's Ctrl-C) reach the ranks as SIGUSR1: they save
# a checkpoint and exit 0, and so does this script. A second signal stops mpirun at once. mpirun
# runs in a session of its own (setsid), so that a terminal's Ctrl-C, which signals the whole
# foreground process group, reaches it only through this script.
pid=""
signals=0
forward() {
  signals=$((signals + 1))
  [ -n "$pid" ] || return 0  # (mpirun not started yet: the loop below sees the signal count)
  if [ $signals -eq 1 ]; then kill -USR1 "$pid" 2>/dev/null || true; else kill -TERM "$pid" 2>/dev/null || true; fi
}
trap forward INT TERM HUP
setsid "${mpi[@]}" "$bin" --config "$config" "${args[@]}" &
pid=$!
[ $signals -eq 0 ] || kill -USR1 "$pid" 2>/dev/null || true
while true; do
  rc=0
  wait "$pid" || rc=$?
  kill -0 "$pid" 2>/dev/null || break  # (wait returns early when a trapped signal arrives)
done
exit "$rc"
