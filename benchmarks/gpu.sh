#!/usr/bin/env bash
# The speed table on CUDA (bf16 autocast paths included), for a session lent a GPU through the `device` tool:
#     run(command="bash benchmarks/gpu.sh", timeout_s=420)
# It uses the machine's own PyTorch, transformers and accelerate, finishes within about 5 minutes, and writes
# $OUT/speed_gpu.json when $OUT is set (the device tool returns that folder), else outputs/benchmarks/speed_gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
output="${OUT:-outputs/benchmarks}/speed_gpu.json"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH=. timeout 300 "$python" benchmarks/speed.py --device cuda --output "$output"
