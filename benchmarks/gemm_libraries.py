"""The dense layers' products inside a training step on each library config.NUMBA_GEMM can pick:
NumPy's BLAS and MKL (sequential), one product per thread, rounds alternating.

    python3 benchmarks/gemm_libraries.py [ROUNDS]

For each zoo CNN's first dense layer at its recipe's batch (fast-cnn 256 x 800 -> 256, simple-cnn
100 x 4320 -> 100, dropout-cnn 200 x 3136 -> 128), inside numba's training_context: the backward
pass (affine_backward: dx and dw, one product per core) and the forward product split over the
cores on BLAS (config.NUMBA_DENSE_TILES off), and the forward pass as fit() runs it (tiles where the columns
allow; BLAS from config.NUMBA_GEMM 'auto'). Medians of 30 calls after one untimed call, per
round; the CPU first. The backward pass runs its two products at once, one per core, each on one
thread of the library.
"""
import sys

import numpy as np

from fastmnist import config
from fastmnist.backends import numba_backend as NB
from fastmnist.backends import numba_blas as B
from fastmnist.bench.machine import cpu_model, cpu_vector_extensions, median_seconds

SHAPES = {"fast-cnn": (256, 800, 256), "simple-cnn": (100, 4320, 100), "dropout-cnn": (200, 3136, 128)}


def median_ms(call, repeats=30):
    return median_seconds(call, repeats) * 1e3  # after one untimed call


def main(rounds):
    libs = {}
    for choice in ("numpy", "mkl"):
        config.NUMBA_GEMM = choice
        libs[choice] = B.gemm_library().name
    print(f"# {cpu_model()}, {cpu_vector_extensions()}; " + "; ".join(f"{k}: {v}" for k, v in libs.items()))
    rng = np.random.default_rng(0)
    results = {}
    with NB.training_context():
        for _ in range(rounds):
            for model, (n, d, m) in SHAPES.items():
                x, w = rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((d, m)).astype(np.float32)
                dy, b = rng.standard_normal((n, m)).astype(np.float32), np.zeros(m, np.float32)
                for choice in libs:
                    config.NUMBA_GEMM = choice
                    results.setdefault((model, "backward", choice), []).append(
                        median_ms(lambda dy=dy, x=x, w=w: NB.affine_backward(dy, x, w)))
                    config.NUMBA_DENSE_TILES = False
                    results.setdefault((model, "forward, BLAS", choice), []).append(
                        median_ms(lambda x=x, w=w, b=b: NB.affine_forward(x, w, b)))
                    config.NUMBA_DENSE_TILES = True
                config.NUMBA_GEMM = "auto"
                results.setdefault((model, "forward, as fit", "auto"), []).append(
                    median_ms(lambda x=x, w=w, b=b: NB.affine_forward(x, w, b)))
    for (model, kind, choice), times in results.items():
        print(f"{model:12s} {kind:17s} {choice:6s} median {np.median(times):.3f} ms   rounds: "
              + " ".join(f"{t:.3f}" for t in times))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
