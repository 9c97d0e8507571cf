"""pytest-benchmark suite over the cases of fastmnist.bench (one definition for CLI and pytest).

Run: ``pytest benchmarks/ --benchmark-json=out.json``; compare runs with ``--benchmark-compare``.
Set FASTMNIST_BENCH_QUICK=1 for the short variant (a 2000-image epoch, few rounds).
Each test is grouped by case, so the table lines the backends up side by side.
"""
