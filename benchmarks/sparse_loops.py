"""The compiled MLP steps' sparse loops (fastmnist/backends/numba_steps.py) against the loops they
replaced, on MNIST batches, one core, float32: the forward product of a batch's non-zero inputs
(sparse_rows, a register block of output columns, against Numba's auto-vectorised loop over four
weight rows at a time) and the regrouping of the non-zeros by feature (a counting sort against a
slot map in first-seen order). Medians of 300 calls after a warm-up.

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/sparse_loops.py

The replaced loops are kept here on purpose, as the baseline.
"""
import time

import numpy as np
from numba import njit

import fastmnist
from fastmnist.backends import numba_steps as S


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def forward_before(idx, val, cnt, w, b, out):
    """The replaced forward: out[r] = a[r] @ w + b, four weight rows per pass over the output row."""
    for r in range(out.shape[0]):
        o = out[r]
        for j in range(o.size):
            o[j] = b[j]
        n, k = cnt[r], 0
        while k + 4 <= n:
            v0, v1, v2, v3 = val[r, k], val[r, k + 1], val[r, k + 2], val[r, k + 3]
            w0, w1, w2, w3 = w[idx[r, k]], w[idx[r, k + 1]], w[idx[r, k + 2]], w[idx[r, k + 3]]
            for j in range(o.size):
                o[j] += v0 * w0[j] + v1 * w1[j] + v2 * w2[j] + v3 * w3[j]
            k += 4
        while k < n:
            v0, w0 = val[r, k], w[idx[r, k]]
            for j in range(o.size):
                o[j] += v0 * w0[j]
            k += 1


@njit(cache=True, nogil=True, error_model="numpy")
def by_feature_before(idx, val, cnt, slot_of, rows, start, fill, csc_r, csc_v):
    """The replaced regrouping: features in first-seen order through a slot map."""
    count = 0
    for r in range(cnt.shape[0]):
        for k in range(cnt[r]):
            i = idx[r, k]
            if slot_of[i] == 0:
                rows[count] = i
                fill[count] = 0
                count += 1
                slot_of[i] = count
            fill[slot_of[i] - 1] += 1
    start[0] = 0
    for q in range(count):
        start[q + 1] = start[q] + fill[q]
        fill[q] = start[q]
    for r in range(cnt.shape[0]):
        for k in range(cnt[r]):
            q = slot_of[idx[r, k]] - 1
            csc_r[fill[q]] = r
            csc_v[fill[q]] = val[r, k]
            fill[q] += 1
    for q in range(count):
        slot_of[rows[q]] = 0
    return count


def median_us(fn, *args, reps=300):
    fn(*args)
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e6


def main():
    (x, _), _ = fastmnist.load_mnist(flatten=True)
    x = np.ascontiguousarray(x, np.float32)
    rng = np.random.default_rng(0)
    for batch, width, model in ((100, 50, "two-layer"), (200, 256, "relu-mlp")):
        d = x.shape[1]
        perm = rng.permutation(len(x)).astype(np.int64)
        # nonzeros stores whole vectors: a row needs _ROW_SLACK entries past its last (as numba_steps allocates)
        idx, val = np.empty((batch, d + S._ROW_SLACK), np.int32), np.empty((batch, d + S._ROW_SLACK), np.float32)
        cnt = np.empty(batch, np.int64)
        S._nonzeros_gathered(x, perm, 0, idx, val, cnt, False)
        w, b = rng.standard_normal((d, width)).astype(np.float32), np.zeros(width, np.float32)
        out, ref = np.empty((batch, width), np.float32), np.empty((batch, width), np.float32)
        S._sparse_forward(idx, val, cnt, w, b, out)
        forward_before(idx, val, cnt, w, b, ref)
        assert np.allclose(out, ref, rtol=1e-4, atol=1e-4)
        now, before = median_us(S._sparse_forward, idx, val, cnt, w, b, out), median_us(forward_before, idx, val, cnt, w, b, ref)
        print(f"{model} {d}x{width}, batch {batch} ({cnt.sum()} non-zeros): forward {now:.1f} us (sparse_rows) "
              f"against {before:.1f} us (the loop it replaced), {before / now:.2f}x")
        start, fill, rows = np.empty(d + 1, np.int64), np.empty(d, np.int64), np.empty(d, np.int64)
        slot_of = np.zeros(d, np.int64)
        csc_r, csc_v = np.empty(batch * d, np.int32), np.empty(batch * d, np.float32)
        runs = np.empty((batch, 2), np.int64)
        now = median_us(S._by_feature, idx, val, cnt, start, fill, csc_r, csc_v, runs)
        before = median_us(by_feature_before, idx, val, cnt, slot_of, rows, start, fill, csc_r, csc_v)
        print(f"{model} batch {batch}: regrouping by feature {now:.1f} us (counting sort) against {before:.1f} us "
              f"(slot map), {before / now:.2f}x")


if __name__ == "__main__":
    main()
