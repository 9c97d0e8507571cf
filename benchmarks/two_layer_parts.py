"""Where a two-layer step (784 -> 50 sigmoid -> 10, batch 100, plain SGD) goes on numba: the
compiled step's parts timed one by one on MNIST batches, one core.

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/two_layer_parts.py

Each part is the function the compiled step calls (fastmnist/backends/numba_steps.py), on a batch of
random training rows as in an epoch (``--sequential``: consecutive rows, which the hardware
prefetches), mean of 300 calls after a warm-up. The first parts are the one-thread step's (each
row's non-zeros, the product row by row, the regrouping by feature, the update); the "split" ones
are what each of the two threads does in a split step (numba_steps._steps_part), for half of the
input features: list them by transposes, the product from the lists, the update from the lists.
"""
import argparse
import time

import numpy as np
from numba import njit

from fastmnist.backends import numba_steps as S
from fastmnist.backends.contract import OPT_SGD
from fastmnist.backends.numba_kernels import sigmoid_value
from fastmnist.bench import environment
from fastmnist.data import load_mnist


@njit(error_model="numpy")
def _sigmoid(a, y):  # the step's sigmoid loop
    for r in range(a.shape[0]):
        for c in range(a.shape[1]):
            y[r, c] = sigmoid_value(a[r, c])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequential", action="store_true")
    args = ap.parse_args()
    (x, _), _ = load_mnist(flatten=True)
    x = np.ascontiguousarray(x)
    nb, d, m = 100, 784, 50
    rng = np.random.default_rng(0)
    perm = np.arange(len(x)) if args.sequential else rng.permutation(len(x))
    idx, val = np.empty((nb, d + S._ROW_SLACK), np.int32), np.empty((nb, d + S._ROW_SLACK), np.float32)
    cnt = np.empty(nb, np.int64)
    w, b = rng.normal(0, 0.01, (d, m)).astype(np.float32), np.zeros(m, np.float32)
    out, g = np.empty((nb, m), np.float32), rng.normal(0, 0.01, (nb, m)).astype(np.float32)
    start, fill = np.empty(d + 1, np.int64), np.empty(d, np.int64)
    csc_r, csc_v = np.empty(nb * d, np.int32), np.empty(nb * d, np.float32)
    runs = np.empty((nb, 2), np.int64)
    row, hyper, unused = np.empty(m, np.float32), np.zeros(6, np.float32), np.empty((1, 1), np.float32)
    lo = [0]
    # a split step's part 0: features 0 .. d/2 - 1 (numba_steps.dense_train_steps_kernel's buffers)
    f0, f1 = 0, d // 2
    own = d // 2 + 1
    block, row_starts = np.empty(own * ((nb + 7) // 8 * 8), np.float32), np.empty(8, np.int64)
    in_start = np.empty(own + 1, np.int64)
    in_r, in_v = np.empty(own * nb + S._ROW_SLACK, np.int32), np.empty(own * nb + S._ROW_SLACK, np.float32)
    partial = np.empty((nb, (m + S._ROW_SLACK - 1) // S._ROW_SLACK * S._ROW_SLACK), np.float32)

    def next_rows():
        lo[0] = (lo[0] + nb) % (len(x) - nb)
        return S._nonzeros_gathered(x, perm, lo[0], idx, val, cnt, False)

    def next_lists():
        lo[0] = (lo[0] + nb) % (len(x) - nb)
        return S._feature_lists(x, perm, lo[0], nb, f0, f1, block, row_starts, in_start, in_r, in_v)

    parts = {
        "finding the non-zeros": next_rows,
        "sparse forward product (784 -> 50)": lambda: S._sparse_forward(idx, val, cnt, w, b, out),
        "regrouping by feature": lambda: S._by_feature(idx, val, cnt, start, fill, csc_r, csc_v, runs, 0, d),
        "gradient rows into the weights (SGD)": lambda: S._grad_update_rows(
            0, d, OPT_SGD, start, csc_r, csc_v, g, w, unused, unused, np.float32(0), np.float32(0),
            np.float32(1), hyper, row),
        "sigmoid (5000 exp)": lambda: _sigmoid(out, g.copy()),
        "split: feature lists (half)": next_lists,
        "split: product from the lists (half)": lambda: S._sparse_partial(in_start, in_r, in_v, w, f0, f1, partial),
        "split: update from the lists (SGD, half)": lambda: S._grad_update_rows(
            f0, f1, OPT_SGD, in_start, in_r, in_v, g, w, unused, unused, np.float32(0), np.float32(0),
            np.float32(1), hyper, row, f0),
    }
    env = environment()
    print(f"# {env['cpu_model']}, {env['cpu_vector_extensions']}; numba target {env['numba_target_cpu']}; "
          f"rows: {'consecutive' if args.sequential else 'random'}")
    for name, fn in parts.items():
        fn()
        t0 = time.perf_counter()
        for _ in range(300):
            fn()
        print(f"{name:40s} {(time.perf_counter() - t0) / 300 * 1e6:7.1f} us")


if __name__ == "__main__":
    main()
