#!/usr/bin/env bash
# One call on the GPU machine (device tool): versions, the cupy tests, the sanitizers, the
# side-by-side epoch benchmark against CUDA PyTorch, fast-cnn over ten seeds, and the CLI checks
# (a GPU model read on NumPy, checkpoint + resume, out of memory, cold/warm kernel cache).
# Every step has its own time limit and none stops the others; a summary table comes last.
#   here:  mkdir -p .mnist && cp ../shared/data/mnist/*.gz .mnist/ && echo /.mnist/ >> .git/info/exclude
#   there: bash benchmarks/gpu_run.sh            (device tool: carry [".mnist"], timeout ~590 s)
# Writes $OUT/gpu-results.tgz (every log and JSON) and $OUT/gpu-summary.txt; commit them unpacked
# under benchmarks/results/gpu/.
set -uo pipefail
export PYTHONPATH="$PWD" FASTMNIST_DATA="$PWD/.mnist" NUMBA_CACHE_DIR=/tmp/numba-cache PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT"
W=/tmp/gpu-results; rm -rf "$W"; mkdir -p "$W"
STEPS="${GPU_STEPS:-info tests memcheck bench seeds cli racecheck suite}"
SUMMARY="$W/summary.txt"; : > "$SUMMARY"
T0=$(date +%s)

step() {  # step NAME SECONDS LOGFILE command...: run, record exit code and wall time, never stop
    local name=$1 limit=$2 log=$3; shift 3
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    local t=$(date +%s)
    timeout -k 5 "$limit" bash -c '"$@"' _ "$@" >> "$W/$log" 2>&1  # bash -c: the exported functions too
    local rc=$?
    printf '%-10s rc=%-3s %4ss  (limit %ss, at +%ss)  %s\n' "$name" "$rc" "$(( $(date +%s) - t ))" "$limit" \
        "$(( $(date +%s) - T0 ))" "$log" | tee -a "$SUMMARY"
}

info() {
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
    python3 -c "import sys, numpy, numba, cupy, torch; print(sys.version); print('numpy', numpy.__version__, 'numba', numba.__version__, 'cupy', cupy.__version__, 'cuda runtime', cupy.cuda.runtime.runtimeGetVersion(), 'driver', cupy.cuda.runtime.driverGetVersion(), 'torch', torch.__version__, torch.version.cuda)"
    lscpu | grep -E 'Model name|^CPU\(s\)'
    which compute-sanitizer nvcc
    python3 -m fastmnist --version
    python3 -m fastmnist info --json
}

cli_checks() {
    local cache=$W/cupy-kernel-cache; rm -rf "$cache"
    echo "== cold and warm kernel cache: first step of fast-cnn (warmup_seconds), CUPY_CACHE_DIR empty, then filled"
    for which in cold warm; do
        CUPY_CACHE_DIR=$cache python3 -m fastmnist train --model fast-cnn --backend cupy --epochs 1 \
            --limit-train 2560 --limit-test 1000 --json --quiet | tail -1 | sed "s/^/$which: /"
    done
    echo "== checkpoint after epoch 1, then --resume to epoch 2 (simple-cnn)"
    python3 -m fastmnist train --model simple-cnn --backend cupy --epochs 1 --checkpoint-dir "$W/ck" --json --quiet | tail -1
    python3 -m fastmnist train --model simple-cnn --backend cupy --epochs 2 --checkpoint-dir "$W/ck" --resume --json --quiet | tail -1
    echo "rc=$?"
    echo "== out of device memory: CUPY_GPU_MEMORY_LIMIT=400 MB, fast-cnn with batch 60000 (expect one clear message, no traceback)"
    CUPY_GPU_MEMORY_LIMIT=400000000 python3 -m fastmnist train --model fast-cnn --backend cupy --epochs 1 \
        --batch-size 60000 --limit-test 100 --quiet
    echo "rc=$?"
}

bench() {
    python3 -m fastmnist bench --epochs-only --backends cupy,torch,torch-cl --data "$FASTMNIST_DATA" \
        --models simple-cnn,dropout-cnn,fast-cnn,relu-mlp --json "$W/bench-epochs.json"
    python3 -m fastmnist bench --epochs-only --backends cupy,torch-compile --data "$FASTMNIST_DATA" \
        --models fast-cnn --json "$W/bench-epochs-compile.json"
    echo "== the same cupy epochs on kernels.cu's own gemm (config.CUPY_OWN_GEMM: capturable, issue 19)"
    FASTMNIST_CUPY_OWN_GEMM=1 python3 -m fastmnist bench --epochs-only --backends cupy --data "$FASTMNIST_DATA" \
        --models simple-cnn,fast-cnn,relu-mlp --json "$W/bench-epochs-own-gemm.json"
    echo "== fast-cnn's and dropout-cnn's epochs as CUDA graph replays (config.CUDA_GRAPHS, graph_steps.py: issue 19)"
    FASTMNIST_CUDA_GRAPHS=1 python3 -m fastmnist bench --epochs-only --backends cupy --data "$FASTMNIST_DATA" \
        --models fast-cnn,dropout-cnn --json "$W/bench-epochs-graphs.json"
}

export W
export -f info cli_checks bench
cupy_k="cupy and not cupy-sim"
step info      60  info.txt     info
step tests    150  tests.txt    python3 -m pytest tests -q -p no:cacheprovider -k "$cupy_k" -rfEs --tb=short -n 8
step memcheck 100  memcheck.txt compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest \
    tests/test_conformance.py -q -p no:cacheprovider -k "$cupy_k" --tb=short
step bench    170  bench.txt    bench
step seeds     80  seeds.txt    python3 benchmarks/gpu_checks.py --backend cupy --seeds 0-9 \
    --out "$W/fast-cnn-seeds.jsonl" --model-out "$W/fast-cnn-cupy.npz"
step cli       90  cli.txt      cli_checks
step racecheck 60  racecheck.txt compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m pytest \
    tests/test_conformance.py -q -p no:cacheprovider -k "$cupy_k and softmax" --tb=short
left=$(( ${GPU_BUDGET_S:-550} - ($(date +%s) - T0) ))  # the whole suite gets what is left of the call
[ "$left" -gt 30 ] && step suite "$left" suite.txt python3 -m pytest tests -q -p no:cacheprovider -rfE --tb=short -n 12 --dist loadfile
rm -rf "$W/ck" "$W/cupy-kernel-cache" "$W"/*.npz
for f in "$W"/*.txt; do echo "== $(basename "$f"): last lines"; tail -n 12 "$f"; done > "$OUT/gpu-tails.txt"
cp "$SUMMARY" "$OUT/gpu-summary.txt"
tar -C "$W" -czf "$OUT/gpu-results.tgz" .
