"""Backends side by side on the shared benchmark cases (kernels, training step, epoch).

Note: all backends here run in one pytest process, so their thread pools can interfere; the
``fastmnist bench`` command runs each backend in its own process and is the figure quoted in
docs/benchmarks.md.
"""
import os

import pytest

from fastmnist import bench

QUICK = os.environ.get("FASTMNIST_BENCH_QUICK") == "1"
CASES = bench.all_cases(quick=QUICK)
BACKENDS = bench.backend_list()


@pytest.mark.parametrize("backend", [pytest.param(n, marks=[] if ok else pytest.mark.skip(reason=why), id=n)
                                     for n, ok, why in BACKENDS])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(benchmark, case, backend):
    benchmark.group = case.name
    benchmark.extra_info.update({"flops": case.flops, "bytes": case.bytes, "group": case.group})
    target = bench.target(backend)
    with target.context():  # as fit() runs a backend (PyTorch: every core)
        made = case.make(target)
        if made is None:
            pytest.skip(f"{case.name} does not apply to {backend}")
        fn, sync = made

        def call():
            fn()
            sync()  # device work finishes inside the timed region
        rounds = 1 if case.group == "epoch" else case.repeat
        benchmark.pedantic(call, rounds=rounds, warmup_rounds=1 if case.group == "epoch" else 2, iterations=1)
