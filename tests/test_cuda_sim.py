"""The CPU lane for the CUDA source: kernels.cu compiled as C++ and run through the strict CuPy
stand-in (backend ``cupy-sim``). The conformance, gradient-check and robustness suites run on
``cupy-sim`` through the ``be`` fixture; this file checks the simulator itself (that it refuses
what a GPU would get wrong) and whole training runs against NumPy. None of it is GPU evidence."""
import numpy as np
import pytest

import fastmnist
from fastmnist import config, zoo
from fastmnist.backends import backend_status
from fastmnist.backends.cuda import sim
from fastmnist.backends.cuda.simcupy import SimCupy

pytestmark = pytest.mark.skipif(not backend_status("cupy-sim")[0], reason=backend_status("cupy-sim")[1])

SOURCE = r"""
typedef long long i64;
extern "C" __global__ void scale(const float* x, int n, float a, float* y) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) y[i] = a * x[i];
}
extern "C" __global__ void skip_odd(const float* x, i64 n, float* y) {
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) if (i % 2 == 0) y[i] = x[i];
}
__device__ void reduce_block(double* part) {
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
}
extern "C" __global__ void block_sum(const double* x, int n, double* out) {
    __shared__ double part[128];
    double acc = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
    part[threadIdx.x] = acc;
    __syncthreads();
    reduce_block(part);
    if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}
extern "C" __global__ void early_return(float* y) {  // a barrier half the block never reaches
    if (threadIdx.x % 2) return;
    __syncthreads();
    y[threadIdx.x] = 1;
}
extern "C" __global__ void gather(float** tables, int k, float* out) { out[threadIdx.x] = tables[k][threadIdx.x]; }
"""


@pytest.fixture(scope="module")
def dev():
    cp = SimCupy()
    return cp, cp.RawModule(code=SOURCE)


def test_source_analysis_finds_signatures_and_barriers_through_helpers(dev):
    _, module = dev
    spec = module._kernels
    assert [p[:3] for p in spec["scale"]["params"]] == [("const float *", "float32", 1), ("int", "int32", 0),
                                                        ("float", "float32", 0), ("float *", "float32", 1)]
    assert spec["skip_odd"]["params"][1][1] == "int64"  # the typedef is followed
    assert spec["block_sum"]["sync"] and not spec["scale"]["sync"]


def test_kernels_run_and_barriers_hold(dev):
    cp, module = dev
    x = np.random.default_rng(0).standard_normal(1000)
    out = cp.empty(3, np.float64)
    module.get_function("block_sum")((3,), (128,), (cp.asarray(x), np.int32(1000), out))
    np.testing.assert_allclose(out.get(), [x.sum()] * 3)
    y = cp.empty(1000, np.float32)
    module.get_function("scale")((2,), (256,), (cp.asarray(x.astype(np.float32)), np.int32(1000), np.float32(2), y))
    np.testing.assert_allclose(y.get(), 2 * x.astype(np.float32), rtol=1e-6)


def test_a_barrier_some_threads_never_reach_is_an_error(dev):
    """CUDA leaves it undefined (a GPU may hang); the simulator's fibers see it and say so."""
    cp, module = dev
    with pytest.raises(RuntimeError, match=r"early_return: __syncthreads\(\) reached by some threads of a block "
                                           "after others had returned"):
        module.get_function("early_return")((1,), (64,), (cp.empty(64, np.float32),))


@pytest.mark.parametrize("args, message", [
    (lambda cp: (cp.asarray(np.ones(4, np.float32)), 4, np.float32(2), cp.empty(4, np.float32)),
     r"argument 1 \(int n\) got int 4; it must be numpy.int32 \(CuPy passes a Python int as 64 bits"),
    (lambda cp: (cp.asarray(np.ones(4, np.float32)), np.int64(4), np.float32(2), cp.empty(4, np.float32)),
     r"argument 1 \(int n\) got int64"),
    (lambda cp: (cp.asarray(np.ones(4, np.float32)), np.int32(4), 2.0, cp.empty(4, np.float32)),
     r"argument 2 \(float a\) got float 2.0; it must be numpy.float32"),
    (lambda cp: (cp.asarray(np.ones(4)), np.int32(4), np.float32(2), cp.empty(4, np.float32)),
     r"argument 0 \(const float \* x\) got an array of float64; it must be float32"),
    (lambda cp: (np.ones(4, np.float32), np.int32(4), np.float32(2), cp.empty(4, np.float32)),
     r"argument 0 .* got ndarray; a kernel needs a device array"),
    (lambda cp: (cp.asarray(np.ones(8, np.float32))[::2], np.int32(4), np.float32(2), cp.empty(4, np.float32)),
     "non-contiguous"),
    (lambda cp: (cp.asarray(np.ones(4, np.float32)), np.int32(4), np.float32(2)), "3 arguments for 4 parameters"),
])
def test_launches_a_gpu_would_get_wrong_are_refused(dev, args, message):
    cp, module = dev
    with pytest.raises(sim.SimLaunchError, match=message):
        module.get_function("scale")((1,), (32,), args(cp))


def test_grid_and_block_limits(dev):
    cp, module = dev
    args = (cp.asarray(np.ones(4, np.float32)), np.int32(4), np.float32(2), cp.empty(4, np.float32))
    with pytest.raises(sim.SimLaunchError, match="1024"):
        module.get_function("scale")((1,), (2048,), args)
    with pytest.raises(sim.SimLaunchError, match="grid.y = 70000"):
        module.get_function("scale")((1, 70000), (32,), args)


def test_pointer_tables_must_point_at_live_arrays_of_the_right_type(dev):
    cp, module = dev
    a, b = cp.asarray(np.arange(4, dtype=np.float32)), cp.asarray(np.arange(4, 8, dtype=np.float32))
    out = cp.empty(4, np.float32)
    table = cp.asarray(np.array([a.data.ptr, b.data.ptr], np.uint64))
    module.get_function("gather")((1,), (4,), (table, np.int32(1), out))
    np.testing.assert_array_equal(out.get(), [4, 5, 6, 7])
    wrong = cp.asarray(np.array([cp.asarray(np.zeros(4)).data.ptr], np.uint64))  # float64 array (now freed)
    with pytest.raises(sim.SimLaunchError, match="table entry 0"):
        module.get_function("gather")((1,), (4,), (wrong, np.int32(0), out))


def test_unwritten_outputs_are_poisoned_and_host_reads_counted(dev):
    cp, module = dev
    y = cp.empty(6, np.float32)
    module.get_function("skip_odd")((1,), (32,), (cp.asarray(np.ones(6, np.float32)), np.int64(6), y))
    before = cp.counters["host_reads"]
    got = cp.asnumpy(y)
    assert np.isnan(got[1::2]).all() and (got[::2] == 1).all()
    assert cp.counters["host_reads"] == before + 1
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(y)
    with pytest.raises(TypeError, match="Unsupported type"):
        y + np.ones(6, np.float32)


def test_block_size_is_a_tunable_the_reductions_follow(monkeypatch, rng):
    be = fastmnist.get_backend("cupy-sim")
    logits, labels = rng.standard_normal((300, 10)).astype(np.float32), rng.integers(0, 10, 300)
    ref = fastmnist.get_backend("numpy").softmax_cross_entropy(logits, labels)[0]
    for threads in (64, 512):
        monkeypatch.setattr(config, "CUDA_THREADS", threads)
        loss, _ = be.softmax_cross_entropy(be.asarray(logits), be.asarray(labels))
        assert abs(float(loss) - float(ref)) < 1e-5
    monkeypatch.setattr(config, "CUDA_THREADS", 100)
    be._kernels.clear()
    with pytest.raises(ValueError, match="power of two"):
        be.softmax_cross_entropy(be.asarray(logits), be.asarray(labels))


@pytest.fixture(scope="module")
def small_mnist(mnist_dir):
    (x, y), (xt, yt) = fastmnist.load_mnist(mnist_dir)
    return x[:768], y[:768], xt[:500], yt[:500]


def _train(name, backend, data, epochs=2, dtype="float32"):
    x, y, xt, yt = data
    r = zoo.recipe(name)
    model = zoo.create(name, backend=backend, seed=3, dtype=dtype)
    if r.flat_input:
        x, xt = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    model.fit(x.astype(dtype), y, epochs=epochs, batch_size=min(max(r.batch_size, 32), 256), optimizer=r.optimizer, lr=r.lr,
              schedule=r.schedule, verbose=0, seed=3)
    return model, model.evaluate(xt.astype(dtype), yt)


@pytest.mark.parametrize("name", ["fast-cnn", "dropout-cnn", "sigmoid-mlp"])
def test_training_on_the_simulated_gpu_matches_numpy(name, small_mnist):
    """Two epochs with the recipe's optimizer, schedule and dropout. In float64 the CUDA source must
    give numpy's weights to 1e-9 (measured: ~1e-15), which rounding cannot fake and any indexing or
    formula slip breaks; in float32 (where Adam amplifies rounding: numba differs from numpy by
    6e-5 on fast-cnn) the same test accuracy."""
    sim_model, _ = _train(name, "cupy-sim", small_mnist, dtype="float64")
    ref_model, _ = _train(name, "numpy", small_mnist, dtype="float64")
    for (key, a), (_, b) in zip(sorted(sim_model.state_arrays().items()), sorted(ref_model.state_arrays().items())):
        err = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
        assert err < 1e-9, f"{name} {key}: relative difference {err:.2g}"
    _, sim_eval = _train(name, "cupy-sim", small_mnist)
    _, ref_eval = _train(name, "numpy", small_mnist)
    # measured: the same accuracy on all three models over seeds 0-7 (benchmarks/sim_margins.py,
    # results/sim-margins.jsonl); 0.004 is two of the 500 images
    assert abs(sim_eval["accuracy"] - ref_eval["accuracy"]) <= 0.004


def test_a_training_step_never_synchronises_with_the_host(small_mnist):
    """Inside an epoch the trainer reads the loss back every config.PROGRESS_EVERY steps only:
    the simulator counts every host read, so a hidden float()/int()/.get() in a step shows here."""
    be = fastmnist.get_backend("cupy-sim")
    x, y = small_mnist[0][:512], small_mnist[1][:512]
    counts = {}
    for steps in (1, 4):
        model = zoo.create("fast-cnn", backend="cupy-sim", seed=0)
        model.fit(x[:128 * steps], y[:128 * steps], epochs=1, batch_size=128, verbose=0)
        before = dict(be.device.counters)
        model.fit(x[:128 * steps], y[:128 * steps], epochs=1, batch_size=128, verbose=0)
        counts[steps] = {k: be.device.counters[k] - before[k] for k in before}
    per_step = {k: (counts[4][k] - counts[1][k]) / 3 for k in counts[1]}
    assert per_step["host_reads"] == 0, per_step
    assert per_step["h2d_copies"] <= 1, per_step  # at most the Adam gradient-pointer table
    assert 10 <= per_step["kernel_launches"] <= 60, per_step


def test_out_of_device_memory_is_a_clear_memory_error(small_mnist, monkeypatch):
    be = fastmnist.get_backend("cupy-sim")
    monkeypatch.setattr(be.device, "memory_bytes", 48 * 2**20)
    model = zoo.create("simple-cnn", backend="cupy-sim", seed=0)
    with pytest.raises(MemoryError, match=r"GPU out of memory in .*Use a smaller batch size"):
        model.fit(small_mnist[0], small_mnist[1], epochs=1, batch_size=768, verbose=0)


def test_model_trained_on_the_simulated_gpu_loads_on_the_cpu(small_mnist, tmp_path):
    model, result = _train("simple-cnn", "cupy-sim", small_mnist, epochs=1)
    model.save(tmp_path / "m.npz")
    again = fastmnist.load(tmp_path / "m.npz", backend="numpy")
    assert abs(again.evaluate(small_mnist[2], small_mnist[3])["accuracy"] - result["accuracy"]) <= 1e-4


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_own_gemm_matches_the_reference_in_every_layout(dtype, monkeypatch):
    """config.CUPY_OWN_GEMM: kernels.cu's gemm (the products a CUDA graph can capture) in every
    transpose layout, with its bias + ReLU epilogue, and colsum, against NumPy; shapes that are not
    multiples of the 32 x 32 tile or the 16-deep slice."""
    from fastmnist.backends import numpy_backend as ref
    monkeypatch.setattr(config, "CUPY_OWN_GEMM", True)
    be = fastmnist.get_backend("cupy-sim")
    rng = np.random.default_rng(5)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    for n, d, m in [(1, 1, 1), (33, 17, 40), (64, 50, 10), (7, 70, 33)]:
        x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((n, d), (d, m), (m,)))
        dy = rng.standard_normal((n, m)).astype(dtype)
        for relu in (False, True):  # the product's own epilogue: bias, then ReLU where asked
            got = be.to_numpy(be._product(be.asarray(x), be.asarray(w), bias=be.asarray(b), relu=relu))
            want = x @ w + b
            np.testing.assert_allclose(got, np.maximum(want, 0) if relu else want, **tol)
        got = be.to_numpy(be.affine_forward(be.asarray(x), be.asarray(w), be.asarray(b)))
        np.testing.assert_allclose(got, x @ w + b, **tol)
        got = be.affine_backward(be.asarray(dy), be.asarray(x), be.asarray(w))
        for g, r, name in zip(got, ref.affine_backward(dy, x, w), ("dx", "dw", "db")):
            np.testing.assert_allclose(be.to_numpy(g), r, **tol, err_msg=f"{(n, d, m)} {name}")
    x, wt, bt = (rng.standard_normal(s).astype(dtype) for s in ((2, 3, 9, 8), (5, 3, 3, 3), (5,)))
    y, cache = be.conv2d_relu_maxpool_forward(be.asarray(x), be.asarray(wt), be.asarray(bt), 1, 1)
    yr, cr = ref.conv2d_relu_maxpool_forward(x, wt, bt, 1, 1)
    np.testing.assert_allclose(be.to_numpy(y), yr, **tol)
    dy = rng.standard_normal(yr.shape).astype(dtype)
    for g, r, name in zip(be.conv2d_relu_maxpool_backward(be.asarray(dy), cache, be.asarray(wt)),
                          ref.conv2d_relu_maxpool_backward(dy, cr, wt), ("dx", "dw", "db")):
        np.testing.assert_allclose(be.to_numpy(g), r, **tol, err_msg=f"fused conv {name}")


def test_training_on_own_gemm_agrees_with_cublas(small_mnist, monkeypatch):
    """A small MLP's epoch (128 images, float64, Adam) with config.CUPY_OWN_GEMM and without: the
    same weights to rounding (the products sum in another order). Small: the simulator runs the
    gemm's threads one by one (fast-cnn's epoch here took minutes)."""
    from fastmnist.layers import Dense, ReLU
    from fastmnist.model import Sequential
    from fastmnist.zoo import FLAT
    x, y = small_mnist[0][:128].reshape(128, -1), small_mnist[1][:128]
    weights = {}
    for own in (False, True):
        monkeypatch.setattr(config, "CUPY_OWN_GEMM", own)
        model = Sequential([Dense(24), ReLU(), Dense(10)], FLAT, "softmax_cross_entropy", backend="cupy-sim",
                           dtype="float64", seed=0)
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
        weights[own] = [model.backend.to_numpy(p) for p in model.parameters()]
    for a, b in zip(weights[False], weights[True]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
