#!/usr/bin/env bash
# The speed tables on CUDA, for a session lent a GPU through the `device` tool:
#     run(command="bash benchmarks/gpu.sh", timeout_s=420)
# Rows: the VGG-16 paths (fp32 eager, channels-last, bf16 autocast, the default `vision_precision="auto"`, which is
# bf16 on GPUs that have it; int8 is an x86-CPU path and is reported as skipped), each image backbone (VGG-16,
# ResNet-152, CLIP ViT-B/32: images/s in fp32 and on the default path, GFLOP per image, deviation from fp32),
# training with bf16 autocast, the CRF, inference, the text encoders and peak memory.
# It uses the machine's own PyTorch, transformers and accelerate, finishes within about 5 minutes, and writes
# $OUT/speed_gpu.json when $OUT is set (the device tool returns that folder), else outputs/benchmarks/speed_gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
output="${OUT:-outputs/benchmarks}/speed_gpu.json"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH=. timeout 300 "$python" benchmarks/speed.py --device cuda --output "$output"
