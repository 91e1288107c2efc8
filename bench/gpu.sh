#!/usr/bin/env bash
# The GPU run, prepared to go on a CUDA machine (one H100/H200) in one call of under 8 minutes:
# a 50,000-image 32x32 colour poisoned set audited with `fast` twice and `paper` once
# (bench/gpu_run.py prints wall time, epoch-equivalents per second, peak GPU memory, recall and
# clean flagged, and whether the two `fast` runs agree). Goal: `fast` <= 60 s.
#
# The machine has python3 with torch and numpy and no network, and no Fashion-MNIST: copy its
# files beside the checkout first, into a folder git ignores, and carry it along:
#     mkdir -p .gpu-data && cp /usr/share/datasets/fashion-mnist/train-*.gz .gpu-data/
#     echo /.gpu-data/ >> .git/info/exclude
# then run `bash bench/gpu.sh` there with `.gpu-data` carried; figures land in $OUT. A smoke run
# on a CPU: PYTHON=.venv/bin/python GPU_DATA=/usr/share/datasets/fashion-mnist SAMPLES=1000 \
#     RUNS=tiny,tiny DEVICE=cpu bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-run}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"${PYTHON:-python3}" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
"${PYTHON:-python3}" bench/gpu_run.py --data "${GPU_DATA:-.gpu-data}" --samples "${SAMPLES:-50000}" \
    --runs "${RUNS:-fast,fast,paper}" --device "${DEVICE:-cuda}" --json "$OUT/gpu.json" \
    2>&1 | tee "$OUT/gpu.log"
