"""Phone-photo-like pictures of MNIST digits and numbers, to test image preparation against.

Each picture puts real MNIST digits, as pen ink, on paper the way a phone photographs it: tinted
paper, black or blue ink, a lighting gradient and vignetting, sometimes a shadow across part of
the page and ruled lines, the digit large or small in the frame, sensor noise, JPEG at quality
50-95 (or PNG/BMP/RGBA), any size from 28 to 4000 pixels, and sometimes stored sideways with an
EXIF orientation tag. Everything is drawn from one ``numpy.random.Generator``, so a seed fixes
the sample. The true boxes (in the upright picture's pixels) come back with each picture.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from .inkmask import resize

PAPERS = [(246, 243, 235), (240, 232, 208), (228, 236, 244), (236, 242, 226), (246, 232, 232), (215, 215, 210)]
INKS = [(25, 25, 30), (45, 40, 50), (25, 40, 140), (20, 30, 100), (40, 60, 170)]
ORIENTATIONS = {3: 180, 6: 90, 8: 270}  # EXIF tag -> degrees the stored picture is rotated counter-clockwise


@dataclass
class Photo:
    data: bytes                     # the file's bytes
    suffix: str                     # .jpg, .png, .bmp
    labels: list[int]               # the digits, left to right
    boxes: list[tuple]              # (x0, y0, x1, y1) per digit in the upright picture
    conditions: dict = field(default_factory=dict)

    def save(self, path):
        with open(path, "wb") as fh:
            fh.write(self.data)
        return path


def _ink_alpha(digit28: np.ndarray, height: int):
    """An MNIST digit as pen ink: its ink box scaled to ``height`` pixels, alpha in [0, 1]."""
    a = np.asarray(digit28, np.float64)
    a = (a if a.ndim == 2 else a.reshape(28, 28)) / max(a.max(), 1e-9)  # 2-D: a turned digit is larger
    rows, cols = np.flatnonzero(a.max(1) > 0.05), np.flatnonzero(a.max(0) > 0.05)
    a = a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h = max(8, int(height))
    w = max(2, int(round(a.shape[1] * h / a.shape[0])))
    big = resize(a, h, w, "bicubic")  # shrinking too ("auto" would average boxes): as the photos were always drawn
    return np.clip(big * 1.3, 0.0, 1.0)  # pen strokes are solid in the middle (and bicubic's overshoot is cut)


def _lighting(h, w, rng, cond):
    yy = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None]  # broadcast, never (h, w) grids
    xx = (np.arange(w, dtype=np.float32) / max(w - 1, 1))[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)
    light = 1.0 - cond["gradient"] * (ramp + 0.7) / 1.4
    r2 = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.5
    light *= 1.0 - cond["vignette"] * r2
    if cond["shadow"]:
        a2 = rng.uniform(0, 2 * np.pi)
        edge = np.cos(a2) * (xx - 0.5) + np.sin(a2) * (yy - 0.5) - rng.uniform(-0.25, 0.25)
        soft = rng.uniform(0.01, 0.05)
        light *= 1.0 - cond["shadow"] / (1.0 + np.exp(-edge / soft))
    return light


def _pen(digit28: np.ndarray, pen: str) -> np.ndarray:
    """The digit drawn with a thicker (grey dilation, 2x2) or thinner (erosion) pen."""
    a = np.asarray(digit28, np.float64).reshape(28, 28)
    if pen == "normal":
        return a
    p = np.pad(a, 1)
    shifted = [p[1:29, 1:29], p[0:28, 1:29], p[1:29, 0:28], p[0:28, 0:28]]
    return np.maximum.reduce(shifted) if pen == "thick" else np.minimum.reduce(shifted)


def _rotated(digit: np.ndarray, degrees: float) -> np.ndarray:
    """The digit turned counter-clockwise (grey levels kept as they are: float image, bilinear)."""
    from PIL import Image
    img = Image.fromarray(np.asarray(digit, np.float32).reshape(28, 28), mode="F")
    return np.asarray(img.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True), np.float64)


def render(digits: list[np.ndarray], labels: list[int], rng: np.random.Generator, long_side: int | None = None,
           fmt: str | None = None, blank: bool = False, wide: bool = False) -> Photo:
    """A photo of ``digits`` (MNIST 28x28 arrays, white on black) written left to right.

    ``wide`` adds the harder conditions of issue #22's held-out photos: each digit rotated by up
    to 15 degrees, written with a thick, thin or normal pen, and the picture blurred by up to 1.5
    pixels at MNIST's scale (the digit's ink about 20 pixels tall)."""
    from PIL import Image
    n = len(digits)
    long_side = long_side or int(np.exp(rng.uniform(np.log(120), np.log(1600))))
    aspect = rng.choice([4 / 3, 3 / 4, 1.0]) if n == 1 else rng.uniform(1.6, 2.4) * max(1, n / 3)
    w, h = (long_side, max(28, int(long_side / aspect))) if aspect >= 1 else (max(28, int(long_side * aspect)), long_side)
    small = bool(rng.random() < 0.3) and min(w, h) >= 200
    cond = {"size": (w, h), "small_in_frame": small, "gradient": rng.uniform(0.1, 0.45),
            "vignette": rng.uniform(0.0, 0.35), "shadow": rng.uniform(0.3, 0.55) if rng.random() < 0.4 else 0.0,
            "ruled": bool(rng.random() < 0.3), "paper": PAPERS[rng.integers(len(PAPERS))],
            "ink": INKS[rng.integers(len(INKS))], "noise": rng.uniform(1.5, 6.0)}
    frac = rng.uniform(0.12, 0.25) if small else rng.uniform(0.4, 0.7)
    height = max(14, int(frac * min(h, w) if n == 1 else min(frac * h, 0.8 * w / (0.75 * n + 0.3 * (n - 1)))))
    alpha = np.zeros((h, w))
    boxes = []
    if wide and not blank:
        cond.update(pen=str(rng.choice(["thick", "thin", "normal"])), rotation=float(rng.uniform(-15, 15)),
                    blur=float(rng.uniform(0, 1.5)))
        digits = [_rotated(_pen(d, cond["pen"]), cond["rotation"] + rng.uniform(-3, 3)) for d in digits]
    if not blank:
        glyphs = [_ink_alpha(d, height * rng.uniform(0.92, 1.08)) for d in digits]
        gaps = [max(3, int(rng.uniform(0.2, 0.6) * height)) for _ in glyphs[1:]]
        total = sum(g.shape[1] for g in glyphs) + sum(gaps)
        if w > total:
            x = int(rng.uniform(0.05, 0.95) * (w - total))
        else:  # turned digits and wide gaps outgrew the page: the whole number is photographed, smaller,
            shrink = 0.96 * w / total  # else its last digits were cut off by the edge (no random draw
            glyphs = [_ink_alpha(d, g.shape[0] * shrink) for d, g in zip(digits, glyphs)]  # here, as before:
            gaps = [max(3, int(g * shrink)) for g in gaps]  # every photo that fitted is drawn as it was)
            x = max(0, (w - sum(g.shape[1] for g in glyphs) - sum(gaps)) // 2)
        base = int(rng.uniform(0.1, 0.9) * max(h - height, 0))
        for k, g in enumerate(glyphs):
            y = int(np.clip(base + rng.uniform(-0.08, 0.08) * height, 0, h - g.shape[0]))
            gh, gw = min(g.shape[0], h - y), min(g.shape[1], w - x)
            if gw <= 0:
                break
            alpha[y:y + gh, x:x + gw] = np.maximum(alpha[y:y + gh, x:x + gw], g[:gh, :gw])
            boxes.append((x, y, x + gw, y + gh))
            x += g.shape[1] + (gaps[k] if k < len(gaps) else 0)
    paper = np.ones((h, w, 3), np.float32) * np.asarray(cond["paper"], np.float32)
    if cond["ruled"]:
        spacing = max(6, int(height * rng.uniform(0.7, 1.1)))
        thick = max(1, int(round(min(h, w) / 400)))
        tilt = rng.uniform(-0.01, 0.01)
        on_line = ((np.arange(h)[:, None] + tilt * np.arange(w)[None, :]) % spacing) < thick
        paper[on_line] *= np.asarray([0.82, 0.86, 0.95], np.float32)  # faint blue ruling
    ink = np.asarray(cond["ink"], np.float32)
    alpha = alpha.astype(np.float32)[..., None]
    picture = paper * (1 - alpha) + ink * alpha
    picture *= _lighting(h, w, rng, cond)[..., None]
    picture += np.float32(cond["noise"]) * rng.standard_normal(picture.shape, dtype=np.float32)
    img = Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8))
    if cond.get("blur"):
        from PIL import ImageFilter
        img = img.filter(ImageFilter.GaussianBlur(cond["blur"] * height / 20))
    return _encode(img, rng, fmt, Photo(b"", "", list(labels) if not blank else [], boxes, cond))


def _encode(img, rng, fmt, photo: Photo) -> Photo:
    from PIL import Image
    fmt = fmt or rng.choice(["jpeg"] * 6 + ["png", "bmp", "rgba", "grey-jpeg"])
    orientation = int(rng.choice([3, 6, 8])) if fmt == "jpeg" and rng.random() < 0.2 else 1
    buf = io.BytesIO()
    if orientation != 1:  # stored sideways; the tag says how to turn it upright
        stored = img.rotate(ORIENTATIONS[orientation], expand=True)
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored.save(buf, "JPEG", quality=int(rng.integers(50, 96)), exif=exif.tobytes())
    elif fmt in ("jpeg", "grey-jpeg"):
        (img.convert("L") if fmt == "grey-jpeg" else img).save(buf, "JPEG", quality=int(rng.integers(50, 96)))
    elif fmt == "rgba":
        rgba = img.convert("RGBA")
        rgba.putalpha(255)
        rgba.save(buf, "PNG")
    else:
        img.save(buf, "PNG" if fmt == "png" else "BMP")
    photo.data, photo.suffix = buf.getvalue(), {"png": ".png", "rgba": ".png", "bmp": ".bmp"}.get(fmt, ".jpg")
    photo.conditions.update(format=fmt, exif_orientation=orientation)
    return photo


def digit_photos(x, y, count: int, seed: int = 0, sizes=None, wide: bool = False) -> list[Photo]:
    """``count`` single-digit photos of MNIST images ``x`` (N, 28, 28) with labels ``y`` (``wide``:
    see :func:`render`)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), count, replace=False)
    photos = []
    for k, i in enumerate(idx):
        side = sizes[k % len(sizes)] if sizes else None
        photos.append(render([x[i]], [int(y[i])], rng, long_side=side, wide=wide))
        photos[-1].conditions["mnist_index"] = [int(i)]
    return photos


def number_photos(x, y, count: int, seed: int = 0, lengths=(2, 6), wide: bool = False) -> list[Photo]:
    """``count`` photos of numbers of ``lengths`` digits (inclusive range), MNIST digits side by side."""
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        n = int(rng.integers(lengths[0], lengths[1] + 1))
        idx = rng.choice(len(x), n, replace=False)
        side = int(np.exp(rng.uniform(np.log(300), np.log(2000))))
        photos.append(render([x[i] for i in idx], [int(y[i]) for i in idx], rng, long_side=side, wide=wide))
        photos[-1].conditions["mnist_index"] = [int(i) for i in idx]
    return photos


def blank_photo(seed: int = 0) -> Photo:
    """Paper and light, no ink: the reader must say it found no digit."""
    return render([np.zeros((28, 28))], [0], np.random.default_rng(seed), blank=True)
