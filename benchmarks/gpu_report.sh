#!/usr/bin/env bash
# One prepared GPU run (< 8 minutes on one CUDA GPU, ~2-4 min expected): the guide's Phase 2
# design vs Purr-Sight's on a Qwen2.5-0.5B-shaped model, tokens/s, step time, MFU, peak memory.
#   PYTHONPATH=src bash benchmarks/gpu_report.sh           # JSON to $OUT (or ./outputs)
#   PYTHONPATH=src bash benchmarks/gpu_report.sh --smoke   # tiny model, CPU, seconds
# Needs only torch, transformers, peft, numpy (no pydantic / mlflow / lightning).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="${PYTHONPATH:-$here/../src}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || python=python
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec timeout 470 "$python" "$here/gpu_report.py" "$@"
