"""Where a one-epoch fit of a compiled-step MLP spends its time outside the compiled calls: a zoo
model's fit on numba over the bench's training data (60000 images), with each given
``config.STEP_CHUNK_SAMPLES`` cap in turn (``adaptive``: the default cap, calls sized by their pace),
rounds after a warm-up fit; prints, per setting, the medians of the fit, of the time inside
``dense_train_steps_kernel``, of the rest, and the calls per fit.

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/fit_outside.py two-layer 4096,adaptive 10
"""
import sys
import time

import numpy as np

from fastmnist import config, zoo
from fastmnist.backends import numba_steps
from fastmnist.bench.cases import _training_data


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "two-layer"
    settings = (sys.argv[2] if len(sys.argv) > 2 else "4096,adaptive").split(",")
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    x, y = _training_data(60000, True)
    model = zoo.create(name, backend="numba")
    xd, yd = model.backend.asarray(x), model.backend.asarray(y.astype(np.int64))
    kernel, inside = numba_steps.dense_train_steps_kernel, [0.0, 0]

    def timed_kernel(*args):
        t0 = time.perf_counter()
        out = kernel(*args)
        inside[0] += time.perf_counter() - t0
        inside[1] += 1
        return out

    numba_steps.dense_train_steps_kernel = timed_kernel
    default_cap = config.STEP_CHUNK_SAMPLES
    runs = {s: [] for s in settings}
    for r in range(rounds + 1):  # round 0 warms up
        for setting in settings:
            config.STEP_CHUNK_SAMPLES = default_cap if setting == "adaptive" else int(setting)
            inside[:] = [0.0, 0]
            t0 = time.perf_counter()
            model.fit(xd, yd, **zoo.fit_args(name, epochs=1), verbose=0)
            total = time.perf_counter() - t0
            if r:
                runs[setting].append((total, inside[0], inside[1]))
            time.sleep(0.3)
    for setting, got in runs.items():
        a = np.array(got)
        print(f"{name} chunk cap {setting}: fit {np.median(a[:, 0]) * 1e3:.1f} ms, in the calls "
              f"{np.median(a[:, 1]) * 1e3:.1f} ms, outside {np.median(a[:, 0] - a[:, 1]) * 1e3:.2f} ms, "
              f"{np.median(a[:, 2]):.0f} calls; fits {np.round(a[:, 0] * 1e3, 1).tolist()}")


if __name__ == "__main__":
    main()
