"""The command line, run as a user runs it: a real subprocess on a small subset of MNIST."""
import json
import os
import subprocess
import sys

import pytest
from test_data import write_mnist


def run(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "fastmnist.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_train_json_and_evaluate(mnist_dir, tmp_path):
    out = tmp_path / "m.npz"
    proc = run("train", "--backend", "numpy", "--data", str(mnist_dir), "--limit-train", "2000", "--limit-test", "500",
               "--out", str(out), "--json", "--quiet")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("model", "backend", "epochs", "batch_size", "epoch_seconds", "test_accuracy", "test_loss",
                "samples_per_second"):
        assert key in summary
    assert summary["model"] == "simple-cnn" and summary["backend"] == "numpy" and summary["batch_size"] == 100
    # measured 0.854-0.884 over seeds and backends (benchmarks/results/test-margins.json)
    assert 0.7 < summary["test_accuracy"] <= 1.0
    proc = run("evaluate", str(out), "--data", str(mnist_dir), "--limit-test", "500", "--json")
    ev = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ev["test_accuracy"] == pytest.approx(summary["test_accuracy"])


def test_info_json():
    info = json.loads(run("info", "--json").stdout.strip().splitlines()[-1])
    assert info["backends"]["numpy"]["available"] is True
    assert set(info["backends"]) == {"numpy", "numba", "cupy", "cupy-sim"}
    assert all(b["reason"] for b in info["backends"].values())
    assert "simple-cnn" in info["models"]


@pytest.mark.parametrize("args,message", [
    (["train", "--backend", "tpu"], "unknown backend 'tpu'"),
    (["train", "--model", "resnet"], "unknown model 'resnet'"),
    (["evaluate", "nope.npz"], "no such model file"),
])
def test_user_errors_are_one_line(tmp_path, args, message):
    write_mnist(tmp_path)
    proc = run(*args, "--data", str(tmp_path), check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_missing_data_is_one_line(tmp_path):
    proc = run("train", "--backend", "numpy", "--data", str(tmp_path / "none"), check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_data_file_is_one_line(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    proc = run("train", "--backend", "numpy", "--data", str(tmp_path), check=False)
    assert proc.returncode == 2 and "t10k-images-idx3-ubyte.gz: corrupt or truncated gzip" in proc.stderr


def test_info_says_when_fastmnist_backend_is_invalid():
    import os
    env = dict(os.environ, FASTMNIST_BACKEND="tpu")
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "info", "--json"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0
    assert "FASTMNIST_BACKEND='tpu' cannot be used: unknown backend 'tpu'; valid names: numpy, numba, cupy" in proc.stderr
    assert "cannot be used" in json.loads(proc.stdout.strip().splitlines()[-1])["env_backend_problem"]


def test_train_reports_jit_compilation_apart_from_the_epochs():
    import os
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "train", "--backend", "numba", "--limit-train", "300",
                           "--limit-test", "100", "--json"], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode == 2 and "not available" in proc.stderr:
        pytest.skip("numba unavailable")
    assert proc.returncode == 0, proc.stderr
    assert "compiled kernels in" in proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["warmup_seconds"] > 0 and len(out["epoch_seconds"]) == 1


def test_version():
    import fastmnist
    proc = run("--version")
    assert proc.stdout.strip() == f"fastmnist {fastmnist.__version__}"


def test_out_of_device_memory_is_one_line_not_a_traceback(mnist_dir):
    # found on an H200 (benchmarks/results/gpu/cli.txt): CuPy's OutOfMemoryError became a clear
    # message, but the CLI printed it under a traceback; here the simulated GPU has 48 MiB
    env = dict(os.environ, FASTMNIST_CUDASIM_MEMORY=str(48 * 2**20))
    proc = run("train", "--backend", "cupy-sim", "--model", "simple-cnn", "--data", str(mnist_dir), "--limit-train",
               "800", "--limit-test", "100", "--batch-size", "768", "--epochs", "1", "--quiet", env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("fastmnist train: error: GPU out of memory in ")
    assert "--batch-size" in proc.stderr


def test_info_text_says_each_fact_once_and_aligns():
    out = run("info").stdout.splitlines()
    rows = [line for line in out if line.startswith("  ") and line.split()[0] in ("numpy", "numba", "cupy", "cupy-sim")
            and line.split()[1] in ("yes", "no")]
    assert [r.split()[0] for r in rows] == ["numpy", "numba", "cupy", "cupy-sim"]
    assert len({r.index(r.split()[1]) for r in rows}) == 1  # the yes/no column lines up
    text = "\n".join(out)
    import numba
    assert text.count(numba.__version__) == 1
    sim = text[text.index("cupy-sim"):]
    assert "simulated device memory" in sim and "memory_free" not in sim and "cuda_runtime" not in sim


def test_every_option_and_argument_has_help():
    from fastmnist.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    silent = [f"{name} {a.option_strings or a.dest}" for name, p in sub.choices.items() for a in p._actions
              if not a.help and a.dest != "help"]
    assert not silent, silent
