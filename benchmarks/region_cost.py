"""What a Numba parallel region costs after a pause, as the numba backend's OpenMP threads wait.

    python3 benchmarks/region_cost.py                              # fastmnist's settings
    FASTMNIST_GOMP_SPINCOUNT=0 python3 benchmarks/region_cost.py   # sleep at once (PASSIVE alone)

After a pause of 0 to 10 ms on the calling thread (a step's Python between two kernels, or more),
the median time of: an empty region over the threads; a region whose every thread runs 200k
dependent multiply-adds; the same loop on the calling thread alone. The region's time over the
loop's is what waking the threads (or their absence) costs. Then the CPU time one idle thread
burns spinning before it sleeps (GOMP_SPINCOUNT's length on this machine).
"""
import os
import time

import numpy as np
from numba import njit, prange, threading_layer

from fastmnist.backends import numba_backend  # noqa: F401  (sets OMP_WAIT_POLICY and GOMP_SPINCOUNT first)

LOOP = 200_000


@njit(parallel=True)
def empty_region(a):
    for i in prange(a.size):
        a[i] += 1.0


@njit
def _chain(x, reps):
    s = 0.0
    for _ in range(reps):
        s = s * 0.999999 + x
    return s


@njit(parallel=True)
def loop_region(a, reps):
    for i in prange(a.size):
        a[i] = _chain(a[i], reps)


@njit
def loop_alone(a, reps):
    a[0] = _chain(a[0], reps)


def median_us(fn, pause, reps=200):
    times = []
    for _ in range(reps):
        if pause:
            time.sleep(pause)
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return np.median(times) * 1e6


def main():
    from numba import get_num_threads
    a = np.zeros(get_num_threads())
    empty_region(a), loop_region(a, 10), loop_alone(a, 10)
    print(f"threading layer {threading_layer()}, {get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}")
    for pause in (0, 1e-5, 1e-4, 3e-4, 1e-3, 1e-2):
        print(f"pause {pause * 1e3:5.2f} ms: empty region {median_us(lambda: empty_region(a), pause):7.1f} us   "
              f"{LOOP // 1000}k-step loop, every thread {median_us(lambda: loop_region(a, LOOP), pause):7.1f} us, "
              f"calling thread alone {median_us(lambda: loop_alone(a, LOOP), pause):7.1f} us")
    empty_region(a)
    cpu = time.process_time()
    time.sleep(0.5)
    print(f"CPU time the idle threads spent in the 0.5 s after a region: {(time.process_time() - cpu) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
