"""Your own handwriting: turn a photo or scan of one digit into an MNIST-like 28x28 input, the way
MNIST itself was made, and predict it.

MNIST's recipe: grey levels with white ink on black, the digit cropped to its ink, scaled
(anti-aliased) so that its longer side is 20 pixels keeping the aspect ratio, then placed in a
28x28 field so that its centre of mass sits at the centre.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import FastMnistError


class ImageError(FastMnistError, ValueError):
    """An image could not be read or holds no digit (empty, no ink)."""


#: A pixel counts as ink when it reaches this fraction of the darkest-to-lightest range.
INK_THRESHOLD = 0.25
#: Below this contrast (max - min of the grey levels, 0..1) an image is taken as blank.
MIN_CONTRAST = 0.1


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImageError("reading images needs Pillow: pip install 'fastmnist[image]'") from None
    return Image


def load_grey(path) -> np.ndarray:
    """Any Pillow-readable file (PNG, JPEG, BMP, ...; RGB, RGBA, palette, 16-bit) -> float grey in [0, 1]."""
    Image = _pillow()
    try:
        with Image.open(path) as img:
            img.load()
            return to_grey(img)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image too large to read safely ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:  # unidentified, truncated or corrupt files
        raise ImageError(f"{path}: cannot read image ({exc})") from None


def to_grey(img) -> np.ndarray:
    """A Pillow image in any mode -> float64 grey levels in [0, 1] (transparent areas as white paper)."""
    Image = _pillow()
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        return np.clip(a / top, 0.0, 1.0)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return np.asarray(img.convert("L"), dtype=np.float64) / 255.0


def mnistify(grey: np.ndarray, where: str = "image") -> np.ndarray:
    """Grey levels (H, W) in [0, 1] -> float32 (28, 28), white ink on black, MNIST-style."""
    if grey.ndim != 2 or grey.size == 0:
        raise ImageError(f"{where}: empty image (shape {grey.shape})")
    lo, hi = float(grey.min()), float(grey.max())
    if hi - lo < MIN_CONTRAST:
        raise ImageError(f"{where}: no ink found (grey levels span only {lo:.2f}..{hi:.2f})")
    g = (grey - lo) / (hi - lo)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    ink = 1.0 - g if np.median(border) > 0.5 else g  # dark on light paper: invert
    mask = ink > INK_THRESHOLD
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    ink = np.where(ink > INK_THRESHOLD * 0.5, ink, 0.0)  # paper texture is not ink
    h, w = ink.shape
    scale = 20.0 / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = _resize(ink, nh, nw)
    if small.max() <= 0:
        raise ImageError(f"{where}: no ink left after scaling")
    small /= small.max()
    total = small.sum()
    cy = (small.sum(axis=1) * np.arange(nh)).sum() / total
    cx = (small.sum(axis=0) * np.arange(nw)).sum() / total
    top = int(np.clip(round(13.5 - cy), 0, 28 - nh))  # the centre of mass at the field's centre
    left = int(np.clip(round(13.5 - cx), 0, 28 - nw))
    out = np.zeros((28, 28), np.float32)
    out[top:top + nh, left:left + nw] = small
    return out


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    Image = _pillow()
    img = Image.fromarray(a.astype(np.float32))  # float32 -> mode "F"
    return np.asarray(img.resize((w, h), Image.Resampling.LANCZOS), dtype=np.float64).clip(0, None)


def predict_images(model, paths, show: bool = False) -> list[dict]:
    """Predict each image file: ``{"file", "digit", "probabilities"}``, or ``{"file", "error"}``
    for a file that could not be used (the others are still predicted). With ``show``, the 28x28
    input the network saw is saved next to the image as ``<name>.mnist.png`` (key ``"shown"``)."""
    results, inputs, ok = [], [], []
    for path in paths:
        try:
            x = mnistify(load_grey(path), str(path))
        except ImageError as exc:
            results.append({"file": str(path), "error": str(exc)})
            continue
        results.append({"file": str(path)})
        inputs.append(x)
        ok.append(len(results) - 1)
        if show:
            results[-1]["shown"] = str(save_input_png(x, _shown_path(path)))
    if inputs:
        batch = np.stack(inputs)
        batch = batch.reshape(len(batch), -1) if len(model.input_shape) == 1 else batch[:, None]
        probs = model.predict(batch.astype(model.dtype))
        for i, p in zip(ok, probs):
            results[i]["digit"] = int(np.argmax(p))
            results[i]["probabilities"] = [round(float(v), 6) for v in p]
    return results


def _shown_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".mnist.png")


def save_input_png(x: np.ndarray, path) -> Path:
    """Save a 28x28 input (white ink on black, [0, 1]) as an 8-bit PNG."""
    Image = _pillow()
    Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8)).save(path)  # uint8 -> mode "L"
    return Path(path)


__all__ = ["ImageError", "load_grey", "mnistify", "predict_images", "save_input_png", "to_grey"]
