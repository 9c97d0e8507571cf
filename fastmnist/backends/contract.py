"""The kernel contract: which ops a backend has, and the argument checks every backend runs first.

docs/kernels.md is the contract's written source: one row per op of :data:`REQUIRED_OPS` and
:data:`OPTIONAL_OPS` with its shapes and meaning (tests/test_backend_contract.py keeps the two
lists and the page in step). This module holds what code needs: the lists, the capability flags,
:func:`backend_problems` (is a module or object a backend?), and the checks, so that a wrong ndim,
shape, dtype or parameter raises a FastMnistError (also ``ValueError``/``TypeError``) naming the
shapes *before* any kernel runs (in a JIT or CUDA kernel a bad shape would be an out-of-bounds
access, not an error). Layout is NCHW; float32 is the default dtype and float64 is accepted; all
float operands of one call share one dtype.

Two definitions every backend computes with live here too: the counter-based uniform of dropout
(:func:`dropout_uniform_reference`) and the blur's taps (:func:`blur_taps`).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..errors import InvalidArgument, WrongType

FLOAT_DTYPES = (np.dtype("float32"), np.dtype("float64"))

# ---- what a backend module declares: the ops every one has, the optional ones, capabilities ----

#: Every backend module exports these, with numpy_backend's parameters (extra ones must have defaults).
REQUIRED_OPS = (
    "im2col", "col2im", "conv2d_forward", "conv2d_backward", "conv2d_forward_cached", "conv2d_backward_cached",
    "conv2d_relu_maxpool_forward", "conv2d_relu_maxpool_backward", "maxpool2d_forward", "maxpool2d_backward",
    "affine_forward", "affine_backward", "relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
    "softmax", "softmax_cross_entropy", "count_correct", "mse_loss", "dropout_forward", "dropout_backward",
    "affine_warp", "elastic_warp", "stroke_width", "gaussian_blur",
    "sgd_update", "momentum_update", "adagrad_update", "adam_update",
    "asarray", "to_numpy", "one_hot", "synchronize", "available", "info",
)
#: Used where present: whole compiled steps, Adam over every parameter in one launch, a context the
#: trainer holds around its epochs, the seconds spent compiling kernels so far.
OPTIONAL_OPS = ("dense_train_steps", "adam_update_many", "training_context", "compile_seconds", "capture_step")
#: Declared flags and their defaults: data lives on a device (host reads are syncs); kernels are
#: compiled at first use (the CLI times a warm-up step apart); the device is simulated on the CPU
#: (a test backend: never chosen by auto, timed as CPU work, no GPU workers in a sweep).
CAPABILITIES = {"is_device": False, "compiles_kernels": False, "is_simulator": False}


def backend_problems(module, reference) -> list[str]:
    """What keeps ``module`` from being a backend: missing ops, parameters that differ from the
    ``reference`` backend's (numpy's), capability flags that are not bools, a missing ``name``."""
    import inspect
    problems = []
    if not isinstance(getattr(module, "name", None), str):
        problems.append("no 'name' string")
    for flag in CAPABILITIES:
        if not isinstance(getattr(module, flag, False), bool):
            problems.append(f"capability {flag!r} is {getattr(module, flag)!r}, not a bool")
    for op in REQUIRED_OPS + OPTIONAL_OPS:
        fn = getattr(module, op, None)
        if fn is None:
            if op in REQUIRED_OPS:
                problems.append(f"no op {op!r}")
            continue
        if not callable(fn):
            problems.append(f"{op!r} is not callable")
            continue
        ref = getattr(reference, op, None)
        if ref is None or ref is fn:
            continue
        want = list(inspect.signature(ref).parameters.values())
        have = list(inspect.signature(fn).parameters.values())
        names = [p.name for p in have[:len(want)]]
        if names != [p.name for p in want] or any(p.default is inspect.Parameter.empty for p in have[len(want):]):
            problems.append(f"{op}{inspect.signature(fn)} does not take {op}{inspect.signature(ref)} "
                            "(extra parameters need defaults)")
    return problems


def _shape(a):
    return tuple(getattr(a, "shape", ()))


def require_array(op: str, name: str, a, ndim: int | None = None) -> None:
    """Raise TypeError unless ``a`` is an array (numpy or the backend's) of the given ndim."""
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise WrongType(f"{op}: {name} must be an array, got {type(a).__name__}")
    if ndim is not None and a.ndim != ndim:
        raise InvalidArgument(f"{op}: {name} must be {ndim}-D, got shape {_shape(a)} ({a.ndim}-D)")


def _dtype(a) -> np.dtype:
    dt = a.dtype
    return dt if isinstance(dt, np.dtype) else np.dtype(dt)  # np.dtype() of a dtype costs a call per array


def require_float(op: str, **arrays) -> np.dtype:
    """All arrays float32 or float64, one dtype; returns it."""
    first = None
    for name, a in arrays.items():
        require_array(op, name, a)
        dt = _dtype(a)
        if dt not in FLOAT_DTYPES:
            raise WrongType(f"{op}: {name} has dtype {a.dtype}; expected float32 or float64")
        if first is None:
            first = dt
        elif dt != first:
            listing = ", ".join(f"{k}={_dtype(v)}" for k, v in arrays.items())
            raise WrongType(f"{op}: operands must share one dtype, got {listing}")
    return first


def require_nonempty(op: str, name: str, a) -> None:
    if a.size == 0:
        raise InvalidArgument(f"{op}: {name} is empty (shape {_shape(a)})")


def require_int(op: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise WrongType(f"{op}: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidArgument(f"{op}: {name} must be >= {minimum}, got {value}")
    return int(value)


def require_number(op: str, name: str, value, low=None, high=None, low_open=False, high_open=False) -> float:
    # a Python float first: the ABC check and np.isfinite took most of an optimizer step's checks
    if not (math.isfinite(value) if type(value) is float else
            not isinstance(value, bool) and isinstance(value, numbers.Real) and np.isfinite(value)):
        raise WrongType(f"{op}: {name} must be a finite real number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise InvalidArgument(f"{op}: {name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise InvalidArgument(f"{op}: {name} must be {'<' if high_open else '<='} {high}, got {value}")
    return float(value)


def same_shape(op: str, a_name: str, a, b_name: str, b) -> None:
    if _shape(a) != _shape(b):
        raise InvalidArgument(f"{op}: {a_name} has shape {_shape(a)} but {b_name} has shape {_shape(b)}; they must match")


def conv_out(op: str, size: int, k: int, stride: int, pad: int, axis: str) -> int:
    out = (size + 2 * pad - k) // stride + 1
    if size + 2 * pad < k:
        raise InvalidArgument(f"{op}: kernel {axis}={k} is larger than the padded input {axis}={size}+2*{pad}")
    return out


# ---- per-op checks: each returns the sizes the kernel needs ----

def check_im2col(x, kh, kw, stride, pad, op="im2col"):
    require_array(op, "x", x, 4)
    require_float(op, x=x)
    require_nonempty(op, "x", x)
    kh = require_int(op, "kh", kh, 1)
    kw = require_int(op, "kw", kw, 1)
    stride = require_int(op, "stride", stride, 1)
    pad = require_int(op, "pad", pad, 0)
    n, c, h, w = x.shape
    oh = conv_out(op, h, kh, stride, pad, "height")
    ow = conv_out(op, w, kw, stride, pad, "width")
    return n, c, h, w, oh, ow


def check_col2im(col, x_shape, kh, kw, stride, pad):
    op = "col2im"
    require_array(op, "col", col, 2)
    require_float(op, col=col)
    if len(tuple(x_shape)) != 4 or any(not isinstance(s, numbers.Integral) or s < 1 for s in x_shape):
        raise InvalidArgument(f"{op}: x_shape must be 4 positive integers (N, C, H, W), got {tuple(x_shape)}")
    n, c, h, w = (int(s) for s in x_shape)
    kh = require_int(op, "kh", kh, 1)
    kw = require_int(op, "kw", kw, 1)
    stride = require_int(op, "stride", stride, 1)
    pad = require_int(op, "pad", pad, 0)
    oh = conv_out(op, h, kh, stride, pad, "height")
    ow = conv_out(op, w, kw, stride, pad, "width")
    want = (n * oh * ow, c * kh * kw)
    if _shape(col) != want:
        raise InvalidArgument(f"{op}: col has shape {_shape(col)}; for x_shape {(n, c, h, w)}, kernel {kh}x{kw}, "
                              f"stride {stride}, pad {pad} expected {want}")
    return n, c, h, w, oh, ow


def check_conv2d_forward(x, w, b, stride, pad):
    op = "conv2d_forward"
    require_array(op, "x", x, 4)
    require_array(op, "w", w, 4)
    require_array(op, "b", b, 1)
    require_float(op, x=x, w=w, b=b)
    require_nonempty(op, "x", x)
    require_nonempty(op, "w", w)
    if w.shape[1] != x.shape[1]:
        raise InvalidArgument(f"{op}: w has shape {_shape(w)} (F, C, KH, KW) with C={w.shape[1]}, "
                              f"but x has shape {_shape(x)} with C={x.shape[1]}")
    if b.shape[0] != w.shape[0]:
        raise InvalidArgument(f"{op}: b has shape {_shape(b)}; expected ({w.shape[0]},) for w of shape {_shape(w)}")
    return check_im2col(x, w.shape[2], w.shape[3], stride, pad, op)


def check_conv2d_backward(dy, x, w, stride, pad):
    op = "conv2d_backward"
    require_array(op, "dy", dy, 4)
    require_array(op, "x", x, 4)
    require_array(op, "w", w, 4)
    require_float(op, dy=dy, x=x, w=w)
    if w.shape[1] != x.shape[1]:
        raise InvalidArgument(f"{op}: w has shape {_shape(w)} but x has shape {_shape(x)}: channel counts differ")
    n, c, h, wd, oh, ow = check_im2col(x, w.shape[2], w.shape[3], stride, pad, op)
    want = (n, w.shape[0], oh, ow)
    if _shape(dy) != want:
        raise InvalidArgument(f"{op}: dy has shape {_shape(dy)}; expected {want} for x {_shape(x)} and w {_shape(w)}")
    return n, c, h, wd, oh, ow


def check_maxpool2d_forward(x, size, stride):
    op = "maxpool2d_forward"
    require_array(op, "x", x, 4)
    require_float(op, x=x)
    require_nonempty(op, "x", x)
    size = require_int(op, "size", size, 1)
    stride = require_int(op, "stride", stride, 1)
    n, c, h, w = x.shape
    return n, c, h, w, conv_out(op, h, size, stride, 0, "height"), conv_out(op, w, size, stride, 0, "width")


def check_maxpool2d_backward(dy, argmax, x_shape, size, stride):
    op = "maxpool2d_backward"
    require_array(op, "dy", dy, 4)
    require_array(op, "argmax", argmax, 4)
    require_float(op, dy=dy)
    if np.dtype(argmax.dtype).kind not in "iu":
        raise WrongType(f"{op}: argmax has dtype {argmax.dtype}; expected an integer dtype")
    if len(tuple(x_shape)) != 4 or any(not isinstance(s, numbers.Integral) or s < 1 for s in x_shape):
        raise InvalidArgument(f"{op}: x_shape must be 4 positive integers (N, C, H, W), got {tuple(x_shape)}")
    n, c, h, w = (int(s) for s in x_shape)
    size = require_int(op, "size", size, 1)
    stride = require_int(op, "stride", stride, 1)
    want = (n, c, conv_out(op, h, size, stride, 0, "height"), conv_out(op, w, size, stride, 0, "width"))
    if _shape(dy) != want or _shape(argmax) != want:
        raise InvalidArgument(f"{op}: dy {_shape(dy)} and argmax {_shape(argmax)} must both be {want} "
                              f"for x_shape {(n, c, h, w)}, size {size}, stride {stride}")
    return n, c, h, w


def check_argmax_range(argmax, h, w, lo, hi):
    """Indices must lie in the (H, W) plane; a JIT kernel would otherwise write out of bounds."""
    if argmax.size and (lo < 0 or hi >= h * w):
        raise InvalidArgument(f"maxpool2d_backward: argmax values span {lo}..{hi}; expected 0..{h * w - 1} "
                              f"(flat indices into an {h}x{w} plane)")


def check_affine_forward(x, w, b):
    op = "affine_forward"
    require_array(op, "x", x, 2)
    require_array(op, "w", w, 2)
    require_array(op, "b", b, 1)
    require_float(op, x=x, w=w, b=b)
    require_nonempty(op, "x", x)
    if x.shape[1] != w.shape[0] or b.shape[0] != w.shape[1]:
        raise InvalidArgument(f"{op}: shapes x {_shape(x)}, w {_shape(w)}, b {_shape(b)} do not fit "
                              "x (N, D) @ w (D, M) + b (M,)")


def check_affine_backward(dy, x, w):
    op = "affine_backward"
    require_array(op, "dy", dy, 2)
    require_array(op, "x", x, 2)
    require_array(op, "w", w, 2)
    require_float(op, dy=dy, x=x, w=w)
    if x.shape[1] != w.shape[0] or dy.shape != (x.shape[0], w.shape[1]):
        raise InvalidArgument(f"{op}: shapes dy {_shape(dy)}, x {_shape(x)}, w {_shape(w)} do not fit "
                              "dy (N, M), x (N, D), w (D, M)")


def check_unary(op, x):
    require_float(op, x=x)


def check_unary_backward(op, dy, y, y_name="x"):
    require_float(op, dy=dy, **{y_name: y})
    same_shape(op, "dy", dy, y_name, y)


def check_softmax(x):
    require_array("softmax", "x", x, 2)
    require_float("softmax", x=x)
    require_nonempty("softmax", "x", x)


def _check_logits_and_labels(op, logits, labels):
    require_array(op, "logits", logits, 2)
    require_float(op, logits=logits)
    require_array(op, "labels", labels, 1)
    if np.dtype(labels.dtype).kind not in "iu":
        raise WrongType(f"{op}: labels have dtype {labels.dtype}; expected integer class indices")
    if labels.shape[0] != logits.shape[0]:
        raise InvalidArgument(f"{op}: labels have shape {_shape(labels)} but logits {_shape(logits)}: "
                              "one label per row expected")


def check_softmax_cross_entropy(logits, labels):
    _check_logits_and_labels("softmax_cross_entropy", logits, labels)
    require_nonempty("softmax_cross_entropy", "logits", logits)


def check_label_range(op, lo, hi, m):
    if lo < 0 or hi >= m:
        raise InvalidArgument(f"{op}: labels span {lo}..{hi}; expected class indices in 0..{m - 1}")


def check_mse(y, t):
    op = "mse_loss"
    require_array(op, "y", y, 2)
    require_float(op, y=y, t=t)
    require_nonempty(op, "y", y)
    same_shape(op, "y", y, "t", t)


def check_dropout(x, p, seed):
    op = "dropout_forward"
    require_float(op, x=x)
    require_number(op, "p", p, 0.0, 1.0, high_open=True)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise WrongType(f"{op}: seed must be an integer in [0, 2**63), got {seed!r}")


def check_update(op, param, grad, lr, **state):
    require_number(op, "lr", lr)
    _check_update_arrays(op, param, grad, state)


def _check_update_arrays(op, param, grad, state):
    """check_update's checks of the arrays: float, one dtype, one shape, param and state writeable."""
    require_float(op, param=param, grad=grad, **state)
    shape = param.shape
    for name, a in (("grad", grad), *state.items()):
        if a.shape != shape:
            same_shape(op, "param", param, name, a)
    for name, a in (("param", param), *state.items()):
        flags = getattr(a, "flags", None)
        if flags is not None and not getattr(flags, "writeable", True):
            raise InvalidArgument(f"{op}: {name} is read-only; updates are in place")


def check_update_many(op, params, grads, states, slots, lr):
    """One optimizer step over many parameters: matching lists, each entry as check_update wants."""
    if not isinstance(params, (list, tuple)) or not params:
        raise WrongType(f"{op}: params must be a non-empty list of arrays, got {type(params).__name__}")
    if len(grads) != len(params) or len(states) != len(params):
        raise InvalidArgument(f"{op}: {len(params)} params, {len(grads)} grads and {len(states)} states; they must match")
    require_number(op, "lr", lr)
    dtype = None
    for k, (param, grad, state) in enumerate(zip(params, grads, states)):
        missing = [s for s in slots if s not in state]
        if missing:
            raise InvalidArgument(f"{op}: states[{k}] lacks {', '.join(missing)}")
        _check_update_arrays(f"{op}: parameter {k}", param, grad, {s: state[s] for s in slots})
        if dtype is not None and _dtype(param) != dtype:
            raise WrongType(f"{op}: parameter {k} has dtype {param.dtype}, parameter 0 {dtype}; one dtype for all")
        dtype = _dtype(param)


def check_count_correct(logits, labels):
    _check_logits_and_labels("count_correct", logits, labels)


def adam_corrections(lr, t, beta1, beta2):
    """Adam's bias corrections at step ``t`` (from 1), in float64: ``(lr / (1 - beta1**t),
    sqrt(1 - beta2**t))``. One formula for every backend's adam_update and the compiled steps."""
    return lr / (1 - beta1 ** t), math.sqrt(1 - beta2 ** t)


# ---- whole training steps of a dense network (fastmnist.steps.StepProgram) ----

OP_DENSE, OP_SIGMOID, OP_RELU, OP_DROPOUT = 0, 1, 2, 3
LOSS_SOFTMAX_CE, LOSS_MSE = 0, 1
OPT_SGD, OPT_MOMENTUM, OPT_ADAGRAD, OPT_ADAM = 0, 1, 2, 3


def check_dense_train_steps(program, xs, targets, labels, perm, first, batch_size, lrs, step_size, sqrt_bc2, seeds):
    """``dense_train_steps`` runs ``len(lrs)`` steps from step ``first`` of an epoch: step ``s``
    trains on rows ``perm[s*batch_size : (s+1)*batch_size]`` of ``xs`` (the last batch may be
    short), with learning rate ``lrs[k]``, Adam's ``step_size[k]`` (lr / (1 - beta1**t)) and
    ``sqrt_bc2[k]`` (sqrt(1 - beta2**t)), and dropout seeds ``seeds[k]``. It returns, for each step
    done, its mean loss times its batch's size (float64, ``(done,)``) and its count of correct
    predictions (int64, ``(done,)``), then the number of steps done, and the loss of the step that
    stopped the chunk because it was not finite (else None)."""
    op = "dense_train_steps"
    dtype = require_float(op, xs=xs, **{f"weights[{i}]": w for i, w in enumerate(program.weights)})
    require_array(op, "xs", xs, 2)
    n, d = xs.shape
    if d != int(program.widths[0]):
        raise InvalidArgument(f"{op}: xs has {d} features per sample; the program's first layer takes {int(program.widths[0])}")
    require_array(op, "labels", labels, 1)
    require_array(op, "perm", perm, 1)
    if labels.shape[0] != n or perm.shape[0] != n:
        raise InvalidArgument(f"{op}: xs has {n} rows, labels {labels.shape[0]}, perm {perm.shape[0]}; they must match")
    for name, a in (("labels", labels), ("perm", perm)):
        if np.dtype(a.dtype) != np.int64:
            raise WrongType(f"{op}: {name} must be int64, got {a.dtype}")
    if program.loss == LOSS_MSE:
        require_array(op, "targets", targets, 2)
        if targets.shape != (n, int(program.widths[-1])) or np.dtype(targets.dtype) != dtype:
            raise InvalidArgument(f"{op}: mse targets must be {dtype} {(n, int(program.widths[-1]))}, "
                                  f"got {targets.dtype} {tuple(targets.shape)}")
    batch_size = require_int(op, "batch_size", batch_size, 1)
    steps = -(-n // batch_size)
    count = len(lrs)
    first = require_int(op, "first", first, 0)
    if first + count > steps:
        raise InvalidArgument(f"{op}: steps {first}..{first + count - 1} asked; an epoch of {n} samples in batches "
                              f"of {batch_size} has {steps}")
    for name, a in (("step_size", step_size), ("sqrt_bc2", sqrt_bc2)):
        if len(a) != count:
            raise InvalidArgument(f"{op}: {name} has {len(a)} entries; lrs has {count}")
    if seeds.shape != (count, program.n_dropout):
        raise InvalidArgument(f"{op}: seeds must be ({count}, {program.n_dropout}), got {tuple(seeds.shape)}")
    return n, batch_size, count


def check_affine_warp(x, theta, op="affine_warp"):
    """x (N, C, H, W) float, theta (N, 2, 3) float64 (host or backend array) -> (N, C, H, W)."""
    require_array(op, "x", x, 4)
    require_float(op, x=x)
    require_nonempty(op, "x", x)
    require_array(op, "theta", theta, 3)
    if tuple(theta.shape) != (x.shape[0], 2, 3):
        raise InvalidArgument(f"{op}: theta must be ({x.shape[0]}, 2, 3) for {x.shape[0]} samples, got {_shape(theta)}")
    if np.dtype(theta.dtype) != np.float64:
        raise WrongType(f"{op}: theta has dtype {theta.dtype}; expected float64 (coordinates are float64 everywhere)")
    return x.shape


def check_elastic_warp(x, grid, op="elastic_warp"):
    """x (N, C, H, W) float, grid (N, 2, GH, GW) float64 with GH, GW >= 2 (host or backend array)."""
    require_array(op, "x", x, 4)
    require_float(op, x=x)
    require_nonempty(op, "x", x)
    require_array(op, "grid", grid, 4)
    if tuple(grid.shape[:2]) != (x.shape[0], 2) or min(grid.shape[2:]) < 2:
        raise InvalidArgument(f"{op}: grid must be ({x.shape[0]}, 2, GH, GW) with GH, GW >= 2 for "
                              f"{x.shape[0]} samples, got {_shape(grid)}")
    if np.dtype(grid.dtype) != np.float64:
        raise WrongType(f"{op}: grid has dtype {grid.dtype}; expected float64 (coordinates are float64 everywhere)")
    return x.shape


def check_per_sample(op, x, values, name, low, high):
    """x (N, C, H, W) float, ``values`` (N,) float64 (host or backend array) in [low, high]; the
    range is checked where the values are on the host (a device array is not read back)."""
    require_array(op, "x", x, 4)
    require_float(op, x=x)
    require_nonempty(op, "x", x)
    require_array(op, name, values, 1)
    if tuple(values.shape) != (x.shape[0],):
        raise InvalidArgument(f"{op}: {name} must be ({x.shape[0]},) for {x.shape[0]} samples, got {_shape(values)}")
    if np.dtype(values.dtype) != np.float64:
        raise WrongType(f"{op}: {name} has dtype {values.dtype}; expected float64")
    if isinstance(values, np.ndarray) and not (np.all(values >= low) and np.all(values <= high)):
        bad = values[~((values >= low) & (values <= high))][0]
        raise InvalidArgument(f"{op}: every {name} must be in [{low}, {high}], got {bad!r}")
    return x.shape


#: gaussian_blur's taps reach this many pixels each side; sigma at most MAX_BLUR_SIGMA, where the
#: cut tails hold under 3% of the weight (a stroke blurred by 1.5 px, the widest the photos show)
BLUR_RADIUS = 3
MAX_BLUR_SIGMA = 2.0


def blur_taps(sigma, xp=np):
    """sigma (N,) float64 -> (N, 2*BLUR_RADIUS + 1) float64: exp(-k^2 / (2 sigma^2)) for k in
    -R..R, normalised to sum 1; sigma 0 gives the identity tap. Every backend blurs with these
    (``xp``: the array module sigma lives in, so a device array stays on its device)."""
    sigma = xp.asarray(sigma, dtype=xp.float64)
    k = xp.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=xp.float64)
    safe = xp.where(sigma > 0, sigma, 1.0)[:, None]
    taps = xp.where(sigma[:, None] > 0, xp.exp(-0.5 * (k / safe) ** 2), (k == 0).astype(xp.float64))  # no underflow to 0/0
    return taps / taps.sum(axis=1, keepdims=True)


# ---- the counter-based RNG shared by every backend's dropout ----

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def dropout_uniform_reference(seed: int, n: int, xp=np) -> np.ndarray:
    """Uniform floats in [0, 1) for elements 0..n-1: splitmix64 of ``seed * golden + i + 1``.

    24-bit resolution, so the values are exact in float32 and every backend draws the same ones.
    """
    with np.errstate(over="ignore"):
        z = xp.arange(1, n + 1, dtype=xp.uint64) + xp.uint64(np.uint64(seed) * _GOLDEN)
        z = (z ^ (z >> xp.uint64(30))) * _M1
        z = (z ^ (z >> xp.uint64(27))) * _M2
        z = z ^ (z >> xp.uint64(31))
    return (z >> xp.uint64(40)).astype(xp.float64) * (1.0 / (1 << 24))
