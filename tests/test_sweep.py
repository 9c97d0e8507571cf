"""``fastmnist sweep`` on real Dask processes, loopback only: a scheduler and two workers started as
their own processes, one SIGKILLed mid-sweep; an interrupted sweep resumed; the embedded
LocalCluster; and the message when Dask is missing."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import MNIST_DIR, REPO

distributed = pytest.importorskip("distributed", reason="Dask distributed not installed (the [distributed] extra)")

SMALL = ["--model", "relu-mlp", "--backend", "numpy", "--epochs", "1", "--limit-train", "4000", "--limit-test", "1000",
         "--quiet"]


def sweep_cmd(out, *extra):
    return [sys.executable, "-m", "fastmnist", "sweep", *SMALL, "--out", str(out), *extra]


def env():
    return dict(os.environ, FASTMNIST_DATA=str(MNIST_DIR), PYTHONPATH=str(REPO), NUMBA_NUM_THREADS="1")


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _scheduler_address(path):
    """The address in dask's scheduler file, or None while the file is missing or not yet whole."""
    try:
        return json.loads(path.read_text())["address"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture
def cluster(tmp_path):
    """`dask scheduler` and two `dask worker` processes (no nanny: a killed worker stays dead)."""
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)], env=env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        # dask creates the file before it writes it: wait until it parses (an empty one failed CI once)
        wait_for(lambda: _scheduler_address(sched_file) is not None, 60, "the scheduler file")
        address = _scheduler_address(sched_file)
        for i in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
                                           "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}"],
                                          env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address, procs[1:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


def test_a_worker_killed_mid_sweep_loses_no_run_and_duplicates_none(cluster, tmp_path):
    if not MNIST_DIR.exists():
        pytest.skip(f"MNIST not found at {MNIST_DIR}")
    address, workers = cluster
    out = tmp_path / "sweep.jsonl"
    seeds = "0-7"
    proc = subprocess.Popen(sweep_cmd(out, "--seeds", seeds, "--epochs", "3", "--scheduler", address), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: out.exists() and len(records(out)) >= 1, 240, "the first finished run")
        os.kill(workers[0].pid, signal.SIGKILL)  # mid-sweep: its run in flight is lost with it
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    recs = records(out)
    assert workers[0].poll() is not None  # it really died
    keys = Counter(r["key"] for r in recs)
    assert len(keys) == 8 and set(keys.values()) == {1}, keys
    assert sorted(r["config"]["seed"] for r in recs) == list(range(8))
    # relu-mlp, 3 epochs of 4000 images, on numpy: measured 0.869-0.885 over these seeds 0-7
    assert all(r["status"] == "ok" and r["test_accuracy"] > 0.6 for r in recs), recs
    assert "relu-mlp numpy" in stdout and "8   0" in stdout  # the summary table: 8 runs, 0 errors
    with distributed.Client(address, timeout="30s") as client:  # the scheduler saw a run lost in flight
        log = client.run_on_scheduler(lambda dask_scheduler: [(str(t[0]), t[1], t[2])
                                                              for t in dask_scheduler.transition_log])
    lost = [k for k, start, finish in log if k.startswith("fastmnist-run-") and start == "processing"
            and finish in ("released", "waiting", "no-worker")]
    assert lost, "the killed worker had no run in flight: the test proved nothing"


def test_an_interrupted_sweep_resumes_with_the_missing_runs_only(tmp_path):
    if not MNIST_DIR.exists():
        pytest.skip(f"MNIST not found at {MNIST_DIR}")
    out = tmp_path / "sweep.jsonl"
    cmd = sweep_cmd(out, "--seeds", "0-5", "--epochs", "2", "--workers", "1")
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: out.exists() and len(records(out)) >= 2, 240, "two finished runs")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = records(out)
    assert 2 <= len(first) < 6, f"{len(first)} runs done before the interrupt"
    again = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(first)} already in" in again.stderr and f"{6 - len(first)} to run" in again.stderr
    recs = records(out)
    assert recs[: len(first)] == first  # nothing rewritten
    assert sorted(r["config"]["seed"] for r in recs) == list(range(6))
    plot = tmp_path / "sweep.png"
    rerun = subprocess.run(cmd + ["--plot", str(plot), "--json"], env=env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "0 to run" in rerun.stderr
    assert json.loads(rerun.stdout.splitlines()[-1])["runs"] == 6
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_that_raises_is_recorded_and_the_sweep_goes_on(tmp_path):
    from fastmnist import sweep
    runs = sweep.grid("relu-mlp", "numpy", [0], [0.001], [0, 50], 1, limit_train=200, limit_test=100)
    recs = sweep.run_sweep(runs, tmp_path / "s.jsonl", workers=1, data_root=str(MNIST_DIR), progress=False,
                           log=lambda s: None)
    by_batch = {r["config"]["batch_size"]: r for r in recs}
    assert by_batch[0]["status"] == "error" and "batch_size must be a positive integer" in by_batch[0]["error"]
    assert by_batch[50]["status"] == "ok"


def test_torn_last_line_is_cut_and_grids_parse(tmp_path):
    from fastmnist import sweep
    path = tmp_path / "s.jsonl"
    good = {"key": "k", "config": {}, "status": "ok"}
    path.write_text(json.dumps(good) + "\n" + '{"key": "half')
    assert list(sweep.read_done(path)) == ["k"]
    assert path.read_text() == json.dumps(good) + "\n"
    assert sweep.parse_ints("0-3,7", "seeds") == [0, 1, 2, 3, 7]
    with pytest.raises(ValueError, match="--seeds: 'x' is not an integer"):
        sweep.parse_ints("x", "seeds")


def test_without_dask_the_command_names_the_extra(monkeypatch, capsys):
    from fastmnist import cli
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    status = cli.main(["sweep", "--seeds", "0", "--out", os.devnull])
    assert status == 2
    assert "pip install 'fastmnist[distributed]'" in capsys.readouterr().err
