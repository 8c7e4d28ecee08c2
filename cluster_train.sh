#!/usr/bin/env bash
# Phase 2 training on several processes and nodes with torchrun (the seed guide's launcher).
#
#   ./cluster_train.sh CONFIG [NNODES NODE_RANK MASTER_ADDR MASTER_PORT] [TRAIN_PHASE2_ARGS…]
#
#   ./cluster_train.sh config/train_config.yaml                          # this node, every visible GPU
#   NPROC=2 ./cluster_train.sh config/demo.yaml --set max_steps=4         # no GPU: 2 CPU processes (gloo)
#   ./cluster_train.sh config/train_config.yaml 2 0 192.168.1.100 29500   # node 0 of 2 (at MASTER_ADDR)
#   ./cluster_train.sh config/train_config.yaml 2 1 192.168.1.100 29500   # node 1 of 2
#   MAX_RESTARTS=3 ./cluster_train.sh config/train_config.yaml            # survive 3 worker failures
#
# Every process runs train_phase2.py --config CONFIG [TRAIN_PHASE2_ARGS…] (e.g. --set k=v,
# --batch-size N, --resume, --debug); batch_size is per process. Processes per node: every
# GPU that torch sees (CUDA_VISIBLE_DEVICES narrows it; NCCL), or with no GPU NPROC CPU
# processes (default 2; gloo, OMP_NUM_THREADS=1 each unless set). NPROC overrides both.
# Several nodes meet through torchrun's c10d rendezvous at MASTER_ADDR:MASTER_PORT (RDZV_ID
# names the job, default "purrsight") and must share CONFIG's output_dir (a shared file
# system): rank 0 writes every checkpoint.
#
# MAX_RESTARTS=N (default 0): when a worker dies, torchrun restarts the whole group up to
# N times and the restarted processes resume from <output_dir>/checkpoints/last.ckpt
# (written at every epoch end; before the first one they start over), continuing the same
# MLflow run. A SIGTERM or Ctrl+C to this script reaches torchrun and its workers.
#
# Logs: <output_dir>/logs/distributed_training/cluster_train_<YYYYmmdd_HHMMSS>_node<k>.log
# (this node's processes, each line prefixed [default<local rank>]:) and the symlink
# latest_node<k>.log to it. PYTHON and TORCHRUN pick the interpreter and launcher (default:
# .venv/bin/ beside this script if there, else PATH). Exit code: torchrun's.
set -euo pipefail

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
fail() {
    echo "cluster_train.sh: $*" >&2
    exit 2
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ $# -ge 1 && "$1" != -* ]] || usage
CONFIG="$1"
shift
POSITIONAL=()
while [[ $# -gt 0 && "$1" != -* && ${#POSITIONAL[@]} -lt 4 ]]; do
    POSITIONAL+=("$1")
    shift
done
[[ "${1:-}" == "--" ]] && shift
TRAIN_ARGS=("--config" "$CONFIG" "$@")
NNODES="${POSITIONAL[0]:-1}"
NODE_RANK="${POSITIONAL[1]:-0}"
MASTER_ADDR="${POSITIONAL[2]:-}"
MASTER_PORT="${POSITIONAL[3]:-}"
MAX_RESTARTS="${MAX_RESTARTS:-0}"

is_count() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_count "$NNODES" && ((NNODES >= 1)) || fail "NNODES must be a positive integer, got '$NNODES'"
is_count "$NODE_RANK" && ((NODE_RANK < NNODES)) ||
    fail "NODE_RANK must be an integer from 0 to $((NNODES - 1)), got '$NODE_RANK'"
is_count "$MAX_RESTARTS" || fail "MAX_RESTARTS must be a non-negative integer, got '$MAX_RESTARTS'"
if ((NNODES > 1)) && [[ -z "$MASTER_ADDR" || -z "$MASTER_PORT" ]]; then
    fail "$NNODES nodes need MASTER_ADDR and MASTER_PORT (node 0's address and a free port)"
fi
[[ -z "$MASTER_PORT" ]] || is_count "$MASTER_PORT" || fail "MASTER_PORT must be a port number, got '$MASTER_PORT'"
[[ -f "$ROOT/train_phase2.py" ]] || fail "$ROOT/train_phase2.py not found"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="$(command -v python3 || command -v python)"; fi
fi
if [[ -z "${TORCHRUN:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/torchrun" ]]; then TORCHRUN="$ROOT/.venv/bin/torchrun"; else TORCHRUN="$(command -v torchrun || true)"; fi
fi
[[ -n "$TORCHRUN" ]] || fail "torchrun not found (set TORCHRUN, or create .venv with 'make demo')"

# A bad config stops here with one line, before any worker starts.
OUTPUT_DIR="$("$PYTHON" -m purrsight.jobs.launch output-dir "${TRAIN_ARGS[@]}")" || exit $?

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
    gpus="$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)"
fi
if ((gpus > 0)); then
    NPROC="${NPROC:-$gpus}"
    ((NPROC <= gpus)) || fail "NPROC=$NPROC but only $gpus GPUs are visible"
    DEVICES="$NPROC of $gpus GPUs (nccl)"
else
    NPROC="${NPROC:-2}"
    DEVICES="$NPROC CPU processes (gloo)"
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" # each process one thread: no oversubscription
fi
is_count "$NPROC" && ((NPROC >= 1)) || fail "NPROC must be a positive integer, got '$NPROC'"

# torchrun's elastic (c10d) rendezvous, so MAX_RESTARTS works on every node: one node
# alone on a free local port; several at MASTER_ADDR:MASTER_PORT, where the node whose
# address that is hosts it (torchrun numbers the nodes in the order they join; NODE_RANK
# names this node's log).
if ((NNODES == 1)) && [[ -z "$MASTER_PORT" ]]; then
    RDZV=(--standalone)
else
    RDZV=(--nnodes="$NNODES" --rdzv-backend=c10d --rdzv-endpoint="${MASTER_ADDR:-127.0.0.1}:$MASTER_PORT"
        --rdzv-id="${RDZV_ID:-purrsight}")
fi
# A restarted group must not share the rendezvous' key-value store with the group before
# it: the dead workers' addresses are still in it, and the new ones would try to connect
# to them (seen here as "Gloo connectFullMesh failed ... Connection refused" after a
# restart). With this, rank 0 of each attempt hosts a fresh store.
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

LOG_DIR="$OUTPUT_DIR/logs/distributed_training"
mkdir -p "$LOG_DIR"
LOG_NAME="cluster_train_$(date +%Y%m%d_%H%M%S)_node${NODE_RANK}.log"
LOG="$LOG_DIR/$LOG_NAME"
ln -sfn "$LOG_NAME" "$LOG_DIR/latest_node${NODE_RANK}.log"

export PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
CMD=("$TORCHRUN" "${RDZV[@]}" --nproc-per-node="$NPROC" --max-restarts="$MAX_RESTARTS"
    --tee=3 "$ROOT/train_phase2.py" "${TRAIN_ARGS[@]}")
{
    echo "cluster_train.sh: node $NODE_RANK of $NNODES, $DEVICES, max restarts $MAX_RESTARTS, $(date -Is)"
    echo "cluster_train.sh: log $LOG"
    echo "cluster_train.sh: ${CMD[*]}"
} | tee -a "$LOG"

# torchrun in the background with its output through tee into the log; a SIGTERM or
# SIGINT to this script goes on to torchrun, which stops its workers (they write an
# emergency checkpoint) before exiting.
FIFO_DIR="$(mktemp -d)"
trap 'rm -rf "$FIFO_DIR"' EXIT
mkfifo "$FIFO_DIR/out"
tee -a "$LOG" <"$FIFO_DIR/out" &
TEE_PID=$!
"${CMD[@]}" >"$FIFO_DIR/out" 2>&1 &
CHILD=$!
trap 'kill -TERM "$CHILD" 2>/dev/null || true' TERM INT HUP
rc=0
wait "$CHILD" || rc=$?
while kill -0 "$CHILD" 2>/dev/null; do # a trapped signal interrupted wait: wait again
    rc=0
    wait "$CHILD" || rc=$?
done
wait "$TEE_PID" || true
echo "cluster_train.sh: node $NODE_RANK finished with exit code $rc, $(date -Is)" | tee -a "$LOG"
exit "$rc"
