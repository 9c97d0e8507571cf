"""The ink mask and the reader, A/B on the wide photos: digits and numbers of one or more wide
samples, then (unless the blank-page count is 0) blank pages and the ordinary seed-1 sample.

    python3 benchmarks/photo_mask_ab.py MODEL.npz [BLANKS=300] [SEEDS=2]
    PYTHONPATH=/tmp/old python3 benchmarks/photo_mask_ab.py ...   # the same on an older checkout

Prints one JSON line (the indices of the photos missed, to compare two runs photo by photo).
"""
import sys, tempfile, time, json
from pathlib import Path
import numpy as np
import fastmnist
from fastmnist.photos import photosynth
from fastmnist.photos.images import predict_images, read_numbers

model = fastmnist.load(sys.argv[1])
nblank = int(sys.argv[2]) if len(sys.argv) > 2 else 300
seeds = [int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "2").split(",")]
_, (xt, yt) = fastmnist.load_mnist()
res = {}
with tempfile.TemporaryDirectory() as tmp:
    def paths(photos, tag):
        return [p.save(Path(tmp) / f"{tag}{k}{p.suffix}") for k, p in enumerate(photos)]
    t0 = time.time()
    for seed in seeds:
        ph = photosynth.digit_photos(xt[:, 0], yt, 400, seed=seed, wide=True)
        got = predict_images(model, paths(ph, "d"))
        nf = [k for k, g in enumerate(got) if g.get("digit") is None]
        wrong = [k for k, g in enumerate(got) if g.get("digit") is not None and g["digit"] != ph[k].labels[0]]
        res[f"wide{seed}_digits"] = 1 - (len(nf) + len(wrong)) / 400
        res[f"wide{seed}_nofound"] = len(nf); res[f"wide{seed}_wrong"] = len(wrong)
        res[f"wide{seed}_wrong_idx"] = wrong; res[f"wide{seed}_nf_idx"] = nf
        nums = photosynth.number_photos(xt[:, 0], yt, 100, seed=seed, wide=True)
        rd = read_numbers(model, paths(nums, "n"))
        ex = [r["number"] == "".join(map(str, p.labels)) for r, p in zip(rd, nums)]
        cnt = [len(r["digits"]) == len(p.labels) for r, p in zip(rd, nums)]
        res[f"wide{seed}_numbers"] = float(np.mean(ex)); res[f"wide{seed}_count"] = float(np.mean(cnt))
    if nblank == 0:
        print(json.dumps(res)); sys.exit()
    blanks = [photosynth.blank_photo(s) for s in range(nblank)]
    bl = predict_images(model, paths(blanks, "b"))
    res["blank_read"] = [k for k, g in enumerate(bl) if g.get("digit") is not None]
    ph = photosynth.digit_photos(xt[:, 0], yt, 400, seed=1)
    got = predict_images(model, paths(ph, "o"))
    res["normal1_digits"] = float(np.mean([g.get("digit") == p.labels[0] for g, p in zip(got, ph)]))
    nums = photosynth.number_photos(xt[:, 0], yt, 100, seed=1)
    rd = read_numbers(model, paths(nums, "m"))
    res["normal1_numbers"] = float(np.mean([r["number"] == "".join(map(str, p.labels)) for r, p in zip(rd, nums)]))
    res["seconds"] = time.time() - t0
print(json.dumps(res))
