"""``Sequential``: a stack of layers plus a loss, on one backend; ``save``/``load`` as plain npz.

A model file is one ``.npz`` holding the architecture as JSON (a string array) and the weights,
and optionally the optimizer state and trainer state; it is read with ``allow_pickle=False``,
so loading never executes code from the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import config
from .backends import get_backend
from .errors import InvalidArgument, ModelFileError, WrongType
from .layers import LAYER_TYPES, Layer, building, fuse

LOSSES = ("softmax_cross_entropy", "mse")
FORMAT_VERSION = 1


class Sequential:
    """Layers applied in order, and a loss on the last output.

    Parameters
    ----------
    layers : list of Layer
    input_shape : tuple
        Per-sample input shape, e.g. ``(1, 28, 28)`` or ``(784,)``.
    loss : {'softmax_cross_entropy', 'mse'}
    backend : str or backend module, optional
        Default: the current backend (``$FASTMNIST_BACKEND`` or auto).
    dtype : str
        float32 (default) or float64.
    seed : int
        Seeds the weight initialisation (drawn on the host: same weights on every backend).
    name : str, optional
        Zoo name, kept in saved files.
    """

    def __init__(self, layers: list[Layer], input_shape: tuple, loss: str = "softmax_cross_entropy",
                 backend=None, dtype: str = config.DEFAULT_DTYPE, seed: int = 0, name: str | None = None):
        if loss not in LOSSES:
            raise InvalidArgument(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise WrongType(f"dtype must be float32 or float64, got {dtype}")
        self.layers, self.input_shape, self.loss = list(layers), tuple(input_shape), loss
        self.dtype, self.seed, self.name = np.dtype(dtype), seed, name
        self.backend = get_backend(backend)
        rng = np.random.default_rng(seed)
        shape = self.input_shape
        for i, layer in enumerate(self.layers):
            with building(i):  # a model file's layer i may use only the parameters the file holds for it
                shape = layer.out_shape = layer.build(shape, rng, self.backend, self.dtype)
        self.output_shape = shape
        if self.layers:
            self.layers[0].need_dx = False  # nobody needs the gradient with respect to the images
        self.fused = True
        self.plan = fuse(self.layers, self.backend)

    def set_fusion(self, enabled: bool) -> None:
        """Run fused backend paths (conv+ReLU+pool) where available (default) or layer by layer."""
        self.fused = enabled
        self.plan = fuse(self.layers, self.backend) if enabled else list(self.layers)

    # ---- what it is ----

    def summary(self) -> str:
        """A table of the layers: type and settings, per-sample output shape, parameter count; then
        the totals, the loss, the backend and the dtype (as Keras's ``model.summary()``)."""
        rows = []
        for layer in self.layers:
            shape = layer.out_shape
            settings = ", ".join(f"{k}={v}" for k, v in layer.config().items() if k != "init")
            count = sum(int(np.prod(p.shape)) for p in layer.params.values())
            rows.append((f"{type(layer).__name__}({settings})", str(shape), f"{count:,}"))
        width = max([len("layer")] + [len(r[0]) for r in rows]) + 2
        lines = [f"{self.name or 'Sequential'}: input {self.input_shape}, loss {self.loss}, "
                 f"backend {self.backend.name}, {self.dtype.name}",
                 f"{'layer':{width}s}{'output':16s}{'parameters':>12s}"]
        lines += [f"{a:{width}s}{b:16s}{c:>12s}" for a, b, c in rows]
        total = sum(int(np.prod(p.shape)) for p in self.parameters())
        lines.append(f"{'total':{width}s}{'':16s}{total:>12,}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        kinds = ", ".join(type(layer).__name__ for layer in self.layers)
        total = sum(int(np.prod(p.shape)) for p in self.parameters())
        return (f"<Sequential {self.name or ''} [{kinds}] {total:,} parameters, {self.loss}, "
                f"{self.backend.name} {self.dtype.name}>").replace("<Sequential  [", "<Sequential [")

    # ---- computation ----

    def forward(self, x, train: bool = False):
        for node in self.plan:
            x = node.forward(x, train)
        return x

    def backward(self, dout) -> None:
        for node in reversed(self.plan):
            dout = node.backward(dout)

    def loss_and_grad(self, out, targets):
        """(loss 0-d, d loss / d out); ``targets`` are labels for cross-entropy, one-hot rows for mse."""
        if self.loss == "mse":
            return self.backend.mse_loss(out, targets)
        # the trainer validated the labels once; a per-step range check would sync a GPU
        return self.backend.softmax_cross_entropy(out, targets, check=False)

    def parameters(self) -> list:
        return [layer.params[k] for layer in self.layers for k in sorted(layer.params)]

    def gradients(self) -> list:
        return [layer.grads[k] for layer in self.layers for k in sorted(layer.params)]

    def named_parameters(self):
        return [(f"{i}/{k}", layer.params[k]) for i, layer in enumerate(self.layers) for k in sorted(layer.params)]

    def to(self, backend) -> "Sequential":
        """Move the parameters to another backend (in place); returns self."""
        be = get_backend(backend)
        for layer in self.layers:
            layer.params = {k: be.asarray(self.backend.to_numpy(v)) for k, v in layer.params.items()}
            layer.grads = {}
            layer.be = be
        self.backend = be
        self.set_fusion(self.fused)
        return self

    # ---- convenience wrappers around the trainer ----

    def fit(self, x, y, **kwargs):
        """Train; see :func:`fastmnist.trainer.fit` for the arguments. Returns the history dict."""
        from .trainer import fit
        return fit(self, x, y, **kwargs)

    def evaluate(self, x, y, batch_size: int | None = None) -> dict:
        from .trainer import evaluate
        return evaluate(self, x, y, batch_size)

    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        from .trainer import predict
        return predict(self, x, batch_size)

    # ---- files ----

    def architecture(self) -> dict:
        return {"format": FORMAT_VERSION, "name": self.name, "input_shape": list(self.input_shape),
                "loss": self.loss, "dtype": self.dtype.name, "seed": self.seed,
                "layers": [{"type": type(layer).__name__, **layer.config()} for layer in self.layers]}

    def state_arrays(self) -> dict:
        return {f"param/{k}": self.backend.to_numpy(v) for k, v in self.named_parameters()}

    def save(self, path, optimizer=None, extra: dict | None = None) -> Path:
        """Write the model (and optionally optimizer and trainer state) to one ``.npz``, atomically."""
        arrays = {"architecture": np.array(json.dumps(self.architecture()))}
        arrays.update(self.state_arrays())
        if optimizer is not None:
            arrays["optimizer"] = np.array(json.dumps(optimizer.config()))
            for i, state in enumerate(optimizer.state):
                for slot, a in state.items():
                    arrays[f"opt/{i}/{slot}"] = self.backend.to_numpy(a)
        for key, value in (extra or {}).items():
            arrays[f"extra/{key}"] = value if isinstance(value, np.ndarray) else np.array(json.dumps(value))
        return atomic_savez(path, arrays)


def npz_path(path) -> Path:
    """Where :func:`atomic_savez` writes ``path``: ``.npz`` appended unless it is there."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def atomic_savez(path, arrays: dict) -> Path:
    """np.savez to a temporary file, fsync, rename: a crash never leaves a half-written file, and a
    save that fails leaves no temporary file behind."""
    path = npz_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_npz_file(path) -> dict:
    """Every array of a model file, each checked before it is allocated (fastmnist.npzfile)."""
    from .npzfile import read_npz
    if not Path(path).exists():
        raise ModelFileError(f"{path}: no such model file")
    return read_npz(path)


def json_entry(arrays, key, path):
    """Entry ``key`` of a model file: a 0-d text array holding JSON, parsed."""
    from .npzfile import refuse
    try:
        a = arrays[key]
        if a.dtype.kind != "U" or a.ndim != 0:
            raise InvalidArgument(f"expected a 0-d string array, found {a.dtype} {a.shape}")
        return json.loads(str(a))
    except KeyError:
        raise refuse(path, f"no {key!r} entry") from None
    except RecursionError:
        raise refuse(path, f"entry {key!r} is nested too deeply") from None
    except ValueError as exc:
        raise refuse(path, f"entry {key!r} is not valid JSON text ({exc})") from None


def _plain_int(value, what, lo=0, hi=2**63 - 1) -> int:
    """A JSON integer in [lo, hi]: not a bool, not a float (1.5, inf), not text."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"{what} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def model_from_architecture(arch: dict, backend=None, where="architecture") -> Sequential:
    """Rebuild a model (fresh weights) from its architecture dict, validating every field.

    Raises :class:`ModelFileError` ("not a fastmnist model file: invalid architecture ...") for
    anything malformed; under :func:`fastmnist.layers.parameter_budget` (as :func:`load` does) a
    layer larger than the file's own arrays is refused before it is allocated."""
    from .npzfile import refuse
    try:
        if not isinstance(arch, dict):
            raise WrongType(f"expected a JSON object, got {type(arch).__name__}")
        specs = arch["layers"]
        if not isinstance(specs, list) or not specs:
            raise InvalidArgument("'layers' must be a non-empty list")
        shape = arch["input_shape"]
        if not isinstance(shape, list) or not shape:
            raise InvalidArgument(f"'input_shape' must be a non-empty list, got {shape!r}")
        shape = tuple(_plain_int(d, "each input dimension", 1, 2**31) for d in shape)
        layers = []
        for spec in specs:
            if not isinstance(spec, dict):
                raise WrongType(f"each layer must be a JSON object, got {spec!r}")
            spec = dict(spec)
            kind = spec.pop("type", None)
            if kind not in LAYER_TYPES:
                raise InvalidArgument(f"unknown layer type {kind!r}")
            layers.append(LAYER_TYPES[kind](**spec))
        return Sequential(layers, shape, arch["loss"], backend=backend, dtype=arch["dtype"],
                          seed=_plain_int(arch.get("seed", 0), "'seed'"), name=arch.get("name"))
    except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError, RecursionError) as exc:
        raise refuse(where, f"invalid architecture ({type(exc).__name__}: {exc})") from None


def load(path, backend=None) -> Sequential:
    """Load a model saved by :meth:`Sequential.save` onto ``backend``; never runs code from the file."""
    model, _ = load_with_state(path, backend)
    return model


def load_with_state(path, backend=None, arrays=None):
    """(model, arrays): the model plus every raw array of the file (optimizer and extra state);
    ``arrays``: the file's arrays when the caller has read them already (read_npz_file)."""
    from .layers import parameter_budget
    from .npzfile import refuse
    if arrays is None:
        arrays = read_npz_file(path)
    arch = json_entry(arrays, "architecture", path)
    if not isinstance(arch, dict) or arch.get("format") != FORMAT_VERSION:
        found = arch.get("format") if isinstance(arch, dict) else type(arch).__name__
        raise refuse(path, f"unsupported format {found!r} (this version reads {FORMAT_VERSION!r})")
    in_file = {}
    for key, a in arrays.items():
        index = key.split("/")[1] if key.startswith("param/") and key.count("/") == 2 else ""
        if index.isdigit():
            in_file[int(index)] = in_file.get(int(index), 0) + a.size
    with parameter_budget(in_file):  # nothing larger than the file's own arrays is allocated
        model = model_from_architecture(arch, backend, str(path))
    expected = {f"param/{k}": v for k, v in model.named_parameters()}
    present = {k for k in arrays if k.startswith("param/")}
    if present != set(expected):
        raise refuse(path, "parameter arrays do not match the architecture: "
                             f"missing {sorted(set(expected) - present)}, unexpected {sorted(present - set(expected))}")
    for key, ref in expected.items():
        a = arrays[key]
        if a.shape != tuple(ref.shape) or a.dtype != model.dtype:
            raise refuse(path, f"{key} has {a.dtype} {a.shape}; the architecture needs {model.dtype} {tuple(ref.shape)}")
        if not np.all(np.isfinite(a)):
            raise refuse(path, f"{key} holds NaN or infinite values")
    layer_params = iter(model.layers)
    for i, layer in enumerate(layer_params):
        layer.params = {k: model.backend.asarray(arrays[f"param/{i}/{k}"]) for k in layer.params}
    return model, arrays


def load_optimizer_state(optimizer, arrays: dict, path="model file") -> None:
    """Restore an attached optimizer's step count and slots from :func:`load_with_state`'s arrays."""
    from .npzfile import refuse
    cfg = json_entry(arrays, "optimizer", path)
    if not isinstance(cfg, dict) or cfg.get("type") != type(optimizer).__name__:
        found = cfg.get("type") if isinstance(cfg, dict) else cfg
        raise refuse(path, f"optimizer state is for {found!r}, not {type(optimizer).__name__}")
    try:
        optimizer.t = _plain_int(cfg.get("t"), "the optimizer's step count 't'")
    except ValueError as exc:
        raise refuse(path, str(exc)) from None
    be = optimizer.model.backend
    for i, state in enumerate(optimizer.state):
        for slot, current in state.items():
            key = f"opt/{i}/{slot}"
            if key not in arrays or arrays[key].shape != tuple(current.shape) or arrays[key].dtype.kind != "f":
                raise refuse(path, f"optimizer array {key} missing or of the wrong shape or type")
            state[slot] = be.asarray(arrays[key], current.dtype)
