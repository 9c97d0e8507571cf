"""Issue 18's per-pass goals, measured: each convolution pass against the matmul ceiling, each
dense product against the faster of OpenBLAS (NumPy) and MKL (PyTorch) for its shape.

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/pass_goals.py [--steps 40] [--models fast-cnn,...]

For every zoo CNN at its recipe's batch, a training step on numba is timed per plan node, where
fit() calls it (inside the training context, random MNIST batches, after 5 warm-up steps), as
``step_profile.py`` does. Each node's useful FLOPs (2 per multiply-add of the plain convolution
or product; a Winograd or pooled-side pass gets no credit for the work it skips) over its time
give its rate:

* a fused conv -> ReLU -> pool node, forward and backward (dW, plus dX where the layer needs it),
  against ``measure_ceilings``' float32 matmul rate (2048^3 on every core); goal >= 35%;
* a dense node's forward and backward against the same products (x @ w; x.T @ dy and dy @ w.T)
  on NumPy's OpenBLAS and PyTorch's MKL, the fastest of them per pass; goal >= 85%. Two readings:
  "in place", the node's forward and backward replaced by the library's products (plus the bias
  add and the bias gradient, as the node does) in the same training run, that node alone, each
  library on one thread and on every core, numba and the references taking turns in blocks of
  steps; and "alone", each product timed by itself in a loop, every core.

The "in place" reading is the one the goal is judged on: a step runs its products on caches that
the convolutions before them have filled with other data, and on a VM whose idle vCPUs come back
cold, where a loop runs them hot (fast-cnn's 256x256 @ 256x10 on a 2-core Zen 4, the same
single-threaded OpenBLAS call: 54 us in its place in the step, 24 us called again at once;
benchmarks/dense_cold.py shows the same for the 800 -> 256 layer). "Alone" is printed beside it.
Every time is a median over the steps; the ceiling is the best of three readings (a low reading,
on a busy host, would flatter every share). One run, one machine: the CPU is printed first.
"""
import argparse
import collections
import contextlib
import importlib.util
import os
import statistics
import time

import numpy as np

import fastmnist
from fastmnist import zoo
from fastmnist.bench.machine import environment, measure_ceilings, median_seconds
from fastmnist.layers import ConvReLUPool, Dense

CONV_GOAL, DENSE_GOAL = 0.35, 0.85
# before each block of profile()'s steps: OpenBLAS's idle threads spin for up to ~0.1 s
SETTLE_SECONDS, WARM_STEPS = 0.3, 3


def _node_flops(node, x_shape):
    """(forward, backward) useful FLOPs of one plan node for an input of ``x_shape``; None where
    the node does no products."""
    if isinstance(node, ConvReLUPool):
        f, c, kh, kw = node.conv.params["w"].shape
        n, _, h, w = x_shape
        oh, ow = node.conv.output_hw(h, w)
        one = 2 * n * oh * ow * f * c * kh * kw
        return one, one * (2 if node.conv.need_dx else 1)
    if isinstance(node, Dense):
        d, m = node.params["w"].shape
        one = 2 * x_shape[0] * d * m
        return one, one * (2 if node.need_dx else 1)
    return None


def _dense_alone(n, d, m, need_dx):
    """Seconds of the dense products alone, forward and backward, the faster library per product."""
    rng = np.random.default_rng(0)
    x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in ((n, d), (d, m), (n, m)))
    products = {"forward": [(x, w)], "backward": [(x.T.copy(), dy)] + ([(dy, w.T.copy())] if need_dx else [])}
    try:
        import torch
    except ImportError:
        torch = None
    out, libs = {}, {}
    for kind, pairs in products.items():
        total, names = 0.0, []
        for a, b in pairs:
            best = (median_seconds(lambda: a @ b, 30), "OpenBLAS")  # noqa: B023
            if torch is not None:
                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                best = min(best, (median_seconds(lambda: torch.mm(ta, tb), 30), "MKL"))  # noqa: B023
            total += best[0]
            names.append(best[1])
        out[kind], libs[kind] = total, "+".join(names)
    return out, libs


def _library_product(library):
    """a @ b on ``library``: "OpenBLAS" (NumPy) or "MKL" (PyTorch, on the same memory)."""
    if library == "OpenBLAS":
        return np.matmul
    import torch

    return lambda a, b: torch.mm(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def _library_threads(library, threads):
    """A context running ``library`` on ``threads`` threads (inside training_context NumPy's BLAS
    is held to one)."""
    if library == "OpenBLAS":
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=threads, user_api="blas")
    import torch

    @contextlib.contextmanager
    def torch_threads():
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    return torch_threads()


def _library_dense(node, library):
    """(forward, backward) of a Dense node computed on ``library``, as the node computes them."""
    mm = _library_product(library)

    def forward(x, train):
        node.x = x
        out = mm(x, node.params["w"])
        out += node.params["b"]
        return out

    def backward(dy):
        x, node.x = node.x, None
        node.grads["w"], node.grads["b"] = mm(x.T, dy), dy.sum(axis=0)
        return mm(dy, node.params["w"].T) if node.need_dx else None

    return forward, backward


def library_variants():
    """The references a dense pass is set against in place: (library, threads) for OpenBLAS and,
    where PyTorch is installed, MKL, each on one thread and on every core."""
    libraries = ["OpenBLAS"] + (["MKL"] if importlib.util.find_spec("torch") else [])
    return [(lib, t) for lib in libraries for t in sorted({1, os.cpu_count() or 1})]


def dense_variants(name, references):
    """(library, threads, node index) for each of ``references`` and each Dense node of ``name``'s
    plan: one node on the library at a time, the rest of the step as numba runs it."""
    plan = zoo.create(name, backend=fastmnist.get_backend("numba"), seed=0).plan
    return [(*ref, i) for i, node in enumerate(plan) if isinstance(node, Dense) for ref in references]


def profile(name, steps, variants=(), rounds=4):
    """Per node: (label, node, input shape, {variant: {"forward": s, "backward": s}}), medians over
    ``steps`` steps per variant. Variant None is the numba backend as fit() runs it; each (library,
    threads, i) of ``variants`` runs the Dense node i on that library (_library_dense) and the rest
    as numba does. The variants take turns in ``rounds`` blocks of steps, so that a busy moment of the
    host falls on all of them alike (one after the other, a reading moved 2x between them); each
    block starts after SETTLE_SECONDS asleep and WARM_STEPS untimed steps, so that the threads a
    library left spinning are asleep (turns step by step slowed numba's conv2 backward 2.7x)."""
    be = fastmnist.get_backend("numba")
    model = zoo.create(name, backend=be, seed=0)
    batch = zoo.fit_args(name)["batch_size"]
    opt = zoo.fit_args(name)["optimizer"].attach(model)
    (x, y), _ = fastmnist.load_mnist(flatten=zoo.recipe(name).flat_input)
    variants = [None, *variants]
    times = collections.defaultdict(list)
    shapes, current, recording = {}, [None], [False]

    def timed(i, node):
        own = {"forward": node.forward, "backward": node.backward}
        on = {v: dict(zip(("forward", "backward"), _library_dense(node, v[0]))) for v in variants
              if v is not None and v[2] == i}

        def make(kind):
            def run(arg, *more):
                if kind == "forward":
                    shapes[i] = arg.shape
                fn = on[current[0]][kind] if current[0] in on else own[kind]
                t = time.perf_counter()
                result = fn(arg, *more)
                if recording[0]:
                    times[(current[0], i, kind)].append(time.perf_counter() - t)
                return result
            return run

        node.forward, node.backward = make("forward"), make("backward")

    for i, node in enumerate(model.plan):
        timed(i, node)
    rng = np.random.default_rng(0)

    def step():
        idx = rng.integers(0, len(x), batch)
        out = model.forward(x[idx], train=True)
        _, d = model.loss_and_grad(out, y[idx].astype(np.int64))
        model.backward(d)
        opt.step()

    with be.training_context():
        for _ in range(rounds):
            for v in variants:
                current[0] = v
                with (_library_threads(*v[:2]) if v else contextlib.nullcontext()):
                    time.sleep(SETTLE_SECONDS)
                    recording[0] = False
                    for _ in range(WARM_STEPS):
                        step()
                    recording[0] = True
                    for _ in range(steps // rounds):
                        step()
    rows = []
    for i, node in enumerate(model.plan):
        layer = getattr(node, "conv", node)
        label = f"{type(node).__name__}{tuple(layer.params['w'].shape) if 'w' in getattr(layer, 'params', {}) else ''}"
        sec = {v: {k: statistics.median(times[(v, i, k)]) for k in ("forward", "backward")}
               for v in variants if v is None or v[2] == i}
        rows.append((label, node, shapes[i], sec))
    return batch, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--models", default="fast-cnn,simple-cnn,dropout-cnn")
    args = parser.parse_args()
    env = environment()
    print(f"# {env['cpu_model']}, {env['cpu_count']} cores, {env['cpu_vector_extensions']}; "
          f"numba target {env.get('numba_target_cpu')}")
    # every model's step (with its in-place references) first, then the references alone and the
    # ceiling: BLAS and PyTorch run on all cores there, and their threads slowed the next model's
    # step (simple-cnn's dense backward 2.6 ms after fast-cnn's references against 1.3 ms alone,
    # on a 2-core Zen 4)
    names = args.models.split(",")
    profiles = {name: profile(name, args.steps, dense_variants(name, library_variants())) for name in names}
    ceiling = max(measure_ceilings()["cpu_matmul_gflops"] for _ in range(3))
    print(f"# float32 matmul ceiling {ceiling:.0f} GFLOP/s (the best of three readings); conv goal >= "
          f"{CONV_GOAL:.0%} of it = {CONV_GOAL * ceiling:.0f} GFLOP/s; dense goal >= {DENSE_GOAL:.0%} of "
          "the fastest library in place (library/threads), its share alone after it")
    misses = 0
    for name, (batch, rows) in profiles.items():
        print(f"\n{name} (batch {batch}), ms per step (medians); GFLOP/s; against the goal")
        for label, node, shape, by_variant in rows:
            sec = by_variant[None]
            flops = _node_flops(node, shape)
            if flops is None:
                continue
            alone, libs = (_dense_alone(shape[0], *node.params["w"].shape, node.need_dx)
                           if isinstance(node, Dense) else (None, None))
            for k, kind in enumerate(("forward", "backward")):
                rate = flops[k] / sec[kind] / 1e9
                if alone is None:
                    share, goal, against = rate / ceiling, CONV_GOAL, "of the ceiling"
                else:
                    ref, lib = min((t[kind], f"{v[0]}/{v[1]}") for v, t in by_variant.items() if v is not None)
                    share, goal = ref / sec[kind], DENSE_GOAL
                    against = (f"of {lib} in place ({1e3 * ref:.3f} ms); {alone[kind] / sec[kind]:.0%} of "
                               f"{libs[kind]} alone ({flops[k] / alone[kind] / 1e9:.0f} GFLOP/s)")
                ok = share >= goal
                misses += not ok
                print(f"  {label:28s} {kind:8s} {1e3 * sec[kind]:7.3f} ms {rate:6.0f} GFLOP/s  "
                      f"{share:6.0%} {against}  {'met' if ok else 'NOT met'}")
    print(f"\n{misses} pass(es) short of the goal")


if __name__ == "__main__":
    main()
