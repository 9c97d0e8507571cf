"""What ``fastmnist sweep`` prints and draws: a table per configuration over seeds, a plot of
accuracy against time, and ``--bench``'s one table of every worker machine side by side."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _config_label(cfg: dict) -> str:
    return f"{cfg['model']} {cfg['backend']} lr={cfg['lr']:g} b={cfg['batch_size']} e={cfg['epochs']}"


def summarize(records: list[dict]) -> list[dict]:
    """One row per configuration (every setting but the seed): mean and std over its seeds."""
    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(_config_label(rec["config"]), []).append(rec)
    rows = []
    for label, recs in groups.items():
        ok = [r for r in recs if r.get("status") == "ok"]
        acc = [r["test_accuracy"] for r in ok]
        sec = [r["mean_epoch_seconds"] for r in ok]
        rows.append({"config": label, "runs": len(recs), "errors": len(recs) - len(ok),
                     "accuracy_mean": statistics.fmean(acc) if acc else None,
                     "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0 if acc else None,
                     "epoch_s_mean": statistics.fmean(sec) if sec else None,
                     "epoch_s_std": statistics.stdev(sec) if len(sec) > 1 else 0.0 if sec else None,
                     "backends": sorted({r.get("backend") for r in ok if r.get("backend")})})
    return rows


def format_summary(rows: list[dict]) -> str:
    lines = [f"{'configuration':<44} {'runs':>4} {'err':>3} {'test accuracy (mean ± std)':>26} {'epoch s (mean ± std)':>22}"]
    for r in rows:
        acc = (f"{100 * r['accuracy_mean']:.2f}% ± {100 * r['accuracy_std']:.2f}" if r["accuracy_mean"] is not None
               else "-")
        sec = f"{r['epoch_s_mean']:.3f} ± {r['epoch_s_std']:.3f}" if r["epoch_s_mean"] is not None else "-"
        lines.append(f"{r['config']:<44} {r['runs']:>4} {r['errors']:>3} {acc:>26} {sec:>22}")
    return "\n".join(lines)


def plot(records: list[dict], path) -> Path:
    """Test accuracy against epoch time, one marker per run, one colour per configuration."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    groups: dict[str, list[dict]] = {}
    for rec in records:
        if rec.get("status") == "ok":
            groups.setdefault(_config_label(rec["config"]), []).append(rec)
    for label, recs in groups.items():
        ax.scatter([r["mean_epoch_seconds"] for r in recs], [100 * r["test_accuracy"] for r in recs], label=label,
                   alpha=0.75)
    ax.set_xlabel("seconds per epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("fastmnist sweep: each point one run")
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# ---- --bench: fastmnist bench once per machine, merged ----

def bench_on_this_machine(args: list[str]) -> dict:
    """Runs ``fastmnist bench ARGS --json`` in a fresh process here (a worker task)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        proc = subprocess.run([sys.executable, "-m", "fastmnist", "bench", *args, "--json", str(out)],
                              capture_output=True, text=True, timeout=6 * 3600)
        if proc.returncode:
            raise RuntimeError(f"fastmnist bench failed on this machine: {proc.stderr[-2000:]}")
        return json.loads(out.read_text())


def bench_every_machine(client, args: list[str], log) -> dict[str, dict]:
    """One bench per host (the first worker of each), run where that worker runs."""
    hosts: dict[str, str] = {}
    for address, info in client.scheduler_info()["workers"].items():
        hosts.setdefault(info.get("host", address), address)
    log(f"fastmnist bench {' '.join(args)} on {len(hosts)} machine(s): {', '.join(hosts)}")
    futures = {host: client.submit(bench_on_this_machine, args, workers=[addr], allow_other_workers=False, pure=False)
               for host, addr in hosts.items()}
    return {host: f.result() for host, f in futures.items()}


def merge_bench(reports: dict[str, dict]) -> str:
    """A row per (case, backend), a column per machine: median milliseconds."""
    names = list(reports)
    labels = {}
    for host, rep in reports.items():
        env = rep.get("environment", {})
        labels[host] = f"{host} ({env.get('gpu') or env.get('cpu_model') or '?'})"
    rows: dict[tuple, dict] = {}
    for host, rep in reports.items():
        for r in rep.get("results", []):
            rows.setdefault((r["case"], r["backend"]), {})[host] = r["median_s"] * 1e3
    width = max([len(f"{c} [{b}]") for c, b in rows] + [20])
    out = ["machines: " + "; ".join(f"[{i}] {labels[h]}" for i, h in enumerate(names)),
           f"{'case [backend]':<{width}} " + " ".join(f"{'[' + str(i) + '] ms':>12}" for i in range(len(names)))]
    for (case, backend), times in rows.items():
        cells = " ".join(f"{times[h]:>12.3f}" if h in times else f"{'-':>12}" for h in names)
        out.append(f"{case + ' [' + backend + ']':<{width}} {cells}")
    return "\n".join(out)
