"""Compiled training steps (fastmnist.steps, ``dense_train_steps``): the same weights as the
per-layer path, whatever the chunk size, across interruptions, on every backend that has them."""
import numpy as np
import pytest

from fastmnist import config, zoo
from fastmnist.backends import available_backends, get_backend
from fastmnist.errors import TrainingDiverged
from fastmnist.layers import Dense, Dropout, ReLU, Sigmoid
from fastmnist.model import Sequential
from fastmnist.optim import make_optimizer
from fastmnist.steps import program_for
from fastmnist.trainer import TrainingInterrupted

STEP_BACKENDS = [n for n in available_backends() if get_backend(n).dense_train_steps is not None]
MLPS = ["sigmoid-mlp", "two-layer", "small-mlp", "relu-mlp"]


@pytest.fixture(autouse=True)
def chunks_by_count(monkeypatch):
    """Chunks of STEP_CHUNK_SAMPLES here, never shortened by a slow call's pace (config.STEP_CHUNK_SECONDS):
    tests below count the polls of ``stop`` between chunks."""
    monkeypatch.setattr(config, "STEP_CHUNK_SECONDS", float("inf"))


def flat_data(n=90, seed=0):
    """MNIST-like: mostly zero inputs (the row loops skip zeros), a learnable stroke per class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = np.zeros((n, 28, 28))
    x[:, 8:20, 8:20] = rng.random((n, 12, 12)) * (rng.random((n, 12, 12)) < 0.3)
    x[np.arange(n), y * 2 + 3, 5:20] = 1.0
    return x.reshape(n, 784), y


def train(name, backend, dtype="float64", fused=True, epochs=2, batch_size=None, optimizer=None, dropout=None,
          n=90, **fit):
    x, y = flat_data(n)
    model = zoo.create(name, backend=backend, seed=4, dtype=dtype, dropout=dropout)
    model.set_fusion(fused)
    args = zoo.fit_args(name, optimizer=optimizer and optimizer[0], lr=optimizer and optimizer[1], epochs=epochs)
    args["batch_size"] = batch_size or min(args["batch_size"], 32)
    hist = model.fit(x.astype(dtype), y, **args, verbose=0, seed=5, **fit)
    return model, hist


def weights(model):
    return [model.backend.to_numpy(p).copy() for p in model.parameters()]


def test_the_zoo_mlps_get_a_step_program_and_the_cnns_do_not():
    for name in MLPS:
        model = zoo.create(name, backend="numpy")
        assert program_for(model, make_optimizer("adam", 0.001).attach(model)) is not None
    cnn = zoo.create("simple-cnn", backend="numpy")
    assert program_for(cnn, make_optimizer("adam", 0.001).attach(cnn)) is None
    mlp = zoo.create("relu-mlp", backend="numpy")
    mlp.set_fusion(False)  # the per-layer path stays reachable
    assert program_for(mlp, make_optimizer("adam", 0.001).attach(mlp)) is None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", MLPS)
def test_numpy_steps_are_the_layer_path_bit_for_bit(name, dtype):
    """The reference calls the numpy kernels in the layers' order: identical weights, not close ones."""
    compiled, h1 = train(name, "numpy", dtype, dropout=0.5 if name == "relu-mlp" else None)
    layered, h2 = train(name, "numpy", dtype, fused=False, dropout=0.5 if name == "relu-mlp" else None)
    for a, b in zip(weights(compiled), weights(layered)):
        np.testing.assert_array_equal(a, b)
    assert h1["accuracy"] == h2["accuracy"]
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-6)  # summed in float64 here, in the dtype there


OPTIMIZERS = [("sgd", 0.1), ("momentum", 0.05), ("adagrad", 0.05), ("adam", 0.01)]


# numba's ways through a dense layer: row loops over the non-zeros (small batches, or sparse inputs
# to wide layers: min_outputs 16 lets both MLPs' first layers take them), BLAS (density 0), each
# serial, on the threads a phase at a time (parallel from 32 rows), or each step split over the
# threads for the whole chunk (split from the last number of rows; where numba has 2 threads)
OFF = 10**9
PATHS = {"b1": (1, 0.5, 16, 32, OFF), "b5": (5, 0.5, 16, 32, OFF), "b5-split": (5, 0.5, 16, OFF, 1),
         "b40-sparse-parallel": (40, 0.5, 16, 32, OFF), "b40-sparse-serial": (40, 0.5, 16, OFF, OFF),
         "b40-sparse-split": (40, 0.5, 16, OFF, 32), "b40-blas-parallel": (40, 0.0, 16, 32, OFF),
         "b40-blas-serial": (40, 0.5, OFF, OFF, OFF), "b40-blas-split": (40, 0.0, 16, OFF, 32)}


def set_paths(monkeypatch, density, min_outputs, parallel, split):
    monkeypatch.setattr(config, "STEP_SMALL_BATCH", 16)
    monkeypatch.setattr(config, "STEP_SPARSE_DENSITY", density)
    monkeypatch.setattr(config, "STEP_SPARSE_MIN_OUTPUTS", min_outputs)
    monkeypatch.setattr(config, "STEP_PARALLEL_BATCH", parallel)
    monkeypatch.setattr(config, "STEP_SPLIT_BATCH", split)


@pytest.mark.parametrize("backend", STEP_BACKENDS)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_every_backend_matches_the_reference_in_float64(backend, path, optimizer, monkeypatch):
    """Both losses, dropout, every optimizer; float64 weights within 1e-10 of numpy's per-layer path
    (measured 1e-15..6e-13 over these cases: only the order of the sums differs)."""
    batch_size, *paths = PATHS[path]
    set_paths(monkeypatch, *paths)
    for name, dropout in (("small-mlp", None), ("relu-mlp", 0.3)):
        got, hist = train(name, backend, batch_size=batch_size, optimizer=optimizer, dropout=dropout, n=60)
        ref, ref_hist = train(name, "numpy", fused=False, batch_size=batch_size, optimizer=optimizer, dropout=dropout,
                              n=60)
        for a, b in zip(weights(got), weights(ref)):
            err = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
            assert err < 1e-10, (name, err)
        assert hist["accuracy"] == ref_hist["accuracy"]


@pytest.mark.skipif("numba" not in STEP_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize("name, batch_size", [("small-mlp", 5), ("sigmoid-mlp", 3), ("relu-mlp", 13)])
def test_numba_split_steps_are_the_one_thread_steps(name, batch_size, monkeypatch):
    """A step split over the threads does the arithmetic of one thread, but for the input layer's
    product, summed from one part per share of the features: float64 weights within 1e-10 of an
    unsplit run's, the same accuracy. Odd batches leave the parts unequal; several epochs and
    dropout give a race many chances to show."""
    numba = pytest.importorskip("numba")
    if numba.get_num_threads() < 2:
        pytest.skip(f"numba has {numba.get_num_threads()} thread here: nothing to split over")
    from fastmnist.backends import numba_backend
    runs = []
    for split in (OFF, 1):
        set_paths(monkeypatch, 0.5, 16, OFF, split)
        assert numba_backend._step_parts(batch_size) == (1 if split == OFF else 2)
        model, hist = train(name, "numba", "float64", epochs=3, batch_size=batch_size,
                            dropout=0.5 if name == "relu-mlp" else None)
        runs.append((weights(model), hist))
    for a, b in zip(runs[0][0], runs[1][0]):
        assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-10
    assert runs[0][1]["accuracy"] == runs[1][1]["accuracy"]
    np.testing.assert_allclose(runs[0][1]["loss"], runs[1][1]["loss"], rtol=1e-10)


def naive_feature_lists(batch, f0, f1):
    """The oracle: for each feature f0 <= f < f1, the rows where it is non-zero (NaN counts), in order."""
    return [[r for r in range(len(batch)) if batch[r, f] != 0] for f in range(f0, f1)]


@pytest.mark.skipif("numba" not in STEP_BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("width, nb, f0, f1", [(784, 100, 392, 784), (13, 67, 0, 6), (13, 67, 6, 13),
                                               (30, 8, 3, 30), (20, 5, 0, 20), (40, 24, 8, 40)])
def test_feature_lists_and_their_partial_product_match_the_oracle(dtype, width, nb, f0, f1):
    """A split step's input layer (numba_steps._feature_lists, _sparse_partial): each feature's
    non-zero rows in order, with their values, from rows read in place through 8 x 8 transposes
    (a batch that is not a multiple of 8, features that are not, fewer than 8 of either), and the
    part's product from them, into rows padded to whole vectors (71 columns: more than one
    register block of float32 on AVX2)."""
    from fastmnist.backends import numba_steps as S
    rng = np.random.default_rng(width + nb)
    xs = (rng.random((150, width)) * (rng.random((150, width)) < 0.3)).astype(dtype)
    perm, lo = rng.permutation(150), 20
    batch = xs[perm[lo:lo + nb]]
    nf = f1 - f0
    block = np.full(nf * ((nb + 7) // 8 * 8), np.nan, dtype)
    start, rows = np.empty(nf + 1, np.int64), np.empty(nf * nb + S._ROW_SLACK, np.int32)
    vals = np.empty(nf * nb + S._ROW_SLACK, dtype)
    count = S._feature_lists(xs, perm, lo, nb, f0, f1, block, np.empty(8, np.int64), start, rows, vals)
    at = 0
    for c, want in enumerate(naive_feature_lists(batch, f0, f1)):
        assert start[c] == at and list(rows[at:at + len(want)]) == want, (c, f0 + c)
        np.testing.assert_array_equal(vals[at:at + len(want)], batch[want, f0 + c])
        at += len(want)
    assert start[nf] == at == count
    w = rng.normal(size=(width, 71)).astype(dtype)
    out = np.full((nb, (71 + S._ROW_SLACK - 1) // S._ROW_SLACK * S._ROW_SLACK), np.nan, dtype)
    S._sparse_partial(start, rows, vals, w, f0, f1, out)
    np.testing.assert_allclose(out[:, :71], batch[:, f0:f1].astype(np.float64) @ w[f0:f1],
                               rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.skipif("numba" not in STEP_BACKENDS, reason="numba is not installed")
def test_numba_split_steps_with_a_narrow_input_are_the_one_thread_steps(monkeypatch):
    """An input 13 features wide (each part's share not a multiple of 8) and a batch of 21: the
    split steps' weights within 1e-10 of one thread's (float64), the same accuracy."""
    numba = pytest.importorskip("numba")
    if numba.get_num_threads() < 2:
        pytest.skip(f"numba has {numba.get_num_threads()} thread here: nothing to split over")
    rng = np.random.default_rng(3)
    x = rng.random((120, 13)) * (rng.random((120, 13)) < 0.4)
    y = rng.integers(0, 3, 120)
    runs = []
    for split in (OFF, 1):
        set_paths(monkeypatch, 0.5, 4, OFF, split)
        model = Sequential([Dense(6), Sigmoid(), Dense(3)], (13,), backend="numba", dtype="float64", seed=2)
        hist = model.fit(x, y, epochs=3, batch_size=21, optimizer="sgd", lr=0.5, verbose=0, seed=1)
        runs.append((weights(model), hist))
    for a, b in zip(runs[0][0], runs[1][0]):
        assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-10
    assert runs[0][1]["accuracy"] == runs[1][1]["accuracy"]


@pytest.mark.skipif("numba" not in STEP_BACKENDS, reason="numba is not installed")
def test_numba_splits_steps_only_where_every_part_gets_its_own_thread(monkeypatch):
    """A part without its own thread would wait at its first barrier forever: no split with a
    threading layer that may run two iterations on one thread, or where OpenMP may give fewer."""
    numba = pytest.importorskip("numba")
    from fastmnist.backends import numba_backend
    monkeypatch.setattr(config, "STEP_SPLIT_BATCH", 64)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    monkeypatch.setattr(numba_backend, "_started_threading_layer", lambda: "omp")
    assert numba_backend._step_parts(64) == 2 and numba_backend._step_parts(63) == 1
    monkeypatch.setattr(numba, "get_num_threads", lambda: 1)
    assert numba_backend._step_parts(100) == 1
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    monkeypatch.setenv("OMP_DYNAMIC", "true")
    assert numba_backend._step_parts(100) == 1
    monkeypatch.delenv("OMP_DYNAMIC")
    monkeypatch.setattr(numba_backend, "_started_threading_layer", lambda: "tbb")
    assert numba_backend._step_parts(100) == 1


@pytest.mark.skipif("numba" not in STEP_BACKENDS, reason="numba is not installed")
def test_numba_sees_whether_a_prange_runs_its_parts_at_once():
    """OMP_THREAD_LIMIT=1 runs a prange's two iterations one after the other on one thread: a split
    step would wait forever at its first barrier. The probe says so (and returns) instead."""
    import os
    import subprocess
    import sys
    numba = pytest.importorskip("numba")
    if numba.get_num_threads() < 2:
        pytest.skip(f"numba has {numba.get_num_threads()} thread here: nothing to split over")
    code = ("import fastmnist.backends.numba_backend\n"
            "from fastmnist.backends.numba_sync import parts_run_together\nprint(parts_run_together(2))")
    answers = []
    for limit in ("1", None):
        env = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
        if limit:
            env["OMP_THREAD_LIMIT"] = limit
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        answers.append(out.stdout.split()[-1])
    assert answers == ["False", "True"]


@pytest.mark.parametrize("backend", STEP_BACKENDS)
def test_float32_training_matches_the_layer_path(backend):
    got, hist = train("relu-mlp", backend, "float32", dropout=0.5)
    ref, ref_hist = train("relu-mlp", "numpy", "float32", fused=False, dropout=0.5)
    for a, b in zip(weights(got), weights(ref)):
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-4
    assert abs(hist["accuracy"][-1] - ref_hist["accuracy"][-1]) <= 2 / 90


@pytest.mark.parametrize("backend", STEP_BACKENDS)
@pytest.mark.parametrize("name", ["sigmoid-mlp", "relu-mlp"])
def test_chunk_size_never_changes_the_result(backend, name, monkeypatch):
    """Chunks of 1, 7 and all steps of the epoch: the same weights bit for bit."""
    results = []
    for samples in (1, 7, 10**9):
        monkeypatch.setattr(config, "STEP_CHUNK_SAMPLES", samples * (1 if name == "sigmoid-mlp" else 16))
        model, hist = train(name, backend, "float32", batch_size=1 if name == "sigmoid-mlp" else 16,
                            dropout=0.5 if name == "relu-mlp" else None)
        results.append((weights(model), hist["loss"], hist["accuracy"]))
    for w, loss, acc in results[1:]:
        for a, b in zip(w, results[0][0]):
            np.testing.assert_array_equal(a, b)
        assert loss == results[0][1] and acc == results[0][2]


def test_chunks_are_sized_by_the_last_calls_pace(monkeypatch):
    """A fit's first call runs STEP_CHUNK_FIRST_SAMPLES samples; each later one what the last
    call's pace fits in STEP_CHUNK_SECONDS, at least a step, at most STEP_CHUNK_SAMPLES samples."""
    from fastmnist.steps import first_chunk, next_chunk
    monkeypatch.setattr(config, "STEP_CHUNK_SECONDS", 0.2)
    monkeypatch.setattr(config, "STEP_CHUNK_FIRST_SAMPLES", 1024)
    monkeypatch.setattr(config, "STEP_CHUNK_SAMPLES", 100_000)
    assert first_chunk(100) == 10 and first_chunk(5000) == 1
    assert next_chunk(100, 10, 0.002) == 1000  # 0.2 ms a step
    assert next_chunk(100, 10, 20.0) == 1  # a call that compiled the kernels
    assert next_chunk(100, 10, 1e-6) == 1000 and next_chunk(100, 10, 0.0) == 1000  # the cap: 100000 samples
    monkeypatch.setattr(config, "STEP_CHUNK_SECONDS", float("inf"))  # never by time
    assert next_chunk(100, 10, 0.5) == 1000
    monkeypatch.setattr(config, "STEP_CHUNK_SAMPLES", 512)
    assert first_chunk(100) == 5 and next_chunk(100, 5, 1e-3) == 5


@pytest.mark.parametrize("backend", STEP_BACKENDS)
def test_the_curve_is_the_layer_paths_whatever_the_chunks(backend, monkeypatch):
    """Each step's loss and correct count come back from the compiled call: the curve's points fall
    on the per-layer path's steps (every config.CURVE_STEPS) for chunks of 3 steps or of the whole
    epoch, with the same values, and the epoch sums are the same bit for bit."""
    monkeypatch.setattr(config, "CURVE_STEPS", 4)
    runs = []
    for samples in (3 * 8, 10**9):
        monkeypatch.setattr(config, "STEP_CHUNK_SAMPLES", samples)
        runs.append(train("relu-mlp", backend, "float64", n=150, batch_size=8)[1])
    layered = train("relu-mlp", "numpy", "float64", fused=False, n=150, batch_size=8)[1]
    steps = -(-150 // 8)
    assert runs[0]["curve_epoch"] == layered["curve_epoch"]
    assert runs[0]["curve_epoch"][:5] == [4 / steps, 8 / steps, 12 / steps, 16 / steps, 1.0]
    for key in ("curve_epoch", "curve_loss", "curve_accuracy", "loss", "accuracy"):
        assert runs[1][key] == runs[0][key], key
    np.testing.assert_allclose(runs[0]["curve_loss"], layered["curve_loss"], rtol=1e-9)
    np.testing.assert_allclose(runs[0]["curve_accuracy"], layered["curve_accuracy"], rtol=1e-9)


@pytest.mark.parametrize("backend", STEP_BACKENDS)
def test_interrupted_mid_chunk_and_resumed_equals_uninterrupted(backend, monkeypatch):
    """Stopped at step 5 of epoch 2 (chunks of 5 steps), resumed with chunks of 7 so that it stops in
    the middle of the uninterrupted run's chunk 0..6: the same weights and history, bit for bit,
    with dropout and a one-cycle schedule."""
    x, y = flat_data(90)
    x = x.astype("float32")

    def run(chunk, **fit):
        monkeypatch.setattr(config, "STEP_CHUNK_SAMPLES", chunk * 8)
        return model.fit(x, y, epochs=3, batch_size=8, optimizer=opt, schedule="onecycle", verbose=0, seed=5, **fit)

    model = zoo.create("relu-mlp", backend=backend, seed=4, dtype="float32", dropout=0.5)
    opt = make_optimizer("adam", 0.01)
    full_hist = run(7)
    full = weights(model)
    model = zoo.create("relu-mlp", backend=backend, seed=4, dtype="float32", dropout=0.5)
    opt = make_optimizer("adam", 0.01)
    polls = iter(range(10**6))
    with pytest.raises(TrainingInterrupted) as info:
        run(5, stop=lambda: next(polls) == 4)
    state = info.value.state
    assert (state["epoch"], state["step"]) == (1, 5)
    hist = run(7, history=state["history"], resume=state)
    for a, b in zip(weights(model), full):
        np.testing.assert_array_equal(a, b)
    assert hist["loss"] == full_hist["loss"] and hist["accuracy"] == full_hist["accuracy"]


def test_a_state_from_the_compiled_path_resumes_on_the_layer_path(monkeypatch):
    """Seeds and rates are drawn as the per-layer loop draws them: a run stopped on the compiled
    numpy path and finished on the per-layer path ends bit for bit as an uninterrupted run."""
    monkeypatch.setattr(config, "STEP_CHUNK_SAMPLES", 5 * 8)
    x, y = flat_data(90)
    full = zoo.create("relu-mlp", backend="numpy", seed=4, dropout=0.5)
    full.set_fusion(False)
    full.fit(x, y, epochs=2, batch_size=8, optimizer=make_optimizer("adam", 0.01), verbose=0, seed=5)
    model = zoo.create("relu-mlp", backend="numpy", seed=4, dropout=0.5)
    opt = make_optimizer("adam", 0.01)
    polls = iter(range(10**6))
    with pytest.raises(TrainingInterrupted) as info:
        model.fit(x, y, epochs=2, batch_size=8, optimizer=opt, verbose=0, seed=5, stop=lambda: next(polls) == 3)
    model.set_fusion(False)
    model.fit(x, y, epochs=2, batch_size=8, optimizer=opt, verbose=0, seed=5, history=info.value.state["history"],
              resume=info.value.state)
    for a, b in zip(weights(model), weights(full)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", STEP_BACKENDS)
def test_divergence_names_the_step(backend):
    x, y = flat_data(64)
    model = Sequential([Dense(32), ReLU(), Dense(10)], (784,), backend=backend)
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step \d+ of 4; lower the learning rate"):
        model.fit(x * 1e30, y, epochs=1, batch_size=16, optimizer="sgd", lr=1e10, verbose=0)


@pytest.mark.parametrize("backend", STEP_BACKENDS)
def test_bad_arguments_are_named(backend):
    be = get_backend(backend)
    model = Sequential([Dense(8), Sigmoid(), Dropout(0.2), Dense(10)], (784,), backend=backend)
    opt = make_optimizer("sgd", 0.1).attach(model)
    program = program_for(model, opt)
    x, y = flat_data(20)
    xs, labels, perm = x.astype(np.float32), y.astype(np.int64), np.arange(20, dtype=np.int64)
    rates = (np.full(2, 0.1), np.full(2, 0.1), np.ones(2))
    seeds = np.zeros((2, 1), np.int64)
    with pytest.raises(ValueError, match="xs has 783 features"):
        be.dense_train_steps(program, xs[:, 1:], None, labels, perm, 0, 10, *rates, seeds)
    with pytest.raises(ValueError, match=r"steps 1\.\.2 asked; an epoch of 20 samples in batches of 10 has 2"):
        be.dense_train_steps(program, xs, None, labels, perm, 1, 10, *rates, seeds)
    with pytest.raises(TypeError, match="perm must be int64"):
        be.dense_train_steps(program, xs, None, labels, perm.astype(np.int32), 0, 10, *rates, seeds)
    with pytest.raises(ValueError, match=r"seeds must be \(2, 1\)"):
        be.dense_train_steps(program, xs, None, labels, perm, 0, 10, *rates, seeds[:, :0])
    with pytest.raises(TypeError, match="operands must share one dtype"):
        be.dense_train_steps(program, x, None, labels, perm, 0, 10, *rates, seeds)
