"""Interrupted training loses nothing: real training processes are killed (SIGTERM, SIGINT, SIGKILL)
at random moments and resumed; the final weights equal an uninterrupted run's, bit for bit."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_data import write_mnist

ARGS = ["--model", "dropout-cnn", "--epochs", "3", "--batch-size", "50", "--limit-test", "50", "--quiet",
        "--seed", "3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=1000, n_test=50, seed=1)
    return root


def train(data, *extra, backend="numpy"):
    cmd = [sys.executable, "-m", "fastmnist", "train", "--backend", backend, "--data", str(data), *ARGS, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def weights(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k.startswith(("param/", "opt/"))}


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run's final weights, and how long the run takes (to place the kills)."""
    out = tmp_path_factory.mktemp("ref") / "ref.npz"
    t0 = time.perf_counter()
    proc = train(data, "--out", str(out))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return weights(out), time.perf_counter() - t0


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("sig,seed", [(signal.SIGTERM, 1), (signal.SIGINT, 2), (signal.SIGKILL, 3),
                                      (signal.SIGKILL, 5)])
def test_kill_and_resume_bit_for_bit(data, reference, tmp_path, sig, seed):
    """The kill lands at a random moment between 30% and 90% of an uninterrupted run's wall time
    (process start-up and data loading included, so some kills land mid-epoch, some later)."""
    ref_weights, ref_seconds = reference
    ckpt = tmp_path / "ckpt"
    out = tmp_path / "final.npz"
    proc = train(data, "--checkpoint-dir", str(ckpt))
    time.sleep(ref_seconds * np.random.default_rng(seed).uniform(0.3, 0.9))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=600)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal; nothing to resume")
    if proc.returncode == 128 + sig:  # caught: a checkpoint at the step boundary, one line, no traceback
        assert "checkpoint saved" in err and "--resume" in err and "Traceback" not in err
    else:  # SIGKILL, or a signal that came while Python was still starting (before the handlers)
        assert proc.returncode in (-sig, 130), (proc.returncode, err)
    resume = ["--checkpoint-dir", str(ckpt), "--out", str(out)]
    if (ckpt / "checkpoint.npz").exists():
        resume.append("--resume")  # else: killed before anything was saved, start over
    proc = train(data, *resume)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert_same(weights(out), ref_weights)
    assert not list(ckpt.glob(".*tmp"))  # no temporary file left behind


def test_sigterm_mid_run_saves_and_exits(data, reference, tmp_path):
    """Deterministic: once the first epoch's checkpoint exists the handlers are surely installed;
    SIGTERM then ends the run with status 143 and a checkpoint it resumes from, bit for bit."""
    ckpt = tmp_path / "ckpt"
    proc = train(data, "--checkpoint-dir", str(ckpt))
    deadline = time.time() + 120
    while not (ckpt / "checkpoint.npz").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().count("\n") <= 1 and "checkpoint saved to" in err and "Traceback" not in err
    proc = train(data, "--checkpoint-dir", str(ckpt), "--resume", "--out", str(tmp_path / "o.npz"))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert_same(weights(tmp_path / "o.npz"), reference[0])


def test_resume_without_checkpoint_is_a_clear_error(data, tmp_path):
    proc = train(data, "--checkpoint-dir", str(tmp_path / "none"), "--resume")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "no checkpoint in" in err


def test_two_processes_checkpoint_side_by_side(data, tmp_path):
    runs = [train(data, "--checkpoint-dir", str(tmp_path / f"c{i}"), "--out", str(tmp_path / f"o{i}.npz"))
            for i in range(2)]
    for proc in runs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert_same(weights(tmp_path / "o0.npz"), weights(tmp_path / "o1.npz"))
    for i in range(2):
        assert (tmp_path / f"c{i}" / "checkpoint.npz").is_file()


def test_checkpoint_loads_without_pickle(data, tmp_path):
    proc = train(data, "--checkpoint-dir", str(tmp_path / "c"), "--epochs", "1")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    with np.load(tmp_path / "c" / "checkpoint.npz", allow_pickle=False) as f:
        assert {"architecture", "optimizer", "extra/run", "extra/trainer"} <= set(f.files)
    assert os.path.getsize(tmp_path / "c" / "checkpoint.npz") > 1000


def test_a_save_removes_temp_files_of_killed_runs_only(tmp_path):
    """SIGKILL during a save leaves `.checkpoint.npz.PID.tmp`; the next save removes it, but never
    the temporary file of a process that is still alive."""
    import os
    import subprocess
    import sys

    from fastmnist import zoo
    from fastmnist.checkpoint import Checkpointer
    from fastmnist.optim import make_optimizer
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ckpt = Checkpointer(tmp_path, {"model": "two-layer"})
    tmp_path.mkdir(exist_ok=True)
    stale = tmp_path / f".checkpoint.npz.{int(dead.stdout)}.tmp"
    alive = tmp_path / f".checkpoint.npz.{os.getppid()}.tmp"
    stale.write_bytes(b"half a file")
    alive.write_bytes(b"another run's file in progress")
    model = zoo.create("two-layer", backend="numpy")
    ckpt.save(model, make_optimizer("sgd", 0.1).attach(model), {"epoch": 0, "step": 0})
    assert not stale.exists() and alive.exists() and ckpt.exists()
