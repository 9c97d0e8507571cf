"""`fastmnist bench`: the report holds every requested case for every available backend."""
import json
import subprocess
import sys

import pytest

from fastmnist import bench

# The report's layout, which result files and `fastmnist sweep --bench` read: keys in this order.
REPORT_KEYS = ["environment", "data", "ceilings", "backends", "quick", "results"]
ROW_KEYS = ["case", "group", "model", "batch_size", "backend", "device", "median_s", "iqr_s", "times_s", "flops", "bytes",
            "gflops", "gbs", "floor_s", "torch_best", "speedup_vs_torch", "speedup_vs_numpy", "speedup_vs_tutorial"]


def test_bench_quick_report(tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = [sys.executable, "-m", "fastmnist.cli", "bench", "--quick", "--backends", "numpy,numba,torch,cupy",
            "--models", "simple-cnn", "--kernels", "conv2d_forward,adam_update", "--json", str(out)]
    try:
        import matplotlib  # noqa: F401
        args += ["--plot", str(png)]
    except ImportError:
        png = None
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert list(report) == REPORT_KEYS and all(list(r) == ROW_KEYS for r in report["results"])
    available = [b["name"] for b in report["backends"] if b["available"]]
    assert "numpy" in available
    assert all(b["reason"] for b in report["backends"])
    cases = {"conv2d_forward[simple-cnn,b100]", "adam_update[simple-cnn,b100]", "train_step[simple-cnn,b100]",
             "epoch[simple-cnn,b100,n2000]"}
    got = {(r["case"], r["backend"]) for r in report["results"]}
    assert got == {(c, b) for c in cases for b in available}
    for r in report["results"]:
        assert r["median_s"] > 0 and len(r["times_s"]) >= 1 and r["floor_s"] > 0
        assert r["speedup_vs_numpy"] is not None
    env = report["environment"]
    for key in ("cpu_model", "cpu_count", "numpy", "python"):
        assert key in env
    assert report["ceilings"]["cpu_matmul_gflops"] > 1 and report["ceilings"]["cpu_copy_gbs"] > 0.1
    assert "vs numpy" in proc.stdout and "train_step[simple-cnn,b100]" in proc.stdout
    for case in cases:  # one summary line per case: the fastest backend and its margin over the next
        times = sorted((r["median_s"], r["backend"]) for r in report["results"] if r["case"] == case)
        if len(times) >= 2:
            assert (f"fastest {case}: {times[0][1]}, {times[1][0] / times[0][0]:.2f}x faster than {times[1][1]} "
                    "(next fastest)") in proc.stdout
    if png is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_flop_counts():
    # simple-cnn: conv 1->30 5x5 on 28x28 (fwd + dW, no dx), dense 4320x100 and 100x10 (fwd, dW, dx)
    conv = 2 * 30 * 24 * 24 * 25
    expected = 2 * conv + 3 * 2 * 4320 * 100 + 3 * 2 * 100 * 10
    assert bench.model_flops_per_sample("simple-cnn") == expected
    assert abs(expected * 60000 / 1e9 - 260) < 5  # the 260 GFLOP per epoch


def test_bad_bench_arguments():
    proc = subprocess.run([sys.executable, "-m", "fastmnist.cli", "bench", "--kernels", "fft"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "unknown kernel" in proc.stderr
    for value, said in (("0", "must be >= 1, got 0"), ("2.5", "expected an integer, got '2.5'"),
                        ("1001", "must be <= 1000")):
        proc = subprocess.run([sys.executable, "-m", "fastmnist.cli", "bench", "--repeats", value], capture_output=True,
                              text=True)
        assert proc.returncode == 2 and f"--repeats: {said}" in proc.stderr


def test_repeats_set_how_often_each_case_is_timed(monkeypatch):
    """--repeats N: N timed calls a case, in the backends' own worker processes (the spec carries it)."""
    from fastmnist.bench import runner
    from fastmnist.errors import InvalidArgument

    monkeypatch.setattr(runner, "measure_ceilings", lambda quick, gpu: {"cpu_matmul_gflops": 1.0, "cpu_copy_gbs": 1.0})
    import numpy as np
    report = runner.run(["numpy"], models=["two-layer"], kernels=["affine_forward"], quick=True,
                        repeats=np.int64(4))  # a NumPy integer too: the spec the workers read is JSON
    assert {r["case"] for r in report["results"]} == {"affine_forward[two-layer,b100]", "train_step[two-layer,b100]",
                                                      "epoch[two-layer,b100,n2000]"}
    assert all(len(r["times_s"]) == 4 for r in report["results"])
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(InvalidArgument, match="repeats must be an integer >= 1"):
            runner.run(["numpy"], models=["two-layer"], kernels=[], epochs_only=True, quick=True, repeats=bad)


def test_the_tutorials_reference_code_really_trains(mnist_dir):
    """The seed tutorials' code that `bench` times as `tutorial` learns MNIST in one epoch, so the
    reference is a working network. Measured on 1000 test images over seeds 0-3 (chance before:
    <= 0.19): sigmoid-mlp on 10000 images 0.912-0.920, small-mlp on 10000 0.627-0.781 (standard
    normal init starts slowly), two-layer on 60000 0.762-0.782."""
    import pytest

    import fastmnist
    from fastmnist.tutorials import tutorial_epoch
    (x, y), (xt, yt) = fastmnist.load_mnist(mnist_dir, flatten=True)
    assert tutorial_epoch("simple-cnn", x, y) is None
    for name, n, floor in (("sigmoid-mlp", 10000, 0.85), ("small-mlp", 10000, 0.5), ("two-layer", 60000, 0.6)):
        epoch, net = tutorial_epoch(name, x[:n], y[:n])
        before = net.accuracy(xt[:1000], yt[:1000])
        epoch()
        after = net.accuracy(xt[:1000], yt[:1000])
        assert before < 0.25 and after > floor, (name, before, after)
    with pytest.raises(ValueError, match="unknown backend 'tutor'"):
        bench.backend_list(["tutor"])


def test_bench_names_its_data_and_times_the_tutorials_on_their_models(tmp_path, mnist_dir):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "fastmnist.cli", "bench", "--quick", "--epochs-only", "--backends",
                           "numpy,tutorial", "--models", "two-layer,simple-cnn", "--data", str(mnist_dir), "--json",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["data"].startswith("MNIST") and "data: MNIST" in proc.stdout
    rows = {(r["case"], r["backend"]): r for r in report["results"]}
    # the tutorial reference has the MLP's epoch only; every ratio reads "x faster"
    assert set(rows) == {("epoch[two-layer,b100,n2000]", "numpy"), ("epoch[two-layer,b100,n2000]", "tutorial"),
                         ("epoch[simple-cnn,b100,n2000]", "numpy")}
    numpy_row, tutorial_row = rows[("epoch[two-layer,b100,n2000]", "numpy")], rows[("epoch[two-layer,b100,n2000]", "tutorial")]
    assert numpy_row["speedup_vs_tutorial"] == tutorial_row["median_s"] / numpy_row["median_s"]
    assert tutorial_row["speedup_vs_tutorial"] == 1.0 and numpy_row["speedup_vs_torch"] is None


def test_mlp_cases_leave_out_the_kernels_an_mlp_has_not():
    """`bench --models relu-mlp` once failed on the convolution an MLP has not (KeyError 'conv')."""
    names = [c.name for c in bench.all_cases(models=("relu-mlp",))]
    assert names == ["affine_forward[relu-mlp,b200]", "affine_backward[relu-mlp,b200]", "relu_forward[relu-mlp,b200]",
                     "softmax_cross_entropy[relu-mlp,b200]", "adam_update[relu-mlp,b200]", "train_step[relu-mlp,b200]",
                     "epoch[relu-mlp,b200,n60000]"]
    assert "relu-mlp" in bench.DEFAULT_MODELS  # the default run, --quick included, has an MLP


def test_each_target_says_which_cases_apply_to_it():
    """PyTorch times kernels in its eager setup only and channels_last on image inputs only; the
    tutorials have epochs only, of the MLPs they teach (asked before any data or torch is loaded)."""
    kernel = bench.kernel_cases(("simple-cnn",), ("relu_forward",))[0]
    mlp_step, cnn_epoch = bench.step_case("relu-mlp", 8), bench.epoch_case("simple-cnn", 8, samples=16)
    assert bench.target("torch").supports(kernel) and not bench.target("torch-compile").supports(kernel)
    assert not bench.target("torch-cl").supports(mlp_step) and bench.target("torch-cl").supports(cnn_epoch)
    assert not bench.target("tutorial").supports(mlp_step) and bench.target("tutorial").supports(cnn_epoch)
    assert cnn_epoch.make("tutorial") is None  # no tutorial trains a CNN
    assert [t.name for t in bench.requested_targets(["numpy", "torch-cl"])] == ["numpy", "torch-cl"]
    assert bench.target("numpy").device() == "cpu" and not bench.target("numpy").is_reference
    assert all(bench.target(name).is_reference for name in bench.REFERENCES)


def test_a_backend_whose_worker_fails_is_left_out_with_its_reason(monkeypatch):
    """One backend's worker dying (torch.compile under ATEN_CPU_CAPABILITY=avx2 did) leaves the
    others' rows and the report; the failed backend is listed as unavailable, with why."""
    from fastmnist.bench import runner

    def fake_worker(t, spec, log):
        if t.name == "numpy":
            raise runner.WorkerFailed("its benchmark worker failed (exit 1): RuntimeError: index out of bounds")
        return [{"case": "epoch[simple-cnn,b100,n2000]", "backend": t.name, "median_s": 1.0, "flops": 1, "bytes": 1}]

    monkeypatch.setattr(runner, "_run_isolated", fake_worker)
    monkeypatch.setattr(runner, "measure_ceilings", lambda quick, gpu: {"cpu_matmul_gflops": 1.0, "cpu_copy_gbs": 1.0})
    monkeypatch.setattr(runner, "add_ratios", lambda results: None)
    monkeypatch.setattr(runner, "add_floors", lambda results, ceilings: None)
    logs = []
    report = runner.run(["numpy", "tutorial"], models=["simple-cnn"], kernels=[], epochs_only=True, quick=True,
                        log=logs.append)
    listed = {b["name"]: b for b in report["backends"]}
    assert listed["numpy"]["available"] is False and "index out of bounds" in listed["numpy"]["reason"]
    assert listed["tutorial"]["available"] is True
    assert [r["backend"] for r in report["results"]] == ["tutorial"]
    assert any(line.startswith("leaving out backend numpy:") for line in logs)


def test_a_failed_workers_reason_is_its_exception_line():
    from fastmnist.bench.runner import error_line
    traceback = ["Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
                 "RuntimeError: index 4294967295 is out of bounds for dimension 1 with size 576", ""]
    assert error_line(traceback) == "RuntimeError: index 4294967295 is out of bounds for dimension 1 with size 576"
    fatal = ["Fatal Python error: init_fs_encoding: failed to get the Python codec", "Python runtime state: core initialized",
             "ModuleNotFoundError: No module named 'encodings'", "", "Current thread 0x1 (most recent call first):",
             "  <no Python frame>"]
    assert error_line(fatal) == "ModuleNotFoundError: No module named 'encodings'"
    assert error_line(["Killed"]) == "Killed" and error_line([" ", ""]) == "no output"


def test_reference_workers_get_the_users_openmp_settings(monkeypatch):
    """fastmnist sets OMP_WAIT_POLICY and GOMP_SPINCOUNT for Numba's threads; a PyTorch worker gets
    the user's own values back (or none), a fastmnist worker keeps fastmnist's."""
    from fastmnist import config
    from fastmnist.bench import runner
    from fastmnist.bench.targets import target
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")
    monkeypatch.setattr(config, "USER_OMP_WAIT_POLICY", None)
    monkeypatch.setattr(config, "USER_GOMP_SPINCOUNT", "42")
    env = runner._worker_environment(target("torch"))
    assert "OMP_WAIT_POLICY" not in env and env["GOMP_SPINCOUNT"] == "42"
    env = runner._worker_environment(target("numba"))
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["GOMP_SPINCOUNT"] == "300000"


def test_interleaved_epochs_take_turns_and_survive_a_failed_worker(tmp_path, monkeypatch):
    """--interleave: every target's worker process at once, repeats turn about; a worker that dies
    at its start (here: a Python that cannot find its standard library) is left out with its reason."""
    import os

    from fastmnist.bench import lockstep, runner
    from fastmnist.errors import InvalidArgument

    def env_for(t):
        env = dict(os.environ)
        if t.name == "tutorial":
            env["PYTHONHOME"] = str(tmp_path / "nowhere")
        return env

    monkeypatch.setattr(runner, "_worker_environment", env_for)
    monkeypatch.setattr(runner, "measure_ceilings", lambda quick, gpu: {"cpu_matmul_gflops": 1.0, "cpu_copy_gbs": 1.0})
    calls = []
    real_ask = lockstep._Worker.ask
    monkeypatch.setattr(lockstep._Worker, "ask", lambda self, request: calls.append((self.target.name, request))
                        or real_ask(self, request))
    logs = []
    # two repeats a case (the workers read them from the spec): the second round starts with the other target
    report = runner.run(["numpy", "numba", "tutorial"], models=["two-layer"], kernels=[], epochs_only=True,
                        quick=True, log=logs.append, interleave=True, repeats=2)
    listed = {b["name"]: b for b in report["backends"]}
    # the reason is the worker's exception line, not the thread state Python prints after it
    assert listed["tutorial"]["available"] is False and "No module named 'encodings'" in listed["tutorial"]["reason"]
    assert [r["backend"] for r in report["results"]] == ["numpy", "numba"]
    assert all(r["median_s"] > 0 and len(r["times_s"]) == 2 for r in report["results"])
    timed = [name for name, request in calls if request == {"op": "time"}]
    built = [name for name, request in calls if request and request["op"] == "build"]
    assert built == ["numpy", "numba"] and timed == ["numpy", "numba", "numba", "numpy"]
    assert any(line.startswith("leaving out backend tutorial:") for line in logs)
    with pytest.raises(InvalidArgument, match="--epochs-only"):
        runner.run(["numpy"], models=["two-layer"], kernels=[], quick=True, interleave=True)
    monkeypatch.setattr(runner, "_worker_environment", lambda t: dict(os.environ))
    report = runner.run(["tutorial"], models=["simple-cnn"], kernels=[], epochs_only=True, quick=True,
                        log=logs.append, interleave=True)  # no tutorial trains a CNN: no rows, no error
    assert report["results"] == []
