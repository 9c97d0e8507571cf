"""Would the network's own confidence tell a faint digit from a blank page's marks? With the ink
mask's pen test switched off, every photo's main piece goes to the model; its top probability is
compared between the 300 blank pages and the wide digit photos (seed 2) the pen test refuses.

    python3 -m fastmnist train --model reader --out /tmp/reader-base.npz
    python3 benchmarks/faint_pieces.py /tmp/reader-base.npz > benchmarks/results/faint-pieces.txt

A measurement only: the reader does not do this.
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

import fastmnist
from fastmnist.photos import inkmask, photosynth
from fastmnist.photos.images import as_grey, mnistify

PEN_TEST = (inkmask.PEN_MIN, inkmask.PEN_FAINT_MIN, inkmask.PEN_PEAK_MIN)


def read(grey, pen_test):
    """The 28x28 input with the given pen-test thresholds, or None where the mask finds no digit."""
    inkmask.PEN_MIN, inkmask.PEN_FAINT_MIN, inkmask.PEN_PEAK_MIN = pen_test
    try:
        return mnistify(grey)
    except fastmnist.errors.ImageError:
        return None
    finally:
        inkmask.PEN_MIN, inkmask.PEN_FAINT_MIN, inkmask.PEN_PEAK_MIN = PEN_TEST


def candidates(model, photos, folder):
    """(found by the usual pen test?, the model's probabilities with no pen test, or None) per photo."""
    out = []
    for k, photo in enumerate(photos):
        path = str(photo.save(Path(folder) / f"p{k}{photo.suffix}"))
        grey = as_grey(path, path)
        loose = read(grey, (0.0, 0.0, 0.0))
        probs = None if loose is None else model.predict(loose[None, None].astype(np.float32))[0]
        out.append((read(grey, PEN_TEST) is not None, probs))
    return out


def main(model_path):
    model = fastmnist.load(model_path)
    _, (xt, yt) = fastmnist.load_mnist()
    with tempfile.TemporaryDirectory() as folder:
        blanks = candidates(model, [photosynth.blank_photo(s) for s in range(300)], folder)
        photos = photosynth.digit_photos(xt[:, 0], yt, 400, seed=2, wide=True)
        digits = candidates(model, photos, folder)
    blank_conf = sorted(float(p.max()) for _, p in blanks if p is not None)
    refused = [(float(p.max()), int(p.argmax()) == photo.labels[0])
               for (found, p), photo in zip(digits, photos) if not found and p is not None]
    print(f"blank pages with a piece once the pen test is off: {len(blank_conf)} of 300; top probabilities "
          f"{[round(c, 3) for c in blank_conf]}")
    print(f"digit photos the pen test refuses, with a piece: {len(refused)}; (top probability, read right) "
          f"{sorted((round(c, 3), r) for c, r in refused)}")
    for threshold in (0.9, 0.95, 0.98, 0.99, 0.995):
        blank_read = sum(c >= threshold for c in blank_conf)
        right = sum(c >= threshold and r for c, r in refused)
        wrong = sum(c >= threshold and not r for c, r in refused)
        print(f"accept at >= {threshold}: blank pages read as a digit {blank_read}/300; refused digits read right "
              f"{right}, wrong {wrong}, of {len(refused)}")


if __name__ == "__main__":
    main(sys.argv[1])
