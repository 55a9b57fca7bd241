#!/usr/bin/env bash
# One prepared run on a GPU machine, about 5 minutes on one H100 / H200, installing nothing:
#   1. the CUDA tests (tests/test_cuda.py: float32 parity with TF32 off, bf16 close to float32, a step of
#      every command on the device, MAE masking, resume, DDP over NCCL, FSDP bf16 over NCCL);
#   2. benchmarks/gpu_bench.py: zoo vs timm inference (eager and compiled), the MAE-B step vs the reference
#      structure, the ViT-B fine-tuning step and its share of the GPU's bf16 peak.
# Writes $OUT (default gpu-check/): env.json, cuda-tests.txt, gpu.json and gpu.md (tables under the machine
# header, for docs/benchmarks.md). Run from the repository root with zoo and its dev extras installed:
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}
mkdir -p "$out"
python -m zoo env --json > "$out/env.json"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name())"
python -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/cuda-tests.txt"
tests=${PIPESTATUS[0]}
python benchmarks/gpu_bench.py --json "$out/gpu.json" --markdown "$out/gpu.md"
bench=$?
echo "cuda tests exit $tests, benchmark exit $bench; results in $out/"
exit $(( tests || bench ))
