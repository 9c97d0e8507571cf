#!/usr/bin/env bash
# One call on the GPU machine (device tool): conformance suite on cupy, then the side-by-side
# benchmark against CUDA PyTorch. Expects MNIST copied into ./.mnist (listed in .git/info/exclude
# and named in the call's carry), writes everything under $OUT.
#   here:  mkdir -p .mnist && cp ../shared/data/mnist/*.gz .mnist/ && echo /.mnist/ >> .git/info/exclude
#   there: bash benchmarks/gpu_run.sh
set -uo pipefail
export PYTHONPATH=. FASTMNIST_DATA="$PWD/.mnist" NUMBA_CACHE_DIR=/tmp/numba-cache PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/results}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu-info.txt" 2>&1
python3 -c "import cupy, torch; print('cupy', cupy.__version__, 'cuda', cupy.cuda.runtime.runtimeGetVersion(), 'torch', torch.__version__)" >> "$OUT/gpu-info.txt" 2>&1
python3 -m fastmnist info >> "$OUT/gpu-info.txt" 2>&1
python3 -m pytest tests -q -x -k "cupy or cuda" 2>&1 | tee "$OUT/gpu-tests.txt" | tail -20
python3 -m fastmnist bench --backends cupy,torch --models simple-cnn,dropout-cnn,fast-cnn \
    --json "$OUT/gpu-bench.json" 2>&1 | tee "$OUT/gpu-bench.txt" | tail -40
FASTMNIST_BACKEND=cupy python3 -m fastmnist train --epochs 1 --json 2>&1 | tail -2 | tee "$OUT/gpu-train.txt"
