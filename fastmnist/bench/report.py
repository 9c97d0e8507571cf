"""The report of a run: each row's floor and ratios, the table, the "fastest" lines, the chart.

A report is the dict :func:`fastmnist.bench.run` returns (and ``--json`` writes): ``environment``,
``data``, ``ceilings``, ``backends`` and ``results``, one row per case and backend.
"""
from __future__ import annotations

from .targets import TORCH_SETUPS

# What the ratio columns are measured against, besides the fastest PyTorch setup.
RATIO_REFERENCES = ("numpy", "tutorial")


def add_floors(results: list[dict], ceilings: dict) -> None:
    """``floor_s``: the least time a row's FLOPs and bytes could take at its device's ceilings
    (None where that device's ceilings were not measured)."""
    for r in results:
        gpu = r["device"] == "gpu"
        peak = ceilings.get("gpu_matmul_gflops" if gpu else "cpu_matmul_gflops")
        bw = ceilings.get("gpu_copy_gbs" if gpu else "cpu_copy_gbs")
        r["floor_s"] = max(r["flops"] / (peak * 1e9), r["bytes"] / (bw * 1e9)) if peak and bw else None


def add_ratios(results: list[dict]) -> None:
    """``speedup_vs_X``: X's median time over this row's, for X in numpy, torch and tutorial; every
    ratio reads the same way: above 1, this row is that many times faster."""
    by_case: dict = {}
    for r in results:
        by_case.setdefault(r["case"], {})[r["backend"]] = r["median_s"]
    for r in results:
        ref = by_case[r["case"]]
        torch_times = {k: v for k, v in ref.items() if k in TORCH_SETUPS}
        best = min(torch_times, key=torch_times.get) if torch_times else None
        r["torch_best"] = best  # the fastest PyTorch setup of this case: the reference "vs torch" uses
        r["speedup_vs_torch"] = torch_times[best] / r["median_s"] if best else None
        for other in RATIO_REFERENCES:
            r[f"speedup_vs_{other}"] = ref[other] / r["median_s"] if other in ref else None


def fastest_lines(results: list[dict]) -> list[str]:
    """One line per case timed on two or more backends: the fastest, and by how much it beats the next."""
    by_case: dict = {}
    for r in results:
        by_case.setdefault(r["case"], []).append((r["median_s"], r["backend"]))
    out = []
    for case, rows in by_case.items():
        if len(rows) < 2:
            continue
        (best, name), (second, other) = sorted(rows)[:2]
        out.append(f"fastest {case}: {name}, {second / best:.2f}x faster than {other} (next fastest)")
    return out


def _fmt_time(s):
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.3f} s"


def _fmt(value, spec):
    return format(value, spec) if value is not None else "-"


def _table_row(r: dict) -> str:
    xfloor = r["median_s"] / r["floor_s"] if r.get("floor_s") else None
    return (f"{r['case']:48s} {r['backend']:13s} {_fmt_time(r['median_s']):>10s} "
            f"{100 * r['iqr_s'] / r['median_s']:6.1f}% {_fmt(r['speedup_vs_numpy'], '8.2f') + 'x':>9s} "
            f"{_fmt(r.get('speedup_vs_torch'), '8.2f') + 'x':>9s} "
            f"{_fmt(r.get('speedup_vs_tutorial'), '8.2f') + 'x':>9s} {r['gflops']:8.1f} {r['gbs']:7.1f} "
            f"{_fmt(xfloor, '7.1f') + 'x':>8s}")


def _machine_line(env: dict) -> str:
    return (f"machine: {env.get('cpu_model', '?')}, {env.get('cpu_count', '?')} cores, vector extensions "
            f"{' '.join(env.get('cpu_vector_extensions', [])) or '?'}; numba target {env.get('numba_target_cpu', '-')}, "
            f"PyTorch CPU capability {env.get('torch_cpu_capability', '-')}")


def _ceilings_line(c: dict) -> str:
    return (f"ceilings: CPU float32 matmul {c['cpu_matmul_gflops']:.0f} GFLOP/s, copy {c['cpu_copy_gbs']:.1f} GB/s"
            + (f"; GPU matmul {c['gpu_matmul_gflops']:.0f} GFLOP/s, copy {c['gpu_copy_gbs']:.0f} GB/s"
               if "gpu_matmul_gflops" in c else ""))


LEGEND = ("spread: interquartile range over the repeats; vs numpy / vs torch / vs tutor(ial): that one's time "
          "over this time, so above 1 this row is that many times faster (vs torch: the fastest of torch = eager, "
          "torch-cl = channels_last, torch-compile, for that case); x floor: time over max(FLOPs/matmul rate, "
          "bytes/copy bandwidth)")


def format_table(report: dict) -> str:
    """The comparison table: one row per case and backend, then the machine, the fastest backend
    of each case, the data, the ceilings and a legend."""
    head = (f"{'case':48s} {'backend':13s} {'median':>10s} {'spread':>7s} {'vs numpy':>9s} {'vs torch':>9s} "
            f"{'vs tutor':>9s} {'GFLOP/s':>8s} {'GB/s':>7s} {'x floor':>8s}")
    lines = [head, "-" * len(head), *(_table_row(r) for r in report["results"])]
    lines.append(_machine_line(report.get("environment", {})))
    lines.extend(fastest_lines(report["results"]))
    lines.append(f"data: {report.get('data', '?')}")
    lines.append(_ceilings_line(report["ceilings"]))
    lines.append(LEGEND)
    return "\n".join(lines)


def plot(report: dict, path) -> None:
    """Grouped bar chart (log scale) of median times: cases on x, one bar per backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in report["results"]))
    backends = list(dict.fromkeys(r["backend"] for r in report["results"]))
    times = {(r["case"], r["backend"]): r["median_s"] * 1e3 for r in report["results"]}
    width = 0.8 / max(1, len(backends))
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(cases)), 5))
    for i, b in enumerate(backends):
        xs = [j + i * width for j, c in enumerate(cases) if (c, b) in times]
        ys = [times[(c, b)] for c in cases if (c, b) in times]
        ax.bar(xs, ys, width, label=b)
    ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(cases))])
    ax.set_xticklabels(cases, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("median time (ms, log scale)")
    ax.set_title("fastmnist bench: " + (report["environment"].get("gpu") or report["environment"]["cpu_model"]))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
