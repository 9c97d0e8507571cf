"""A split two-layer step's input layer, one part's share (half of MNIST's 784 features, a batch of
100 random training rows), float32, one core: its non-zeros listed by feature the way the compiled
steps do it now (numba_steps._feature_lists: eight rows at a time through 8 x 8 vector transposes,
then each feature's non-zeros) against the way they did before (each row's non-zeros, then a
counting sort by feature, numba_steps._by_feature), and the part's product from those lists
(_sparse_partial, a weight row at a time into the samples' rows). Both give the same lists; the
script checks that, then prints medians of 300 calls on one batch (in cache) and on fresh rows.

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/feature_lists.py
"""
import time

import numpy as np
from numba import njit

from fastmnist.backends import numba_steps as S
from fastmnist.bench import environment
from fastmnist.data import load_mnist


@njit(cache=True, nogil=True, error_model="numpy")
def rows_then_sort(xs, perm, lo, f0, f1, idx, val, cnt, start, fill, csc_r, csc_v, runs):
    """The replaced way: each row's non-zeros in the part's features, then regrouped by feature."""
    for r in range(cnt.shape[0]):
        cnt[r] = S._nonzeros_row(xs[perm[lo + r]], f0, f1 - f0, idx[r], val[r])
    S._by_feature(idx, val, cnt, start, fill[:f1 - f0], csc_r, csc_v, runs, 0, f1 - f0)
    return start[f1 - f0]


def median_us(fn, batches):
    times = []
    for lo in batches:
        t0 = time.perf_counter()
        fn(lo)
        times.append(time.perf_counter() - t0)
    return np.median(times) * 1e6


def main():
    (x, _), _ = load_mnist(flatten=True)
    x = np.ascontiguousarray(x, np.float32)
    nb, f0, f1, m = 100, 392, 784, 50
    nf = f1 - f0
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    idx, val = np.empty((nb, nf + S._ROW_SLACK), np.int32), np.empty((nb, nf + S._ROW_SLACK), np.float32)
    cnt, runs = np.empty(nb, np.int64), np.empty((nb, 2), np.int64)
    start, fill = np.empty(nf + 1, np.int64), np.empty(nf, np.int64)
    csc_r, csc_v = np.empty(nf * nb + S._ROW_SLACK, np.int32), np.empty(nf * nb + S._ROW_SLACK, np.float32)
    start2, csc_r2, csc_v2 = start.copy(), csc_r.copy(), csc_v.copy()
    block, row_starts = np.empty(nf * ((nb + 7) // 8 * 8), np.float32), np.empty(8, np.int64)
    w = rng.normal(0, 0.01, (784, m)).astype(np.float32)
    out = np.empty((nb, (m + S._ROW_SLACK - 1) // S._ROW_SLACK * S._ROW_SLACK), np.float32)

    def before(lo):
        return rows_then_sort(x, perm, lo, f0, f1, idx, val, cnt, start, fill, csc_r, csc_v, runs)

    def now(lo):
        return S._feature_lists(x, perm, lo, nb, f0, f1, block, row_starts, start2, csc_r2, csc_v2)

    for lo in (0, 700, 59900):
        count = before(lo)
        assert now(lo) == count and np.array_equal(start, start2), "the two ways list different non-zeros"
        assert np.array_equal(csc_r[:count], csc_r2[:count]) and np.array_equal(csc_v[:count], csc_v2[:count])
    env = environment()
    print(f"# {env['cpu_model']}, {env['cpu_vector_extensions']}; numba target {env['numba_target_cpu']}; "
          f"features {f0}..{f1 - 1}, {nb} rows, float32")
    same, fresh = [500] * 300, [(k * nb) % (len(x) - nb) for k in range(300)]
    for name, fn in (("rows' non-zeros, then sorted by feature", before), ("feature lists by transposes", now),
                     ("the part's product from the lists", lambda lo: S._sparse_partial(start2, csc_r2, csc_v2, w, f0,
                                                                                        f1, out))):
        fn(500)
        print(f"{name:42s} in cache {median_us(fn, same):6.1f} us, fresh rows {median_us(fn, fresh):6.1f} us")


if __name__ == "__main__":
    main()
