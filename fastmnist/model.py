"""``Sequential``: a stack of layers plus a loss, on one backend; ``save``/``load`` as plain npz.

A model file is one ``.npz`` holding the architecture as JSON (a string array) and the weights,
and optionally the optimizer state and trainer state; it is read with ``allow_pickle=False``,
so loading never executes code from the file.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from . import config
from .backends import get_backend
from .errors import ModelFileError
from .layers import LAYER_TYPES, Layer, fuse

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
            raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.layers, self.input_shape, self.loss = list(layers), tuple(input_shape), loss
        self.dtype, self.seed, self.name = np.dtype(dtype), seed, name
        self.backend = get_backend(backend)
        rng = np.random.default_rng(seed)
        shape = self.input_shape
        for layer in self.layers:
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


def atomic_savez(path, arrays: dict) -> Path:
    """np.savez to a temporary file, fsync, rename: a crash never leaves a half-written file."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read_npz_file(path) -> dict:
    """Every array of a model file, refusing object arrays and pickles."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except ValueError as exc:  # object arrays need pickle: refused
        raise ModelFileError(f"{path}: refused: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"{path}: not a readable model file ({type(exc).__name__}: {exc})") from None


def _json(arrays, key, path):
    try:
        a = arrays[key]
        if a.dtype.kind != "U" or a.ndim != 0:
            raise ValueError(f"expected a 0-d string array, found {a.dtype} {a.shape}")
        return json.loads(str(a))
    except KeyError:
        raise ModelFileError(f"{path}: missing {key!r} entry") from None
    except ValueError as exc:
        raise ModelFileError(f"{path}: entry {key!r} is not valid JSON text ({exc})") from None


def model_from_architecture(arch: dict, backend=None, where="architecture") -> Sequential:
    """Rebuild a model (fresh weights) from its architecture dict, validating every field."""
    try:
        layers = []
        for spec in arch["layers"]:
            spec = dict(spec)
            kind = spec.pop("type")
            if kind not in LAYER_TYPES:
                raise ValueError(f"unknown layer type {kind!r}")
            layers.append(LAYER_TYPES[kind](**spec))
        return Sequential(layers, tuple(arch["input_shape"]), arch["loss"], backend=backend,
                          dtype=arch["dtype"], seed=int(arch.get("seed", 0)), name=arch.get("name"))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ModelFileError(f"{where}: invalid architecture ({type(exc).__name__}: {exc})") from None


def load(path, backend=None) -> Sequential:
    """Load a model saved by :meth:`Sequential.save` onto ``backend``; never runs code from the file."""
    model, _ = load_with_state(path, backend)
    return model


def load_with_state(path, backend=None):
    """(model, arrays): the model plus every raw array of the file (optimizer and extra state)."""
    arrays = read_npz_file(path)
    arch = _json(arrays, "architecture", path)
    if not isinstance(arch, dict) or arch.get("format") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: unsupported model file format {arch.get('format') if isinstance(arch, dict) else arch!r}")
    model = model_from_architecture(arch, backend, str(path))
    expected = {f"param/{k}": v for k, v in model.named_parameters()}
    present = {k for k in arrays if k.startswith("param/")}
    if present != set(expected):
        raise ModelFileError(f"{path}: parameter arrays do not match the architecture: "
                             f"missing {sorted(set(expected) - present)}, unexpected {sorted(present - set(expected))}")
    for key, ref in expected.items():
        a = arrays[key]
        if a.shape != tuple(ref.shape) or a.dtype != model.dtype:
            raise ModelFileError(f"{path}: {key} has {a.dtype} {a.shape}; architecture needs {model.dtype} {tuple(ref.shape)}")
        if not np.all(np.isfinite(a)):
            raise ModelFileError(f"{path}: {key} holds NaN or infinite values")
    layer_params = iter(model.layers)
    for i, layer in enumerate(layer_params):
        layer.params = {k: model.backend.asarray(arrays[f"param/{i}/{k}"]) for k in layer.params}
    return model, arrays


def load_optimizer_state(optimizer, arrays: dict, path="model file") -> None:
    """Restore an attached optimizer's step count and slots from :func:`load_with_state`'s arrays."""
    cfg = _json(arrays, "optimizer", path)
    if cfg.get("type") != type(optimizer).__name__:
        raise ModelFileError(f"{path}: optimizer state is for {cfg.get('type')}, not {type(optimizer).__name__}")
    optimizer.t = int(cfg["t"])
    be = optimizer.model.backend
    for i, state in enumerate(optimizer.state):
        for slot, current in state.items():
            key = f"opt/{i}/{slot}"
            if key not in arrays or arrays[key].shape != tuple(current.shape):
                raise ModelFileError(f"{path}: optimizer array {key} missing or of the wrong shape")
            state[slot] = be.asarray(arrays[key], current.dtype)
