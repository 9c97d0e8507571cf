"""Models, optimizers, schedules, the trainer, model files and backend selection."""
import json

import numpy as np
import pytest

import fastmnist
from fastmnist import zoo
from fastmnist.backends import get_backend, resolve_name, use_backend
from fastmnist.errors import BackendUnavailable, ModelFileError, TrainingDiverged
from fastmnist.model import load, load_optimizer_state, load_with_state
from fastmnist.optim import Adam, OneCycle, StepDecay


def tiny_data(n=64, seed=0, flat=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.random((n, 1, 28, 28)).astype(np.float32) * 0.1
    x[np.arange(n), 0, y * 2 + 3, 5:20] = 1.0  # a learnable stroke per class
    return (x.reshape(n, -1) if flat else x), y


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_zoo_models_train_and_predict(be, name):
    r = zoo.recipe(name)
    x, y = tiny_data(40, flat=r.flat_input)
    model = zoo.create(name, backend=be, seed=1)
    hist = model.fit(x, y, **zoo.fit_args(name, batch_size=16, epochs=2), verbose=0)
    assert set(hist) >= {"loss", "accuracy", "seconds", "val_accuracy"} and len(hist["loss"]) == 2
    assert all(np.isfinite(hist["loss"]))
    p = model.predict(x[:5])
    assert p.shape == (5, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
    res = model.evaluate(x, y)
    assert 0 <= res["accuracy"] <= 1


def test_training_learns(be):
    x, y = tiny_data(256)
    model = zoo.create("simple-cnn", backend=be, seed=0)
    hist = model.fit(x, y, epochs=3, batch_size=32, optimizer=Adam(0.002), verbose=0,
                     validation_data=tiny_data(64, seed=1))
    # measured 1.0 over seeds and backends (benchmarks/results/test-margins.json)
    assert hist["val_accuracy"][-1] > 0.9, hist


def test_same_seed_same_weights_cpu_backends():
    from fastmnist.backends import available_backends
    cpu = [n for n in available_backends() if n != "cupy"]
    x, y = tiny_data(48)
    finals = []
    for name in cpu:
        m = zoo.create("dropout-cnn", backend=name, seed=7)
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
        finals.append([m.backend.to_numpy(p) for p in m.parameters()])
        m2 = zoo.create("dropout-cnn", backend=name, seed=7)
        m2.fit(x, y, epochs=1, batch_size=16, verbose=0)
        for a, b in zip(finals[-1], [m2.backend.to_numpy(p) for p in m2.parameters()]):
            np.testing.assert_array_equal(a, b)  # bit for bit, run to run
    init = [[get_backend(n).to_numpy(p) for p in zoo.create("simple-cnn", backend=n, seed=3).parameters()] for n in cpu]
    for other in init[1:]:
        for a, b in zip(init[0], other):
            np.testing.assert_array_equal(a, b)  # same seed, same initial weights on every backend


def test_save_load_resume(be, tmp_path):
    x, y = tiny_data(64)
    model = zoo.create("simple-cnn", backend=be, seed=0)
    opt = Adam(0.001)
    model.fit(x, y, epochs=1, batch_size=32, optimizer=opt, verbose=0)
    path = model.save(tmp_path / "m.npz", optimizer=opt, extra={"history": {"loss": [1.0]}})
    loaded, arrays = load_with_state(path, backend=be)
    for a, b in zip(model.parameters(), loaded.parameters()):
        np.testing.assert_array_equal(be.to_numpy(a), be.to_numpy(b))
    opt2 = Adam(0.001).attach(loaded)
    load_optimizer_state(opt2, arrays)
    assert opt2.t == opt.t == 2
    # one more step from the same state gives the same weights
    model.fit(x[:32], y[:32], epochs=1, batch_size=32, optimizer=opt, verbose=0, shuffle=False)
    loaded.fit(x[:32], y[:32], epochs=1, batch_size=32, optimizer=opt2, verbose=0, shuffle=False)
    for a, b in zip(model.parameters(), loaded.parameters()):
        np.testing.assert_array_equal(be.to_numpy(a), be.to_numpy(b))
    assert json.loads(str(arrays["extra/history"])) == {"loss": [1.0]}


def test_model_file_errors(tmp_path):
    model = zoo.create("two-layer", backend="numpy")
    path = model.save(tmp_path / "m.npz")
    arrays = dict(np.load(path, allow_pickle=False))
    bad = dict(arrays)
    bad["param/0/w"] = np.zeros((3, 3), np.float32)
    np.savez(tmp_path / "shape.npz", **bad)
    # a layer larger than the file's own arrays is refused before its weights are allocated
    with pytest.raises(ModelFileError, match=r"layer 0 \(weights \(784, 50\)\) needs 39,250 parameters; the "
                       r"file's param/0/ arrays hold 59"):
        load(tmp_path / "shape.npz")
    bad = dict(arrays, **{"param/0/w": arrays["param/0/w"].T.copy()})  # as many numbers, another shape
    np.savez(tmp_path / "transposed.npz", **bad)
    with pytest.raises(ModelFileError, match=r"param/0/w has float32 \(50, 784\); the architecture needs float32 "
                       r"\(784, 50\)"):
        load(tmp_path / "transposed.npz")
    bad = {k: v for k, v in arrays.items() if k != "param/2/b"}
    np.savez(tmp_path / "missing.npz", **bad)
    with pytest.raises(ModelFileError, match=r"layer 2 \(weights \(50, 10\)\) needs 510 parameters; the file's "
                       r"param/2/ arrays hold 500"):
        load(tmp_path / "missing.npz")
    bad = dict(arrays, architecture=np.array(str(arrays["architecture"]).replace("Dense", "Evil")))
    np.savez(tmp_path / "arch.npz", **bad)
    with pytest.raises(ModelFileError, match="unknown layer type 'Evil'"):
        load(tmp_path / "arch.npz")
    bad = dict(arrays, **{"param/0/b": np.array([object()] * 50)})
    np.savez(tmp_path / "obj.npz", **bad)
    with pytest.raises(ModelFileError, match="holds object data .* pickle, which is never used"):
        load(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="junk.npz"):
        load(tmp_path / "junk.npz")


def test_nonfinite_loss_stops_with_epoch_and_step():
    x, y = tiny_data(64, flat=True)
    model = zoo.create("relu-mlp", backend="numpy", seed=0)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step \d+ of 4"):
        with np.errstate(all="ignore"):
            model.fit(x * 1e30, y, epochs=1, batch_size=16, optimizer="sgd", lr=1e10, verbose=0)


def test_fit_argument_errors():
    x, y = tiny_data(8, flat=True)
    model = zoo.create("relu-mlp", backend="numpy")
    with pytest.raises(ValueError, match=r"per-sample shape .*load_mnist\(flatten=True\) or reshape to \(N, 784\)"):
        model.fit(x.reshape(8, 1, 28, 28), y, verbose=0)
    with pytest.raises(ValueError, match=r"labels span 0\.\.12"):
        model.fit(x, np.array([0] * 7 + [12]), verbose=0)
    with pytest.raises(TypeError, match="labels have dtype float64"):
        model.fit(x, y.astype(float), verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, y, batch_size=0, verbose=0)


def test_schedules():
    one = OneCycle()
    lrs = [one(0.01, s, 10, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01 / 25) and max(lrs) == pytest.approx(0.01, rel=1e-3)
    assert lrs[-1] == pytest.approx(0.01 / 25 / 1e4, rel=1e-3)
    assert int(np.argmax(lrs)) in (28, 29)
    step = StepDecay(every_epochs=2, gamma=0.5)
    assert [step(1.0, s, 10, 100) for s in (0, 19, 20, 45)] == [1.0, 1.0, 0.5, 0.25]


def test_backend_selection(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'tpu'; valid names: numpy, numba, cupy, cupy-sim, auto"):
        get_backend("tpu")
    monkeypatch.setenv("FASTMNIST_BACKEND", "numpy")
    assert get_backend().name == "numpy"
    with use_backend("numpy") as be:
        assert be.name == "numpy" and fastmnist.get_backend().name == "numpy"
    from fastmnist.backends import backend_status
    if not backend_status("cupy")[0]:
        with pytest.raises(BackendUnavailable, match="backend 'cupy' is not available here: .*pip install"):
            get_backend("cupy")
        assert resolve_name("auto") in ("numba", "numpy")


def test_auto_keeps_small_batch_mlps_off_the_gpu(monkeypatch):
    """Where auto would take the GPU, the zoo's MLPs trained in batches under
    config.AUTO_DEVICE_MIN_BATCH go to numba; CNNs and big batches keep the GPU; a backend named
    outright (argument or $FASTMNIST_BACKEND) is never replaced; info says which models differ."""
    from fastmnist import backends, cli, config
    from fastmnist.backends import backend_status, resolve_for_model
    if not backend_status("numba")[0]:
        pytest.skip("numba unavailable: auto has nothing to prefer")
    monkeypatch.setitem(backends._status_cache, "cupy", (True, "a GPU, pretended"))
    monkeypatch.delenv("FASTMNIST_BACKEND", raising=False)
    assert resolve_for_model(None, True, 1) == "numba"
    assert resolve_for_model("auto", True, config.AUTO_DEVICE_MIN_BATCH - 1) == "numba"
    assert resolve_for_model("auto", True, config.AUTO_DEVICE_MIN_BATCH) == "cupy"
    assert resolve_for_model("auto", False, 10) == "cupy"
    assert resolve_for_model("cupy", True, 1) == "cupy"
    monkeypatch.setenv("FASTMNIST_BACKEND", "cupy")
    assert resolve_for_model(None, True, 1) == "cupy"
    monkeypatch.delenv("FASTMNIST_BACKEND")
    monkeypatch.setattr(backends, "_current", "auto")  # what set_backend("auto") now stores
    assert resolve_for_model(None, True, 1) == "numba"
    assert zoo.create("small-mlp").backend.name == "numba"  # the recipe's batch of 10
    from fastmnist.checkpoint import _backend_for  # --resume continues on the backend the run began on
    assert _backend_for(None, {"model": "sigmoid-mlp", "batch_size": 1}) == "numba"
    assert _backend_for("auto", {"model": "sigmoid-mlp", "batch_size": 512}) == "cupy"
    assert _backend_for("numpy", {"model": "sigmoid-mlp", "batch_size": 1}) == "numpy"
    per_model = {n: resolve_for_model("auto", r.flat_input, r.batch_size) for n, r in zoo.ZOO.items()}
    assert per_model["sigmoid-mlp"] == per_model["small-mlp"] == "numba" and per_model["fast-cnn"] == "cupy"
    line = cli._auto_exceptions({"auto_backend": "cupy", "auto_per_model": per_model})
    assert line.startswith(" (numba for sigmoid-mlp, ") and "small-mlp" in line and "fast-cnn" not in line
    assert cli._auto_exceptions({"auto_backend": "numba", "auto_per_model": {"fast-cnn": "numba"}}) == ""


def test_summary_and_repr_say_what_the_model_is():
    model = zoo.create("simple-cnn", backend="numpy")
    text = model.summary()
    lines = text.splitlines()
    assert lines[0] == "simple-cnn: input (1, 28, 28), loss softmax_cross_entropy, backend numpy, float32"
    assert "Conv2D(filters=30, kernel_size=5, stride=1, pad=0)" in lines[2] and "(30, 24, 24)" in lines[2]
    assert lines[2].endswith("780") and lines[-1].endswith("433,890")  # 30*25+30; the total
    assert sum(int(line.split()[-1].replace(",", "")) for line in lines[2:-1]) == 433890
    assert repr(model) == ("<Sequential simple-cnn [Conv2D, ReLU, MaxPool2D, Flatten, Dense, ReLU, Dense] 433,890 "
                           "parameters, softmax_cross_entropy, numpy float32>")


def test_compile_time_is_reported_apart_from_the_epoch(monkeypatch, capsys):
    """JIT time lands in the first epoch's wall time; fit() measures it through the backend's
    compile_seconds() (numba: its compile events; cupy: NVRTC) and says so in the epoch line."""
    be = fastmnist.get_backend("numpy")
    clock = iter([0.0, 2.5, 2.5, 2.5])
    monkeypatch.setattr(be, "compile_seconds", lambda: next(clock), raising=False)
    x, y = tiny_data(64, flat=True)
    model = zoo.create("relu-mlp", backend=be, seed=0)
    h = model.fit(x, y, epochs=2, batch_size=32, verbose=2)
    assert h["compile_seconds"] == [2.5, 0.0]
    err = capsys.readouterr().err
    assert "(2.5 s of it compiling kernels)" in err.splitlines()[0] and "compiling" not in err.splitlines()[1]
