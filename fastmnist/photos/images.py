"""Your own handwriting: photos of digits and of whole numbers, prepared the way MNIST was made.

MNIST's recipe: grey levels with white ink on black, the digit cropped to its ink, scaled
(anti-aliased) so that its longer side is 20 pixels keeping the aspect ratio, then placed in a
28x28 field so that its centre of mass sits at the centre. A phone photo needs a clean ink mask
first (lighting flattened, paper and ruled lines and specks removed): :mod:`fastmnist.inkmask`.
Images are turned upright by their EXIF orientation before anything else.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageError, NoInk
from .inkmask import InkMap, group_digits, ink_map, main_digit, resize

#: Pixels of the 20-pixel digit above this fraction of its peak are its ink ...
INK_PIXEL = 0.05
#: ... and this percentile of their grey levels becomes full strength, as in MNIST.
SOLID_PERCENTILE = 65


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImageError("reading images needs Pillow: pip install 'fastmnist[image]'") from None
    return Image


def load_grey(path) -> np.ndarray:
    """Any Pillow-readable file (PNG, JPEG, BMP, ...; RGB, RGBA, palette, 16-bit) -> float grey in [0, 1],
    turned upright by its EXIF orientation tag."""
    Image = _pillow()
    from PIL import ImageOps
    try:
        with Image.open(path) as img:
            img.load()
            return to_grey(ImageOps.exif_transpose(img))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image too large to read safely ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:  # unidentified, truncated or corrupt files
        raise ImageError(f"{path}: cannot read image ({exc})") from None


def as_grey(image, where: str) -> np.ndarray:
    """A path, a Pillow image or an array ((H, W) grey, (H, W, 3|4) colour; uint8 or float in [0, 1])."""
    if isinstance(image, (str, Path)):
        grey = load_grey(image)
    elif hasattr(image, "mode") and hasattr(image, "size"):
        from PIL import ImageOps
        grey = to_grey(ImageOps.exif_transpose(image))
    else:
        a = np.asarray(image)
        if a.dtype.kind not in "biuf":
            raise ImageError(f"{where}: expected numbers, got an array of {a.dtype}")
        if a.ndim == 3 and a.shape[2] in (3, 4):
            a = a[..., :3] @ np.array([0.299, 0.587, 0.114])
        if a.ndim != 2 or a.size == 0:
            raise ImageError(f"{where}: expected a grey (H, W) or colour (H, W, 3|4) image, got shape {a.shape}")
        grey = a.astype(np.float64)
        if np.all(np.isfinite(grey)) and grey.max() > 1.0:
            grey = grey / 255.0
    if not np.all(np.isfinite(grey)):  # a float TIFF or array can hold NaN: it has no grey level to read
        raise ImageError(f"{where}: the image holds NaN or infinite values")
    return grey


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


@dataclass
class Preparation:
    """One digit's photo at each stage of :func:`prepare` (``plots.photo_preparation`` draws them)."""

    grey: np.ndarray   #: the photo's grey levels (H, W) in [0, 1], upright
    inks: InkMap       #: the ink once the light is divided out (``inks.ink``) and the pieces found in it
    input: np.ndarray  #: float32 (28, 28), white ink on black: what the network reads

    @property
    def pieces_image(self) -> np.ndarray:
        """The ink map's pieces: 1 where kept, 0.35 where found but dropped (specks, ruled lines,
        faint shading), 0 on paper. Drawn only, so made on demand, not by every ``mnistify``."""
        kept = np.isin(self.inks.labels, [p.label for p in self.inks.pieces])
        return np.where(kept, 1.0, np.where(self.inks.labels > 0, 0.35, 0.0))


def prepare(grey: np.ndarray, where: str = "image") -> Preparation:
    """Prepare one digit's photo the way MNIST was made, keeping every stage.

    Parameters
    ----------
    grey : ndarray
        Grey levels (H, W) in [0, 1], either polarity (:func:`as_grey` makes them from any picture).
    where : str
        The picture's name, for error messages.

    Returns
    -------
    Preparation
        The grey photo, its ink map and pieces, and the 28x28 input (:func:`mnistify`'s result).

    Raises
    ------
    ImageError
        The image is empty or holds no digit (the message starts with ``where``).
    """
    if grey.ndim != 2 or grey.size == 0:
        raise ImageError(f"{where}: empty image (shape {grey.shape})")
    try:
        inks = ink_map(grey)
    except NoInk as exc:  # the ink mask does not know the picture's name
        raise ImageError(f"{where}: {exc}") from None
    return Preparation(grey, inks, place(inks.crop(main_digit(inks.pieces)), where))


def mnistify(grey: np.ndarray, where: str = "image") -> np.ndarray:
    """Grey levels (H, W) in [0, 1] of one digit -> float32 (28, 28), white ink on black, MNIST-style."""
    return prepare(grey, where).input


def place(ink: np.ndarray, where: str = "image") -> np.ndarray:
    """A digit's ink (h, w) cropped to it -> the 28x28 field: longer side 20 px, centre of mass centred."""
    h, w = ink.shape
    scale = 20.0 / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = resize(ink, nh, nw, "lanczos").clip(0, None)
    if small.max() <= 0:
        raise ImageError(f"{where}: no ink left after scaling")
    # MNIST's strokes are solid: about 40% of a digit's ink pixels are at full strength (the 70th
    # percentile of its ink is 0.99). A photo's stroke cores are as dark as the pen made them, and a
    # thin or blurred pen's are uneven: scaling by the peak alone leaves most of the digit dim.
    ink_pixels = small[small > INK_PIXEL * small.max()]
    small = np.minimum(small / np.percentile(ink_pixels, SOLID_PERCENTILE), 1.0)
    total = small.sum()
    cy = (small.sum(axis=1) * np.arange(nh)).sum() / total
    cx = (small.sum(axis=0) * np.arange(nw)).sum() / total
    top = int(np.clip(round(13.5 - cy), 0, 28 - nh))  # the centre of mass at the field's centre
    left = int(np.clip(round(13.5 - cx), 0, 28 - nw))
    out = np.zeros((28, 28), np.float32)
    out[top:top + nh, left:left + nw] = small
    return out


def _name(image, k: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"image {k}"


def _classify(model, inputs: list[np.ndarray]) -> np.ndarray:
    batch = np.stack(inputs)
    batch = batch.reshape(len(batch), -1) if len(model.input_shape) == 1 else batch[:, None]
    return model.predict(batch.astype(model.dtype))


def predict_images(model, images, show: bool = False) -> list[dict]:
    """Predict the one digit in each image (paths, Pillow images or arrays):
    ``{"file", "digit", "probability", "probabilities"}``; ``{"file", "digit": None, "error"}`` for an
    image that could not be used or holds no digit (the others are still predicted). With ``show``
    (paths only), the 28x28 input the network saw is saved as ``<name>.mnist.png`` (key ``"shown"``)."""
    results, inputs, ok = [], [], []
    for k, image in enumerate(images):
        name = _name(image, k)
        try:
            x = mnistify(as_grey(image, name), name)
        except ImageError as exc:
            results.append({"file": name, "digit": None, "error": str(exc)})
            continue
        results.append({"file": name})
        inputs.append(x)
        ok.append(len(results) - 1)
        if show and isinstance(image, (str, Path)):
            try:
                results[-1]["shown"] = str(save_input_png(x, _shown_path(image)))
            except OSError as exc:  # the reading still counts; only the picture could not be written
                results[-1]["warning"] = f"could not save the input picture: {exc}"
    if inputs:
        for i, p in zip(ok, _classify(model, inputs)):
            results[i]["digit"] = int(np.argmax(p))
            results[i]["probability"] = round(float(np.max(p)), 6)
            results[i]["probabilities"] = [round(float(v), 6) for v in p]
    return results


def read_numbers(model, images, show: bool = False) -> list[dict]:
    """Read the number written left to right in each image (digits that do not touch):
    ``{"file", "number": "2026", "digits": [{"digit", "probability", "box": [x0, y0, x1, y1]}, ...]}``,
    boxes in the upright image's pixels. With ``show`` (paths only), the boxes and the reading are
    drawn on a copy saved as ``<name>.number.png`` (key ``"shown"``)."""
    results = []
    for k, image in enumerate(images):
        name = _name(image, k)
        try:
            grey = as_grey(image, name)
            inks = ink_map(grey)
        except NoInk as exc:
            results.append({"file": name, "number": None, "digits": [], "error": f"{name}: {exc}"})
            continue
        except ImageError as exc:
            results.append({"file": name, "number": None, "digits": [], "error": str(exc)})
            continue
        groups = group_digits(inks.pieces)
        probs = _classify(model, [place(inks.crop(g), name) for g in groups])
        digits = [{"digit": int(np.argmax(p)), "probability": round(float(np.max(p)), 6), "box": inks.box(g)}
                  for g, p in zip(groups, probs)]
        rec = {"file": name, "number": "".join(str(d["digit"]) for d in digits), "digits": digits}
        if show and isinstance(image, (str, Path)):
            try:
                rec["shown"] = str(save_number_png(grey, rec, Path(image).with_name(Path(image).stem + ".number.png")))
            except OSError as exc:  # the reading still counts; only the picture could not be written
                rec["warning"] = f"could not save the picture with boxes: {exc}"
        results.append(rec)
    return results


def save_number_png(grey: np.ndarray, record: dict, path) -> Path:
    """The picture with each digit's box and its reading drawn on it."""
    Image = _pillow()
    from PIL import ImageDraw
    img = Image.fromarray((np.clip(grey, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(img)
    width = max(2, min(img.size) // 200)
    for d in record["digits"]:
        x0, y0, x1, y1 = d["box"]
        draw.rectangle([x0, y0, x1, y1], outline=(230, 30, 30), width=width)
        draw.text((x0, max(0, y0 - 12 * width)), f"{d['digit']} {d['probability']:.2f}", fill=(230, 30, 30),
                  font_size=10 * width)
    draw.text((width * 4, width * 4), f"read: {record['number']}", fill=(20, 120, 20), font_size=14 * width)
    img.save(path)
    return Path(path)


def _shown_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".mnist.png")


def save_input_png(x: np.ndarray, path) -> Path:
    """Save a 28x28 input (white ink on black, [0, 1]) as an 8-bit PNG."""
    Image = _pillow()
    Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8)).save(path)  # uint8 -> mode "L"
    return Path(path)


__all__ = ["ImageError", "Preparation", "as_grey", "load_grey", "mnistify", "place", "predict_images", "prepare",
           "read_numbers", "save_input_png", "save_number_png", "to_grey"]
