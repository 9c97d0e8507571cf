"""A whole training step captured as one CUDA graph on the simulator (cupy_graphs.py, issue 19):
replays give the eager path's weights bit for bit, and a replay costs one graph launch with no
allocation, no host-to-device copy and no host read. None of it is GPU evidence (docs/gpu.md)."""
import re

import numpy as np
import pytest

import fastmnist
from fastmnist import config, optim, zoo
from fastmnist.backends import backend_status
from fastmnist.backends.cuda.simgraph import CaptureError
from fastmnist.errors import InvalidArgument

pytestmark = pytest.mark.skipif(not backend_status("cupy-sim")[0], reason=backend_status("cupy-sim")[1])

BATCH = 8


def _setup(name, dtype, optimizer):
    """A model, its optimizer and one fixed batch on cupy-sim, and the step that trains on it."""
    be = fastmnist.get_backend("cupy-sim")
    model = zoo.create(name, backend="cupy-sim", seed=0, dtype=dtype)
    rng = np.random.default_rng(1)
    shape = (BATCH, 784) if zoo.recipe(name).flat_input else (BATCH, 1, 28, 28)
    x = be.asarray(rng.random(shape).astype(dtype))
    labels = rng.integers(0, 10, BATCH)
    targets = be.asarray(np.eye(10, dtype=dtype)[labels] if model.loss == "mse" else labels.astype(np.int64))
    opt = optimizer.attach(model)

    def step():
        out = model.forward(x, train=True)
        _, d = model.loss_and_grad(out, targets)
        model.backward(d)
        opt.step()
    return be, model, step, x


def _weights(be, model):
    return [be.to_numpy(p) for p in model.parameters()]


@pytest.mark.parametrize("name, dtype", [("fast-cnn", "float32"), ("dropout-cnn", "float64"), ("sigmoid-mlp", "float64")])
def test_graph_replays_match_eager_steps_bit_for_bit(name, dtype, monkeypatch):
    """Eager steps on the same kernels (own gemm) against one eager step then its graph's replays:
    the same arguments reach the same kernels, so the weights agree exactly (SGD: its learning rate
    is constant, so baking it in at capture changes nothing; dropout keeps one seed here)."""
    monkeypatch.setattr(config, "CUPY_OWN_GEMM", True)
    steps = 4
    be, model, step, _ = _setup(name, dtype, optim.SGD(0.05))
    for _ in range(steps):
        step()
    eager = _weights(be, model)
    be, model, step, x = _setup(name, dtype, optim.SGD(0.05))
    graph = be.capture_step(step, x.shape)
    assert graph.shape == x.shape and graph.nodes > 10
    for _ in range(steps - 1):
        graph.launch()
    for got, want in zip(_weights(be, model), eager):
        np.testing.assert_array_equal(got, want)
    assert any(np.abs(w - w0).max() > 0 for w, w0 in zip(eager, _weights(be, zoo.create(name, backend="numpy", seed=0,
                                                                                          dtype=dtype)))), "trained"


def test_a_replay_is_one_graph_launch_with_no_allocation_copy_or_host_read():
    be, model, step, x = _setup("fast-cnn", "float32", optim.SGD(0.05))
    graph = be.capture_step(step, x.shape)
    counters = be.device.counters
    before = dict(counters)
    for _ in range(3):
        graph.launch()
    used = {k: counters[k] - before[k] for k in before}
    assert used["graph_launches"] == 3 and used["graph_nodes"] == 3 * graph.nodes
    for what in ("allocations", "capture_allocations", "h2d_copies", "host_reads", "kernel_launches", "array_ops"):
        assert used[what] == 0, (what, used)


def test_adam_with_its_step_count_from_the_host_is_baked_in_at_capture(monkeypatch):
    """Rule 7 of the simulator at work: Adam's bias corrections come from the host's step count,
    so replays repeat the captured step's corrections and drift from eager Adam: a graph step takes
    them from the device (DeviceRates, below), and without it this must show as wrong numbers."""
    monkeypatch.setattr(config, "CUPY_OWN_GEMM", True)
    be, model, step, _ = _setup("sigmoid-mlp", "float64", optim.Adam(0.01))
    for _ in range(4):
        step()
    eager = _weights(be, model)
    be, model, step, x = _setup("sigmoid-mlp", "float64", optim.Adam(0.01))
    graph = be.capture_step(step, x.shape)
    for _ in range(3):
        graph.launch()
    assert max(np.abs(g - e).max() for g, e in zip(_weights(be, model), eager)) > 1e-9


@pytest.mark.parametrize("name, dtype", [("fast-cnn", "float32"), ("sigmoid-mlp", "float64")])
def test_adam_with_its_rates_on_the_device_replays_eager_steps_bit_for_bit(name, dtype, monkeypatch):
    """A learning rate that changes every step (as one-cycle's does) and Adam's bias corrections,
    read by the graph from a DeviceRates table at the device's step counter: K replays give the
    weights of K eager steps with those learning rates, bit for bit; the counter says K ran."""
    from fastmnist.backends.contract import adam_corrections
    monkeypatch.setattr(config, "CUPY_OWN_GEMM", True)
    steps, lrs = 5, [0.004, 0.01, 0.007, 0.002, 0.0005]
    opt = optim.Adam(0.01)
    be, model, step, _ = _setup(name, dtype, opt)
    for lr in lrs:
        opt.lr = lr
        step()
    eager = _weights(be, model)
    be, model, step, x = _setup(name, dtype, optim.Adam(0.01))
    rates = be.device_rates(8, dtype)
    corrections = [adam_corrections(lr, t, 0.9, 0.999) for t, lr in enumerate(lrs, 1)]
    rates.load([c[0] for c in corrections], [c[1] for c in corrections])
    def counted_step():
        step()
        be.advance_step(rates)

    with be.using_rates(rates):
        graph = be.capture_step(counted_step, x.shape)  # its eager pass is step 1
    for _ in range(steps - 1):
        graph.launch()
    assert rates.taken() == steps
    for got, want in zip(_weights(be, model), eager):
        np.testing.assert_array_equal(got, want)
    graph.launch()  # a sixth step on a table of five: no update, and the host is told
    for got, want in zip(_weights(be, model), eager):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(InvalidArgument, match="6 steps ran on a table of 5: the last 1 updated no weights"):
        rates.taken()


def test_an_epoch_of_graph_steps_with_its_batches_and_sums_on_the_device(monkeypatch):
    """fast-cnn, Adam at a changing learning rate, 29 images in batches of 8: three steps of one graph
    (its capture's eager pass, then two replays) and the short last batch as a second graph, each
    step gathering its batch through the epoch's permutation at the device's step counter and adding
    its loss and accuracy into device totals. Against the same steps run eagerly from host-gathered
    batches: the weights bit for bit, the summed loss to float32 rounding, the correct count exactly."""
    from fastmnist.backends.contract import adam_corrections
    monkeypatch.setattr(config, "CUPY_OWN_GEMM", True)
    n, batch, lrs = 29, 8, [0.004, 0.01, 0.007, 0.002]
    be = fastmnist.get_backend("cupy-sim")
    rng = np.random.default_rng(3)
    xs_host = rng.random((n, 1, 28, 28)).astype(np.float32)
    labels_host = rng.integers(0, 10, n).astype(np.int64)
    perm_host = rng.permutation(n).astype(np.int64)
    xs, labels = be.asarray(xs_host), be.asarray(labels_host)

    model = zoo.create("fast-cnn", backend="cupy-sim", seed=0)
    opt = optim.Adam(0.01).attach(model)
    eager_loss = eager_correct = 0.0
    for k, lr in enumerate(lrs):
        idx = perm_host[k * batch:(k + 1) * batch]
        xb, lb = be.asarray(xs_host[idx]), be.asarray(labels_host[idx])
        out = model.forward(xb, train=True)
        loss, d = model.loss_and_grad(out, lb)
        model.backward(d)
        opt.lr = lr
        opt.step()
        eager_loss += float(loss) * len(idx)
        eager_correct += int(be.count_correct(out, lb))
    eager = _weights(be, model)

    model = zoo.create("fast-cnn", backend="cupy-sim", seed=0)
    opt = optim.Adam(0.01).attach(model)
    rates = be.device_rates(len(lrs), "float32", perm_size=n)
    corrections = [adam_corrections(lr, t, 0.9, 0.999) for t, lr in enumerate(lrs, 1)]
    rates.load([c[0] for c in corrections], [c[1] for c in corrections], perm=perm_host)

    def step(rows):
        xb = be.gather_batch(xs, rates.perm, rates, batch, rows)
        lb = be.gather_batch(labels, rates.perm, rates, batch, rows)
        out = model.forward(xb, train=True)
        loss, d = model.loss_and_grad(out, lb)
        model.backward(d)
        opt.step()
        be.accumulate_step(loss, be.count_correct(out, lb), rows, rates)
        be.advance_step(rates)

    with be.using_rates(rates):
        full = be.capture_step(lambda: step(batch), (batch, 1, 28, 28))  # step 1
        full.launch()  # step 2
        full.launch()  # step 3
        be.capture_step(lambda: step(n - 3 * batch), (n - 3 * batch, 1, 28, 28))  # step 4, the short batch
    assert rates.taken() == len(lrs)
    for got, want in zip(_weights(be, model), eager):
        np.testing.assert_array_equal(got, want)
    loss_sum, correct = rates.sums(len(lrs))
    np.testing.assert_allclose(loss_sum, eager_loss, rtol=1e-6)
    assert correct == eager_correct
    rows = rates.rows(len(lrs))  # every step's running sums, in order
    assert rows.shape == (4, 3) and (np.diff(rows[:, 0]) > 0).all() and rows[-1, 1] == eager_correct


def test_the_ledger_names_a_step_that_did_not_run():
    """Three steps loaded, two run: reading the epoch's sums names the step that did not run, and a
    later load's rows are told from an earlier one's by its token."""
    be = fastmnist.get_backend("cupy-sim")
    rates = be.device_rates(3, "float32", perm_size=4)
    loss, correct = be.asarray(np.array([0.5], np.float32)), be.asarray(np.array([3], np.int64))
    for sums in ((0.0, 0.0), (10.0, 7.0)):
        rates.load(np.ones(3), np.ones(3), sums=sums)
        for _ in range(2):
            be.accumulate_step(loss, correct, 4, rates)
            be.advance_step(rates)
        assert rates.sums(2) == (sums[0] + 4.0, sums[1] + 6.0) and rates.sums(0) == sums
        with pytest.raises(InvalidArgument, match=r"step 2 of this load did not run on the device \(1 of 3 steps"):
            rates.rows(3)
    with pytest.raises(InvalidArgument, match="perm must be 4 integer row indices"):
        rates.load(np.ones(3), np.ones(3), perm=np.arange(5))


def test_device_rates_refuse_a_table_that_does_not_fit():
    be = fastmnist.get_backend("cupy-sim")
    rates = be.device_rates(3, "float32")
    with pytest.raises(InvalidArgument, match="1 to 3 steps from step 0 on; got shapes \\(4,\\) and \\(4,\\)"):
        rates.load(np.ones(4), np.ones(4))
    with pytest.raises(InvalidArgument, match="capacity must be at least 1 step"):
        be.device_rates(0, "float32")


def test_a_step_that_reads_the_loss_on_the_host_cannot_be_captured():
    be, model, step, x = _setup("sigmoid-mlp", "float32", optim.SGD(0.05))

    def reading_step():
        out = model.forward(x, train=True)
        loss, d = model.loss_and_grad(out, model_targets)
        float(loss)  # a host read: a GPU refuses it during capture
        model.backward(d)

    model_targets = be.asarray(np.eye(10, dtype=np.float32)[np.arange(BATCH) % 10])
    with pytest.raises(CaptureError, match=r"host read \(float\(\)"):
        be.capture_step(reading_step)
    assert be._arena is None  # the backend is usable eagerly again
    y = model.forward(x, train=False)
    assert be.to_numpy(y).shape == (BATCH, 10)


def test_a_step_whose_buffers_change_between_passes_is_refused():
    be = fastmnist.get_backend("cupy-sim")
    inputs = iter([be.asarray(np.ones((4, 3), np.float32)), be.asarray(np.ones((5, 3), np.float32))])
    with pytest.raises(InvalidArgument, match=r"step arena: buffer #0 was \(4, 3\) float32 .* now \(5, 3\) float32"):
        be.capture_step(lambda: be.relu_forward(next(inputs)))
    assert be._arena is None


def _fit_data(n=40):
    rng = np.random.default_rng(7)
    return rng.random((n, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, n)


def _fit(x, y, graphs, monkeypatch, name="fast-cnn", **fit):
    """zoo's recipe (fast-cnn: one-cycle Adam) on cupy-sim at batch 16 (40 images: 16, 16 and a
    short 8), with config.CUDA_GRAPHS as asked and the products on the own gemm either way."""
    monkeypatch.setattr(config, "CUPY_OWN_GEMM", True)
    monkeypatch.setattr(config, "CUDA_GRAPHS", graphs)
    model = zoo.create(name, backend="cupy-sim", seed=0)
    args = {**zoo.fit_args(name, epochs=2, batch_size=16), **fit}
    before = dict(model.backend.device.counters)
    history = model.fit(x, y, verbose=0, seed=0, **args)
    launches = model.backend.device.counters["graph_launches"] - before["graph_launches"]
    return model, history, launches


def test_fit_with_graphs_equals_fit_without(monkeypatch):
    """fit() on graphs (config.CUDA_GRAPHS) against the step-by-step loop: the same weights bit for
    bit after two epochs of one-cycle Adam with a short last batch, the same accuracy, the loss to
    float32 rounding (the graphs sum it in float64 on the device); and the graphs were used: each of
    the two batch shapes captured once in the run (its capture runs the step), the rest replayed,
    with the device counts an epoch of replays should have."""
    x, y = _fit_data()
    eager, eager_history, eager_launches = _fit(x, y, False, monkeypatch)
    device, ends = fastmnist.get_backend("cupy-sim").device, []
    graphed, history, launches = _fit(x, y, True, monkeypatch, on_epoch_end=lambda state: ends.append(dict(device.counters)))
    # epoch 1: capture (16 rows), replay, capture (8 rows); epoch 2: three replays
    assert eager_launches == 0 and launches == 4
    # epoch 2 on the device: one graph launch a step and no other launch, allocation or array op;
    # the host writes once (the permutation, the rates, the counter and the sums so far, in one
    # buffer) and reads once (every step's running sums, at the epoch's end)
    epoch2 = {key: ends[1][key] - ends[0][key] for key in ends[1]}
    assert epoch2 == {**epoch2, "graph_launches": 3, "kernel_launches": 0, "allocations": 0, "array_ops": 0,
                      "h2d_copies": 1, "host_reads": 1}, epoch2
    for key in ("curve_epoch", "curve_accuracy"):  # the loss curve from that read: the step loop's points
        assert history[key] == eager_history[key], key
    np.testing.assert_allclose(history["curve_loss"], eager_history["curve_loss"], rtol=1e-5)
    for got, want in zip(_weights(graphed.backend, graphed), _weights(eager.backend, eager)):
        np.testing.assert_array_equal(got, want)
    assert history["accuracy"] == eager_history["accuracy"]
    np.testing.assert_allclose(history["loss"], eager_history["loss"], rtol=1e-5)
    assert graphed.backend.to_numpy(graphed.parameters()[0]).dtype == np.float32


def test_fit_falls_back_to_steps_where_graphs_do_not_apply(monkeypatch):
    """Augmentation (batches warped on the host) runs step by step."""
    from fastmnist.augment import Augment
    x, y = _fit_data(24)
    _, _, launches = _fit(x, y, True, monkeypatch, augment=Augment())
    assert launches == 0


def test_sgd_on_graphs_takes_the_learning_rate_from_the_device(monkeypatch):
    """fast-cnn's one-cycle schedule (a new learning rate every step) with SGD: the rate read from
    the device's table at the step counter; the step loop's weights bit for bit."""
    x, y = _fit_data(24)
    eager, _, _ = _fit(x, y, False, monkeypatch, optimizer=optim.SGD(0.05))
    graphed, _, launches = _fit(x, y, True, monkeypatch, optimizer=optim.SGD(0.05))
    assert launches == 2
    for got, want in zip(_weights(graphed.backend, graphed), _weights(eager.backend, eager)):
        np.testing.assert_array_equal(got, want)


def test_dropout_on_graphs_takes_its_seeds_from_the_device(monkeypatch):
    """dropout-cnn's recipe on graphs: each step's dropout seed read from the device's table at its
    step counter, the numbers the per-step loop draws; the same weights bit for bit as that loop
    after two epochs (24 images: 16 and a short 8), and again after a stop mid-epoch and a resume
    (the run's generator saved as the per-step loop leaves it; this is the graphs' resume test:
    Adam's table and the batch's permutation reloaded from the stop's step on)."""
    from fastmnist.trainer import TrainingInterrupted
    x, y = _fit_data(24)
    eager, eager_history, _ = _fit(x, y, False, monkeypatch, name="dropout-cnn")
    graphed, history, launches = _fit(x, y, True, monkeypatch, name="dropout-cnn")
    assert launches == 2  # epoch 1 captures both batch shapes, epoch 2 replays them
    for got, want in zip(_weights(graphed.backend, graphed), _weights(eager.backend, eager)):
        np.testing.assert_array_equal(got, want)
    assert history["accuracy"] == eager_history["accuracy"]
    model = zoo.create("dropout-cnn", backend="cupy-sim", seed=0)
    args = zoo.fit_args("dropout-cnn", epochs=2, batch_size=16)
    polls = iter(range(10**6))
    with pytest.raises(TrainingInterrupted) as info:
        model.fit(x, y, verbose=0, seed=0, stop=lambda: next(polls) == 3, **args)
    state = info.value.state
    assert (state["epoch"], state["step"]) == (1, 1)
    model.fit(x, y, verbose=0, seed=0, history=state["history"], resume=state, **args)
    for got, want in zip(_weights(model.backend, model), _weights(eager.backend, eager)):
        np.testing.assert_array_equal(got, want)


def test_dropout_reads_its_seed_from_the_table_and_refuses_a_call_past_it():
    from fastmnist.backends import get_backend
    be = get_backend("cupy-sim")
    rates = be.device_rates(4, np.float32, dropouts=1)
    rates.load(np.ones(2), np.ones(2), seeds=np.array([[5], [6]], np.int64))
    x = be.asarray(np.ones((4, 16), np.float32))
    with be.using_rates(rates):
        y, _ = be.dropout_forward(x, 0.5, 0)  # step 0's seed from the table, 5, not the 0 given
    want, _ = be.dropout_forward(x, 0.5, 5)
    np.testing.assert_array_equal(be.to_numpy(y), be.to_numpy(want))
    assert (be.to_numpy(y) != be.to_numpy(be.dropout_forward(x, 0.5, 0)[0])).any()
    with pytest.raises(InvalidArgument, match="holds seeds for 1 dropout layers"):
        with be.using_rates(rates):
            be.dropout_forward(x, 0.5, 0)
            be.dropout_forward(x, 0.5, 0)
    with pytest.raises(InvalidArgument, match=r"seeds must be int64 of shape \(2, 1\)"):
        rates.load(np.ones(2), np.ones(2))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_each_update_reads_its_learning_rate_at_the_step_counter(dtype):
    """sgd_update, momentum_update and adagrad_update inside using_rates: step 1's rate from the
    table (not the 99 given), the eager update at that rate bit for bit; past the table, none."""
    from fastmnist.backends import get_backend
    be = get_backend("cupy-sim")
    rng = np.random.default_rng(3)
    p0, g = rng.standard_normal(300).astype(dtype), rng.standard_normal(300).astype(dtype)
    s0 = np.abs(rng.standard_normal(300)).astype(dtype)
    lrs = np.array([0.5, 0.03125, 0.25])
    rates = be.device_rates(3, dtype)
    updates = {"sgd": lambda p, s, lr: be.sgd_update(p, g_d, lr),
               "momentum": lambda p, s, lr: be.momentum_update(p, g_d, s, lr, 0.9),
               "adagrad": lambda p, s, lr: be.adagrad_update(p, g_d, s, lr, 1e-7)}
    g_d = be.asarray(g)
    for name, update in updates.items():
        rates.load(lrs, np.ones(3))
        be.advance_step(rates)  # the counter at step 1
        p, s = be.asarray(p0), be.asarray(s0)
        with be.using_rates(rates):
            update(p, s, 99.0)
        want_p, want_s = be.asarray(p0), be.asarray(s0)
        update(want_p, want_s, float(np.asarray(lrs[1], dtype)))
        np.testing.assert_array_equal(be.to_numpy(p), be.to_numpy(want_p), err_msg=name)
        np.testing.assert_array_equal(be.to_numpy(s), be.to_numpy(want_s), err_msg=name)
        be.advance_step(rates)
        be.advance_step(rates)  # past the table's 3 steps
        with be.using_rates(rates):
            update(p, s, 99.0)
        np.testing.assert_array_equal(be.to_numpy(p), be.to_numpy(want_p), err_msg=f"{name}: past the table")


def test_a_diverging_run_on_graphs_names_its_first_non_finite_step(monkeypatch):
    """The epoch's one read holds every step's running loss: a run that blows up stops at the
    epoch's end naming the first step whose loss went non-finite, the step numpy's loop (which
    checks every step) names."""
    from fastmnist.errors import TrainingDiverged
    monkeypatch.setattr(config, "CUPY_OWN_GEMM", True)
    monkeypatch.setattr(config, "CUDA_GRAPHS", True)
    x, y = _fit_data(64)
    messages = []
    for backend in ("numpy", "cupy-sim"):
        model = zoo.create("relu-mlp", backend=backend, seed=0)
        with np.errstate(all="ignore"), pytest.raises(TrainingDiverged) as info:
            model.fit(x.reshape(64, -1) * 1e30, y, epochs=1, batch_size=16, optimizer="sgd", lr=1e10, verbose=0)
        messages.append(str(info.value))
    assert re.search(r"loss became (nan|inf) at epoch 1, step \d of 4;", messages[0]), messages
    assert messages[1] == messages[0]


def test_a_progress_bar_on_graphs_reads_a_row_every_progress_every_steps(monkeypatch, capsys):
    """verbose=1 on a terminal: the bar reads one ledger row every config.PROGRESS_EVERY steps (here
    every step: 2 reads in a 3-step epoch, the last step's sums coming from the epoch's read);
    verbose=0 reads none of them; the weights are the same either way."""
    pytest.importorskip("tqdm")
    import sys
    monkeypatch.setattr(config, "CUPY_OWN_GEMM", True)
    monkeypatch.setattr(config, "CUDA_GRAPHS", True)
    monkeypatch.setattr(config, "PROGRESS_EVERY", 1)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    x, y = _fit_data(40)
    device = fastmnist.get_backend("cupy-sim").device
    reads, weights = {}, {}
    for verbose in (0, 1):
        model = zoo.create("fast-cnn", backend="cupy-sim", seed=0)
        before = device.counters["host_reads"]
        model.fit(x, y, verbose=verbose, seed=0, **zoo.fit_args("fast-cnn", epochs=1, batch_size=16))
        reads[verbose], weights[verbose] = device.counters["host_reads"] - before, _weights(model.backend, model)
    assert reads[1] - reads[0] == 2, reads
    for got, want in zip(weights[1], weights[0]):
        np.testing.assert_array_equal(got, want)
    assert "epoch 1/1" in capsys.readouterr().err
