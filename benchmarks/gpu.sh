#!/usr/bin/env bash
# The speed tables on CUDA, for a session lent a GPU through the `device` tool:
#     run(command="bash benchmarks/gpu.sh", timeout_s=600)
# 1. benchmarks/speed.py on the GPU. Rows: the VGG-16 paths (fp32 eager, channels-last, bf16 autocast, the default
#    `vision_precision="auto"`, which is bf16 on GPUs that have it; int8 is an x86-CPU path and is reported as
#    skipped), each image backbone (VGG-16, ResNet-152, CLIP ViT-B/32: images/s in fp32 and on the default path,
#    GFLOP per image, deviation from fp32), training with bf16 autocast, the CRF, inference, the text encoders and
#    peak memory.
# 2. benchmarks/predict_scale.py on the GPU: acn-predict's tweets/s with an image on every row, fp32 and default
#    (bf16) backbone, image decoding in 0 and 4 worker processes (without "before": a copy of the tree has no git
#    history).
# 3. The demo (examples/run_demo.py: features on the CPU as always, training on the GPU with bf16 mixed precision):
#    its seconds and F1 figures, in demo_gpu_results.json.
# It uses the machine's own PyTorch, transformers and accelerate (the training stack, datasets and seqeval, must be
# importable too). On an H200 the three parts took about 1, 1 and 2 minutes (each is cut at 300, 120 and 180 s); it
# writes speed_gpu.json, predict_scale_gpu.json and demo_gpu_results.json into $OUT
# when it is set (the device tool returns that folder), else into outputs/benchmarks/.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
folder="${OUT:-outputs/benchmarks}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 300 "$python" benchmarks/speed.py --device cuda --output "$folder/speed_gpu.json" || status=$?
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 120 "$python" benchmarks/predict_scale.py --device cuda --no_before --image_rows 512 \
    --memory_rows 0 --workers 0 4 --output "$folder/predict_scale_gpu.json" || status=$?
demo=$(mktemp -d)
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 180 "$python" examples/run_demo.py --output_dir "$demo/demo" \
    --mixed_precision bf16 && cp "$demo/demo/demo_results.json" "$folder/demo_gpu_results.json" || status=$?
rm -rf "$demo"
exit "$status"
