"""How well `fastmnist predict` reads phone-like photos of MNIST test digits and numbers.

    python3 benchmarks/photo_accuracy.py --model /tmp/fastmnist-photo-simple-cnn.npz --digits 400 --numbers 100 \\
        --out benchmarks/results/photo-accuracy.json [--wide] [--blanks 1000]
    python3 benchmarks/photo_accuracy.py --reader ...          # the reader `fastmnist predict` uses
    python3 benchmarks/photo_accuracy.py --model A.npz B.npz ...  # models read together (an Ensemble)

The model is trained first when the one file given does not exist (simple-cnn, 1 epoch, seed 0).
Reports accuracy on the photos, on the same digits as MNIST images, and per condition.
"""
import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

import fastmnist
from fastmnist import zoo
from fastmnist.ensemble import Ensemble
from fastmnist.photos import photosynth
from fastmnist.photos.images import predict_images, read_numbers
from fastmnist.reader import get_reader


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", nargs="+", default=["/tmp/fastmnist-photo-simple-cnn.npz"])
    ap.add_argument("--reader", action="store_true", help="the reader `fastmnist predict` uses (cached, or trained)")
    ap.add_argument("--digits", type=int, default=400)
    ap.add_argument("--numbers", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--blanks", type=int, default=10, help="blank pages (seeds 0..N-1) that must read as no digit")
    ap.add_argument("--out", default=None)
    ap.add_argument("--wide", action="store_true", help="the harder photos: rotation to 15 degrees, thick and thin "
                    "pens, blur to 1.5 px (photosynth.render(wide=True))")
    args = ap.parse_args()
    (x, y), (xt, yt) = fastmnist.load_mnist()
    if args.reader:
        model = get_reader()
    else:
        if len(args.model) == 1 and not Path(args.model[0]).exists():
            model = zoo.create("simple-cnn", seed=0)
            model.fit(x, y, epochs=1, batch_size=100, optimizer="adam", lr=1e-3, verbose=0)
            model.save(args.model[0])
        model = Ensemble([fastmnist.load(path) for path in args.model])
    mnist_acc = model.evaluate(xt, yt)["accuracy"]
    images = xt[:, 0]
    report = {"model": "reader" if args.reader else args.model, "networks": len(model),
              "mnist_test_accuracy": mnist_acc, "seed": args.seed, "wide": args.wide}
    with tempfile.TemporaryDirectory() as tmp:
        photos = photosynth.digit_photos(images, yt, args.digits, seed=args.seed, wide=args.wide)
        paths = [p.save(Path(tmp) / f"d{k}{p.suffix}") for k, p in enumerate(photos)]
        t0 = time.perf_counter()
        got = predict_images(model, paths)
        report["digit_seconds_per_photo"] = (time.perf_counter() - t0) / len(paths)
        right = [g.get("digit") == p.labels[0] for g, p in zip(got, photos)]
        report["digit_photos"] = len(photos)
        same = [p.conditions["mnist_index"][0] for p in photos]
        report["same_digits_as_mnist_images_accuracy"] = float(np.mean(
            np.argmax(model.predict(xt[same]), axis=1) == yt[same]))
        report["digit_accuracy"] = float(np.mean(right))
        # a miss is the ink mask's (no digit found) or the network's (a digit read, the wrong one)
        found = [g.get("digit") is not None for g in got]
        report["digit_misses_no_digit_found"] = int(sum(not f for f in found))
        report["digit_misses_wrong_digit"] = int(sum(f and not ok for f, ok in zip(found, right)))
        per = defaultdict(list)
        for ok, p in zip(right, photos):
            c = p.conditions
            for key in ("small_in_frame", "ruled", "format"):
                per[f"{key}={c[key]}"].append(ok)
            per[f"shadow={c['shadow'] > 0}"].append(ok)
            per[f"exif_rotated={c['exif_orientation'] != 1}"].append(ok)
            per[f"size<100={max(c['size']) < 100}"].append(ok)
            if "pen" in c:  # the wide conditions
                per[f"pen={c['pen']}"].append(ok)
                per[f"|rotation|>10={abs(c['rotation']) > 10}"].append(ok)
                per[f"blur>1={c['blur'] > 1}"].append(ok)
        report["digit_by_condition"] = {k: [float(np.mean(v)), len(v)] for k, v in sorted(per.items())}
        nums = photosynth.number_photos(images, yt, args.numbers, seed=args.seed, wide=args.wide)
        npaths = [p.save(Path(tmp) / f"n{k}{p.suffix}") for k, p in enumerate(nums)]
        t0 = time.perf_counter()
        read = read_numbers(model, npaths)
        report["number_seconds_per_photo"] = (time.perf_counter() - t0) / len(npaths)
        exact = [r["number"] == "".join(map(str, p.labels)) for r, p in zip(read, nums)]
        count_ok = [len(r["digits"]) == len(p.labels) for r, p in zip(read, nums)]
        report["number_photos"] = len(nums)
        report["same_numbers_as_mnist_images_exact"] = float(np.mean([
            bool(np.all(np.argmax(model.predict(xt[p.conditions["mnist_index"]]), axis=1) == p.labels)) for p in nums]))
        report["number_exact"] = float(np.mean(exact))
        report["number_digit_count_right"] = float(np.mean(count_ok))
        report["number_misreads"] = [(r["number"], "".join(map(str, p.labels))) for r, p, e in zip(read, nums, exact)
                                     if not e][:20]
        blank = predict_images(model, [photosynth.blank_photo(s).save(Path(tmp) / f"b{s}.jpg") for s in range(args.blanks)])
        report["blank_pages"] = args.blanks
        report["blank_reported_no_digit"] = sum(b["digit"] is None and "no digit found" in b["error"] for b in blank)
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
