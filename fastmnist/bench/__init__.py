"""Benchmark cases shared by ``fastmnist bench`` and the pytest-benchmark suite in ``benchmarks/``.

A case is a kernel at the shapes a zoo model uses at its batch size, one training step
(forward + backward + optimizer), or one training epoch. Each case knows its FLOPs and the bytes it
must move at least, so a time can be set against the floor that this machine's measured matmul
rate and copy bandwidth give. Backends: the fastmnist ones plus ``torch`` (PyTorch on the same
network, batch size, optimizer and dtype; CUDA where a GPU works, else CPU).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import zoo
from ..backends import NAMES, backend_status, get_backend
from ..errors import InvalidArgument

F32 = 4
KERNELS = ("conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward", "affine_forward",
           "affine_backward", "relu_forward", "softmax_cross_entropy", "dropout_forward", "adam_update")
DEFAULT_MODELS = ("simple-cnn", "dropout-cnn", "relu-mlp")  # an MLP too: there numpy is a close second


@dataclass
class Case:
    """One thing to time. ``make(backend_name)`` returns ``(fn, sync)``: the timed call and a
    function that waits for the device (a no-op on the CPU)."""

    name: str
    group: str  # kernel | step | epoch
    model: str
    batch_size: int
    flops: float
    bytes: float
    make: Callable = field(repr=False)
    repeat: int = 20


# ---------------------------------------------------------------- backends

# Timed beside the backends: PyTorch in each setup a user could pick, and the seed tutorials' own
# NumPy code. Ratios "vs torch" take the fastest PyTorch setup of each case.
TORCH_SETUPS = {"torch": "eager", "torch-cl": "channels_last", "torch-compile": "compile"}
REFERENCES = (*TORCH_SETUPS, "tutorial")


def is_torch(name) -> bool:
    return name in TORCH_SETUPS


def backend_list(requested=None) -> list[tuple[str, bool, str]]:
    """(name, available, reason) for each requested backend; torch included when importable."""
    from ..torch_ref import torch_available
    names = list(requested or [*(n for n in NAMES if n != "cupy-sim"), *REFERENCES])  # the simulator only by name
    out = []
    for name in names:
        if is_torch(name):
            ok, why = torch_available()
            why = f"{why}, {TORCH_SETUPS[name]}" if ok else why
        elif name == "tutorial":
            ok, why = True, "the seed tutorials' own NumPy training code (float64), epochs of the zoo MLPs only"
        elif name in NAMES:
            ok, why = backend_status(name)
        else:
            raise InvalidArgument(f"unknown backend {name!r}; valid: {', '.join(NAMES)}, {', '.join(REFERENCES)}")
        out.append((name, ok, why))
    return out


def torch_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync_for(name):
    if name == "tutorial":
        return lambda: None
    if is_torch(name):
        import torch
        return torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    return get_backend(name).synchronize


def is_gpu(name) -> bool:
    return name == "cupy" or (is_torch(name) and torch_device() == "cuda")


# ---------------------------------------------------------------- kernel cases

def _rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _layer_shapes(model_name: str, batch: int):
    """Shapes of the first conv, its pool and the first dense layer of a zoo model."""
    m = zoo.create(model_name, backend="numpy")
    from ..layers import Conv2D, Dense, Dropout, MaxPool2D
    shape = m.input_shape
    info = {}
    for layer in m.layers:
        if isinstance(layer, Conv2D) and "conv" not in info:
            info["conv"] = ((batch, *shape), (layer.filters, shape[0], layer.kernel_size, layer.kernel_size),
                            layer.stride, layer.padding)
        if isinstance(layer, MaxPool2D) and "pool" not in info:
            info["pool"] = ((batch, *shape), layer.size, layer.stride)
        if isinstance(layer, Dense) and "dense" not in info:
            info["dense"] = (batch, shape[0], layer.units)
        if isinstance(layer, Dropout) and "dropout" not in info:
            info["dropout"] = (batch, *shape)
        shape = _next(layer, shape)
    return info


def _next(layer, shape):
    from ..torch_ref import _out_shape
    return _out_shape(layer, shape)


def _kernel_case(kernel, model_name, batch):
    """(tag, flops, bytes, inputs, fastmnist_call, torch_call) for one kernel at a model's shapes.

    ``inputs`` are NumPy arrays, moved to the backend once before timing; the calls take the
    backend module (or the torch module) and the moved inputs as keywords.
    """
    info = _layer_shapes(model_name, batch)
    tag = f"{kernel}[{model_name},b{batch}]"
    needs = {"conv2d": "conv", "maxpool2d": "pool"}.get(kernel.split("_")[0])
    if needs and needs not in info:
        return None  # the model has no such layer (an MLP has no convolution)
    if kernel.startswith("conv2d"):
        xs, ws, stride, pad = info["conv"]
        n, c, h, w = xs
        f, _, k, _ = ws
        oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        mac = n * f * oh * ow * c * k * k
        inp = {"x": _rand(xs), "w": _rand(ws, 1) * 0.1, "b": _rand((f,), 2), "dy": _rand((n, f, oh, ow), 3)}
        nbytes = F32 * (inp["x"].size + inp["w"].size + inp["dy"].size)
        if kernel == "conv2d_forward":
            return (tag, 2 * mac, nbytes, inp, lambda be, x, w, b, dy: be.conv2d_forward(x, w, b, stride, pad),
                    lambda t, x, w, b, dy: t.nn.functional.conv2d(x, w, b, stride, pad))
        return (tag, 4 * mac, 2 * nbytes, inp, lambda be, x, w, b, dy: be.conv2d_backward(dy, x, w, stride, pad),
                lambda t, x, w, b, dy: (t.nn.grad.conv2d_input(x.shape, w, dy, stride, pad),
                                        t.nn.grad.conv2d_weight(x, w.shape, dy, stride, pad), dy.sum((0, 2, 3))))
    if kernel.startswith("maxpool2d"):
        xs, size, stride = info["pool"]
        n, c, h, w = xs
        oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
        inp = {"x": _rand(xs), "dy": _rand((n, c, oh, ow), 1)}
        nbytes = F32 * (inp["x"].size + 3 * inp["dy"].size)
        if kernel == "maxpool2d_forward":
            return (tag, n * c * oh * ow * size * size, nbytes, inp,
                    lambda be, x, dy: be.maxpool2d_forward(x, size, stride),
                    lambda t, x, dy: t.nn.functional.max_pool2d(x, size, stride, return_indices=True))
        return (tag, inp["dy"].size, nbytes, inp, _pool_backward_fm(size, stride), _pool_backward_torch(size, stride))
    if kernel.startswith("affine"):
        n, d, m = info["dense"]
        inp = {"x": _rand((n, d)), "w": _rand((d, m), 1) * 0.05, "b": _rand((m,), 2), "dy": _rand((n, m), 3)}
        nbytes = F32 * (n * d + d * m + n * m)
        if kernel == "affine_forward":
            return (tag, 2 * n * d * m, nbytes, inp, lambda be, x, w, b, dy: be.affine_forward(x, w, b),
                    lambda t, x, w, b, dy: t.addmm(b, x, w))
        return (tag, 4 * n * d * m, 2 * nbytes, inp, lambda be, x, w, b, dy: be.affine_backward(dy, x, w),
                lambda t, x, w, b, dy: (dy @ w.T, x.T @ dy, dy.sum(0)))
    if kernel == "relu_forward":  # after the first convolution, or else the first dense layer
        inp = {"x": _rand(info["pool"][0] if "pool" in info else (info["dense"][0], info["dense"][2]))}
        return (tag, inp["x"].size, 2 * F32 * inp["x"].size, inp, lambda be, x: be.relu_forward(x),
                lambda t, x: t.relu(x))
    if kernel == "softmax_cross_entropy":
        inp = {"logits": _rand((batch, 10)), "labels": np.random.default_rng(0).integers(0, 10, batch)}
        return (tag, 5 * batch * 10, F32 * 20 * batch + 8 * batch, inp,
                lambda be, logits, labels: be.softmax_cross_entropy(logits, labels), _torch_softmax_ce)
    if kernel == "dropout_forward":
        if "dropout" not in info:
            return None  # the model has no dropout layer
        inp = {"x": _rand(info["dropout"])}
        return (tag, inp["x"].size, 3 * F32 * inp["x"].size, inp, lambda be, x: be.dropout_forward(x, 0.5, 1),
                lambda t, x: t.nn.functional.dropout(x, 0.5, True))
    if kernel == "adam_update":
        n, d, m = info["dense"]
        inp = {"p": _rand((d, m)), "g": _rand((d, m), 1) * 1e-3, "m": np.zeros((d, m), np.float32),
               "v": np.zeros((d, m), np.float32)}
        return (tag, 12 * d * m, 7 * F32 * d * m, inp, lambda be, p, g, m, v: be.adam_update(p, g, m, v, 1, 1e-3),
                _torch_adam)
    raise InvalidArgument(f"unknown kernel {kernel!r}; valid: {', '.join(KERNELS)}")


def _pool_backward_fm(size, stride):
    cache = {}

    def call(be, x, dy):
        if "arg" not in cache:  # the argmax comes from one forward, outside the timed calls
            cache["arg"] = be.maxpool2d_forward(x, size, stride)[1]
        return be.maxpool2d_backward(dy, cache["arg"], x.shape, size, stride)
    return call


def _pool_backward_torch(size, stride):
    cache = {}

    def call(t, x, dy):
        if "idx" not in cache:
            cache["idx"] = t.nn.functional.max_pool2d(x, size, stride, return_indices=True)[1]
        return t.ops.aten.max_pool2d_with_indices_backward(dy, x, [size, size], [stride, stride], [0, 0], [1, 1],
                                                           False, cache["idx"])
    return call


def _torch_softmax_ce(t, logits, labels):
    p = t.softmax(logits, 1)
    loss = t.nn.functional.cross_entropy(logits, labels)
    p[t.arange(logits.shape[0], device=logits.device), labels] -= 1
    return loss, p / logits.shape[0]


def _torch_adam(t, p, g, m, v):
    # torch's own fused step for one parameter: the optimizer object is built once per input set
    opt = _torch_adam.cache.get(id(p))
    if opt is None:
        param = t.nn.Parameter(p)
        param.grad = g
        opt = _torch_adam.cache[id(p)] = t.optim.Adam([param], lr=1e-3)
    opt.step()


_torch_adam.cache = {}


def kernel_cases(models=DEFAULT_MODELS, kernels=KERNELS, batch_sizes=None, repeat=20) -> list[Case]:
    cases = []
    for model_name in models:
        batch = (batch_sizes or {}).get(model_name) or zoo.recipe(model_name).batch_size
        for kernel in kernels:
            spec = _kernel_case(kernel, model_name, batch)
            if spec is None:
                continue
            tag, flops, nbytes, inputs, fm_call, torch_call = spec
            cases.append(Case(tag, "kernel", model_name, batch, flops, nbytes,
                              _kernel_maker(inputs, fm_call, torch_call), repeat))
    return cases


def _kernel_maker(inputs, fm_call, torch_call):
    def make(name):
        if name == "tutorial" or (is_torch(name) and name != "torch"):  # kernels: eager PyTorch only
            return None
        if name == "torch":
            import torch
            dev = torch_device()
            moved = {k: torch.from_numpy(v).to(dev) for k, v in inputs.items()}
            return (lambda: torch_call(torch, **moved)), _sync_for(name)
        be = get_backend(name)
        moved = {k: be.asarray(v) for k, v in inputs.items()}
        return (lambda: fm_call(be, **moved)), _sync_for(name)
    return make


# ---------------------------------------------------------------- step and epoch cases

def model_flops_per_sample(model_name: str) -> float:
    """Forward + backward FLOPs of one sample (matrix products and convolutions only; the first
    layer's input gradient is not computed)."""
    m = zoo.create(model_name, backend="numpy")
    from ..layers import Conv2D, Dense
    shape, total, first = m.input_shape, 0.0, True
    for layer in m.layers:
        out = _next(layer, shape)
        if isinstance(layer, Conv2D):
            mac = out[0] * out[1] * out[2] * shape[0] * layer.kernel_size ** 2
            total += 2 * mac * (2 if first else 3)
            first = False
        elif isinstance(layer, Dense):
            total += 2 * shape[0] * layer.units * (2 if first else 3)
            first = False
        shape = out
    return total


def training_data_source() -> str:
    """Where the timed images come from: MNIST's directory, or random stand-ins where it is not found.
    It matters: an MNIST image is ~19% ink, and the dense layers of the numba backend skip zero inputs."""
    from ..data import find_data_root, load_raw
    try:
        load_raw()
        return f"MNIST ({find_data_root(None)})"
    except Exception as exc:  # no MNIST here: random data times the same arithmetic, but none of it is zero
        return f"random uniform images, no zeros (MNIST not found: {exc})"


def _training_data(n, flat, seed=0):
    from ..data import load_mnist
    try:
        (x, y), _ = load_mnist(flatten=flat)
        return x[:n], y[:n]
    except Exception:  # no MNIST here: random data times the same work (training_data_source says so)
        rng = np.random.default_rng(seed)
        x = rng.random((n, 784) if flat else (n, 1, 28, 28), dtype=np.float32)
        return x, rng.integers(0, 10, n)


def step_case(model_name, batch, repeat=20) -> Case:
    r = zoo.recipe(model_name)

    def make(name):
        if name == "tutorial":
            return None
        x, y = _training_data(batch, r.flat_input)
        if is_torch(name):
            if name == "torch-cl" and r.flat_input:
                return None
            from ..torch_ref import TorchTrainer
            model = zoo.create(model_name, backend="numpy")
            tt = TorchTrainer(model, r.optimizer, r.lr, torch_device(), r.optimizer_args, setup=TORCH_SETUPS[name])
            xb, yb = tt.tensors(x, y)
            return (lambda: tt.step(xb, yb)), _sync_for(name)
        model = zoo.create(model_name, backend=name)
        be = model.backend
        opt = zoo.fit_args(model_name)["optimizer"].attach(model)
        xb, yb = be.asarray(x), be.asarray(y.astype(np.int64))
        if model.loss == "mse":
            yb = be.one_hot(yb, 10, model.dtype)
        def step():
            out = model.forward(xb, train=True)
            _, d = model.loss_and_grad(out, yb)
            model.backward(d)
            opt.step()
        return step, _sync_for(name)

    flops = model_flops_per_sample(model_name) * batch
    nbytes = F32 * batch * 784
    return Case(f"train_step[{model_name},b{batch}]", "step", model_name, batch, flops, nbytes, make, repeat)


def epoch_case(model_name, batch, samples=60000, repeat=3) -> Case:
    r = zoo.recipe(model_name)

    def make(name):
        x, y = _training_data(samples, r.flat_input)
        if name == "tutorial":
            from ..tutorials import tutorial_epoch
            made = tutorial_epoch(model_name, x, y)
            return None if made is None else (made[0], _sync_for(name))
        if is_torch(name):
            if name == "torch-cl" and r.flat_input:
                return None
            from ..optim import make_schedule
            from ..torch_ref import TorchTrainer
            model = zoo.create(model_name, backend="numpy")
            tt = TorchTrainer(model, r.optimizer, r.lr, torch_device(), r.optimizer_args, setup=TORCH_SETUPS[name])
            xt, yt = tt.tensors(x, y)
            schedule = make_schedule(r.schedule)
            return (lambda: tt.epoch(xt, yt, batch, schedule=schedule)), _sync_for(name)
        model = zoo.create(model_name, backend=name)
        be = model.backend
        xd, yd = be.asarray(x), be.asarray(y.astype(np.int64))

        def epoch():
            model.fit(xd, yd, **zoo.fit_args(model_name, batch_size=batch, epochs=1), verbose=0)
        return epoch, _sync_for(name)

    flops = model_flops_per_sample(model_name) * samples
    return Case(f"epoch[{model_name},b{batch},n{samples}]", "epoch", model_name, batch, flops, F32 * samples * 784,
                make, repeat)


def all_cases(models=DEFAULT_MODELS, kernels=KERNELS, batch_sizes=None, kernels_only=False, epochs_only=False,
              quick=False) -> list[Case]:
    """Every case of a run: kernels at each model's shapes, a training step, and an epoch."""
    cases = []
    rep = 5 if quick else 20
    if not epochs_only:
        cases += kernel_cases(models[:1] if quick else models, kernels, batch_sizes, rep)
    if not kernels_only:
        for model_name in models:
            batch = (batch_sizes or {}).get(model_name) or zoo.recipe(model_name).batch_size
            if not epochs_only:
                cases.append(step_case(model_name, batch, rep))
            cases.append(epoch_case(model_name, batch, 2000 if quick else 60000, 1 if quick else 3))
    return cases


# ---------------------------------------------------------------- timing and ceilings

def time_case(case: Case, backend: str, warmup: int = 2) -> list[float] | None:
    """Seconds per call, ``case.repeat`` times, after ``warmup`` calls; device synchronised inside.
    None where the case does not apply to ``backend`` (the tutorials have epochs of the MLPs only)."""
    made = case.make(backend)
    if made is None:
        return None
    fn, sync = made
    for _ in range(warmup if case.group != "epoch" else 1):
        fn()
    sync()
    times = []
    for _ in range(case.repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def measure_ceilings(quick=False, gpu=False) -> dict:
    """This machine's float32 matmul rate and copy bandwidth (CPU, and the GPU where asked)."""
    out = {}
    n = 1024 if quick else 2048
    a, b = _rand((n, n)), _rand((n, n), 1)
    a @ b
    ts = []
    for _ in range(3 if quick else 5):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    out["cpu_matmul_gflops"] = 2 * n ** 3 / statistics.median(ts) / 1e9
    src = np.ones(16 * 2**20 if quick else 64 * 2**20, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    ts = []
    for _ in range(3 if quick else 5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        ts.append(time.perf_counter() - t0)
    out["cpu_copy_gbs"] = 2 * src.nbytes / statistics.median(ts) / 1e9  # bytes read + written
    if gpu:
        out.update(_gpu_ceilings())
    return out


def _gpu_ceilings() -> dict:
    import cupy as cp
    n = 8192
    a = cp.random.standard_normal((n, n), dtype=cp.float32)
    b = cp.random.standard_normal((n, n), dtype=cp.float32)
    a @ b
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(5):
        a @ b
    end.record()
    end.synchronize()
    gflops = 5 * 2 * n ** 3 / (cp.cuda.get_elapsed_time(start, end) / 1e3) / 1e9
    src = cp.ones(512 * 2**20 // 4, cp.float32)
    dst = cp.empty_like(src)
    dst[...] = src
    start.record()
    for _ in range(10):
        dst[...] = src
    end.record()
    end.synchronize()
    gbs = 10 * 2 * src.nbytes / (cp.cuda.get_elapsed_time(start, end) / 1e3) / 1e9
    return {"gpu_matmul_gflops": gflops, "gpu_copy_gbs": gbs}


def environment() -> dict:
    """What the result file needs to be read later: machine, threads, versions."""
    env = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
           "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "cpu_vector_extensions": cpu_vector_extensions(),
           "numpy": np.__version__}
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "FASTMNIST_BACKEND"):
        if var in os.environ:
            env[var] = os.environ[var]
    try:
        import numba
        env["numba"] = numba.__version__
        env["numba_threads"] = numba.config.NUMBA_NUM_THREADS
        import llvmlite.binding as llvm
        env["numba_target_cpu"] = numba.config.CPU_NAME or llvm.get_host_cpu_name()  # NUMBA_CPU_NAME overrides
    except ImportError:
        pass
    try:
        import cupy
        env["cupy"] = cupy.__version__
        props = cupy.cuda.runtime.getDeviceProperties(0)
        env["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        env["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        env["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    except Exception:  # no cupy or no GPU: the file says so by leaving these out
        pass
    try:
        import torch
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        env["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # ATEN_CPU_CAPABILITY overrides
        if torch.cuda.is_available():
            env["torch_gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return env


VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "amx_tile", "neon", "asimd", "sve")


def cpu_vector_extensions() -> list[str]:
    """The CPU's vector extensions from /proc/cpuinfo (x86 'flags', Arm 'Features'), in a fixed order."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in VECTOR_FLAGS if f in have]
    except OSError:
        pass
    return []


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------- the report

def run(backends=None, models=DEFAULT_MODELS, kernels=KERNELS, batch_sizes=None, kernels_only=False,
        epochs_only=False, quick=False, log=print, isolate=True) -> dict:
    """Time every case on every available backend; returns the report dict (see ``format_table``).

    Each backend runs in a process of its own (``isolate``): thread pools of different libraries
    in one process (Numba's OpenMP, PyTorch's, BLAS's) spin against each other and would distort
    every number after the first backend.
    """
    blist = backend_list(backends)
    usable = [name for name, ok, _ in blist if ok]
    for name, ok, why in blist:
        if not ok:
            log(f"skipping backend {name}: {why}")
    ceilings = measure_ceilings(quick, gpu="cupy" in usable)
    spec = {"models": list(models), "kernels": list(kernels), "batch_sizes": batch_sizes or {},
            "kernels_only": kernels_only, "epochs_only": epochs_only, "quick": quick}
    results = []
    for name in usable:
        rows = _run_isolated(name, spec, log) if isolate else run_backend(name, spec, log)
        for r in rows:
            gpu = r["device"] == "gpu"
            peak = ceilings.get("gpu_matmul_gflops" if gpu else "cpu_matmul_gflops")
            bw = ceilings.get("gpu_copy_gbs" if gpu else "cpu_copy_gbs")
            r["floor_s"] = max(r["flops"] / (peak * 1e9), r["bytes"] / (bw * 1e9)) if peak and bw else None
        results += rows
    order = {c: i for i, c in enumerate(dict.fromkeys(r["case"] for r in results))}
    results.sort(key=lambda r: (order[r["case"]], usable.index(r["backend"])))
    _add_ratios(results)
    data = training_data_source()
    if not data.startswith("MNIST"):
        log(f"note: timing on {data}; set FASTMNIST_DATA or pass --data for MNIST's own sparsity")
    return {"environment": environment(), "data": data, "ceilings": ceilings, "backends": [
        {"name": n, "available": ok, "reason": why} for n, ok, why in blist], "quick": quick, "results": results}


def run_backend(name: str, spec: dict, log=print) -> list[dict]:
    """Time every case of ``spec`` on one backend, in this process, the way fit() runs it."""
    import contextlib
    if is_torch(name):
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        ctx = contextlib.nullcontext()
    elif name == "tutorial":
        ctx = contextlib.nullcontext()
    else:
        ctx = getattr(get_backend(name), "training_context", contextlib.nullcontext)()
    rows = []
    with ctx:
        for case in all_cases(spec["models"], spec["kernels"], spec["batch_sizes"], spec["kernels_only"],
                              spec["epochs_only"], spec["quick"]):
            times = time_case(case, name)
            if times is None:
                continue
            med = statistics.median(times)
            q = np.percentile(times, [25, 75])
            rows.append({"case": case.name, "group": case.group, "model": case.model, "batch_size": case.batch_size,
                         "backend": name, "device": "gpu" if is_gpu(name) else "cpu", "median_s": med,
                         "iqr_s": float(q[1] - q[0]), "times_s": times, "flops": case.flops, "bytes": case.bytes,
                         "gflops": case.flops / med / 1e9, "gbs": case.bytes / med / 1e9})
            log(f"{case.name:48s} {name:6s} {med * 1e3:10.3f} ms")
    return rows


def _run_isolated(name, spec, log) -> list[dict]:
    import json
    import subprocess
    import sys
    env = dict(os.environ)
    if name in REFERENCES:  # PyTorch's OpenMP threads wait as the user's environment says, not as fastmnist's
        from .. import config
        env.pop("OMP_WAIT_POLICY", None)
        if config.USER_OMP_WAIT_POLICY is not None:
            env["OMP_WAIT_POLICY"] = config.USER_OMP_WAIT_POLICY
    proc = subprocess.run([sys.executable, "-m", "fastmnist.bench", name, json.dumps(spec)], capture_output=True,
                          text=True, env=env)
    for line in proc.stderr.splitlines():
        log(line)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker for {name} failed (exit {proc.returncode}); its output is above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _add_ratios(results):
    """``speedup_vs_X``: X's median time over this row's, for X in numpy, torch and tutorial; every
    ratio reads the same way: above 1, this row is that many times faster."""
    by_case = {}
    for r in results:
        by_case.setdefault(r["case"], {})[r["backend"]] = r["median_s"]
    for r in results:
        ref = by_case[r["case"]]
        torch_times = {k: v for k, v in ref.items() if is_torch(k)}
        best = min(torch_times, key=torch_times.get) if torch_times else None
        r["torch_best"] = best  # the fastest PyTorch setup of this case: the reference "vs torch" uses
        r["speedup_vs_torch"] = torch_times[best] / r["median_s"] if best else None
        for other in ("numpy", "tutorial"):
            r[f"speedup_vs_{other}"] = ref[other] / r["median_s"] if other in ref else None


def fastest_lines(results) -> list[str]:
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


def format_table(report: dict) -> str:
    """The comparison table: one row per case and backend."""
    head = (f"{'case':48s} {'backend':13s} {'median':>10s} {'spread':>7s} {'vs numpy':>9s} {'vs torch':>9s} "
            f"{'vs tutor':>9s} {'GFLOP/s':>8s} {'GB/s':>7s} {'x floor':>8s}")
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        fmt = lambda v, spec: format(v, spec) if v is not None else "-"
        xfloor = r["median_s"] / r["floor_s"] if r.get("floor_s") else None
        lines.append(f"{r['case']:48s} {r['backend']:13s} {_fmt_time(r['median_s']):>10s} "
                     f"{100 * r['iqr_s'] / r['median_s']:6.1f}% {fmt(r['speedup_vs_numpy'], '8.2f') + 'x':>9s} "
                     f"{fmt(r.get('speedup_vs_torch'), '8.2f') + 'x':>9s} "
                     f"{fmt(r.get('speedup_vs_tutorial'), '8.2f') + 'x':>9s} {r['gflops']:8.1f} {r['gbs']:7.1f} "
                     f"{fmt(xfloor, '7.1f') + 'x':>8s}")
    env = report.get("environment", {})
    lines.append(f"machine: {env.get('cpu_model', '?')}, {env.get('cpu_count', '?')} cores, vector extensions "
                 f"{' '.join(env.get('cpu_vector_extensions', [])) or '?'}; numba target {env.get('numba_target_cpu', '-')}, "
                 f"PyTorch CPU capability {env.get('torch_cpu_capability', '-')}")
    lines.extend(fastest_lines(report["results"]))
    lines.append(f"data: {report.get('data', '?')}")
    c = report["ceilings"]
    lines.append(f"ceilings: CPU float32 matmul {c['cpu_matmul_gflops']:.0f} GFLOP/s, copy {c['cpu_copy_gbs']:.1f} GB/s"
                 + (f"; GPU matmul {c['gpu_matmul_gflops']:.0f} GFLOP/s, copy {c['gpu_copy_gbs']:.0f} GB/s"
                    if "gpu_matmul_gflops" in c else ""))
    lines.append("spread: interquartile range over the repeats; vs numpy / vs torch / vs tutor(ial): that one's time "
                 "over this time, so above 1 this row is that many times faster (vs torch: the fastest of torch = eager, "
                 "torch-cl = channels_last, torch-compile, for that case); x floor: time over max(FLOPs/matmul rate, "
                 "bytes/copy bandwidth)")
    return "\n".join(lines)


def _fmt_time(s):
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.3f} s"


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


def parse_batch_sizes(text, models) -> dict:
    """``--batch-sizes 64,128`` applies to every model; ``simple-cnn=64,dropout-cnn=128`` per model.
    A size below 1, a non-integer or a model not being timed is an error, never ignored."""
    if not text:
        return {}

    def size(value, where):
        try:
            n = int(value)
        except ValueError:
            raise InvalidArgument(f"--batch-sizes: {where} is not an integer: {value!r}") from None
        if n < 1:
            raise InvalidArgument(f"--batch-sizes: {where} must be >= 1, got {n}")
        return n

    out = {}
    for part in text.split(","):
        if "=" in part:
            k, v = (t.strip() for t in part.split("=", 1))
            if k not in models:
                raise InvalidArgument(f"--batch-sizes: {k!r} is not among the models timed ({', '.join(models)})")
            out[k] = size(v, k)
        else:
            out = {m: size(part.strip(), "a batch size") for m in models}
    return out


__all__ = ["Case", "KERNELS", "all_cases", "format_table", "measure_ceilings", "plot", "run", "time_case"]

