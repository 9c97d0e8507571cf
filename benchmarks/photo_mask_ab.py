"""The ink mask and the reader, A/B on the wide photos: digits and numbers of one or more wide
samples, then (unless the blank-page count is 0) blank pages and the ordinary seed-1 sample.

    python3 benchmarks/photo_mask_ab.py MODEL.npz [BLANKS=300] [SEEDS=2]
    PYTHONPATH=/tmp/old python3 benchmarks/photo_mask_ab.py ...   # the same on an older checkout

Prints one JSON line, with the indices of the photos missed, to compare two runs photo by photo.
"""
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fastmnist
from fastmnist.photos import photosynth
from fastmnist.photos.images import predict_images, read_numbers


def digits(model, photos, folder, tag):
    """(no digit found, wrong digit): the indices of the photos missed, each kind apart."""
    got = predict_images(model, [p.save(Path(folder) / f"{tag}{k}{p.suffix}") for k, p in enumerate(photos)])
    not_found = [k for k, g in enumerate(got) if g.get("digit") is None]
    wrong = [k for k, g in enumerate(got) if g.get("digit") is not None and g["digit"] != photos[k].labels[0]]
    return not_found, wrong


def numbers(model, photos, folder, tag):
    """(share read exactly, share cut into the right count of digits)."""
    read = read_numbers(model, [p.save(Path(folder) / f"{tag}{k}{p.suffix}") for k, p in enumerate(photos)])
    exact = [r["number"] == "".join(map(str, p.labels)) for r, p in zip(read, photos)]
    count = [len(r["digits"]) == len(p.labels) for r, p in zip(read, photos)]
    return float(np.mean(exact)), float(np.mean(count))


def main(model_path, blanks=300, seeds=(2,)):
    model = fastmnist.load(model_path)
    _, (xt, yt) = fastmnist.load_mnist()
    images = xt[:, 0]
    res = {}
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        for seed in seeds:
            not_found, wrong = digits(model, photosynth.digit_photos(images, yt, 400, seed=seed, wide=True), folder, "d")
            res.update({f"wide{seed}_digits": 1 - (len(not_found) + len(wrong)) / 400,
                        f"wide{seed}_nofound": len(not_found), f"wide{seed}_wrong": len(wrong),
                        f"wide{seed}_wrong_idx": wrong, f"wide{seed}_nf_idx": not_found})
            exact, count = numbers(model, photosynth.number_photos(images, yt, 100, seed=seed, wide=True), folder, "n")
            res.update({f"wide{seed}_numbers": exact, f"wide{seed}_count": count})
        if blanks:
            pages = predict_images(model, [photosynth.blank_photo(s).save(Path(folder) / f"b{s}.png")
                                           for s in range(blanks)])
            res["blank_read"] = [k for k, g in enumerate(pages) if g.get("digit") is not None]
            not_found, wrong = digits(model, photosynth.digit_photos(images, yt, 400, seed=1), folder, "o")
            res["normal1_digits"] = 1 - (len(not_found) + len(wrong)) / 400
            res["normal1_numbers"] = numbers(model, photosynth.number_photos(images, yt, 100, seed=1), folder, "m")[0]
    res["seconds"] = time.time() - started
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300,
         tuple(int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "2").split(",")))
