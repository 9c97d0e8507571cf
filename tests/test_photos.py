"""Phone-like photos of real MNIST test digits and numbers (fastmnist.photos.photosynth: tinted paper,
blue or black ink, lighting gradients, vignetting, shadows, ruled lines, small digits in large
frames, JPEG 50-95, PNG/BMP/RGBA, EXIF-rotated, 28 to 4000 px) read by `predict` and `--number`."""
import io
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("PIL")
pytest.importorskip("skimage", reason="photo preparation needs scikit-image (the [image] extra)")
from conftest import REPO  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

import fastmnist  # noqa: E402
from fastmnist.photos import photosynth  # noqa: E402
from fastmnist.photos.images import predict_images, read_numbers  # noqa: E402


def test_single_digit_photos_at_least_97_percent(photo_model, tmp_path):
    model, _, xt, yt = photo_model
    photos = photosynth.digit_photos(xt, yt, 200, seed=7)  # drawing them is most of the test's time
    seen = Counter()
    for p in photos:  # the sample covers every condition the goal lists
        c = p.conditions
        seen.update([c["format"], f"exif{c['exif_orientation'] != 1}", f"shadow{c['shadow'] > 0}",
                     f"ruled{c['ruled']}", f"small{c['small_in_frame']}", f"ink{c['ink'][2] > 90}"])
    for cond in ("jpeg", "png", "bmp", "rgba", "grey-jpeg", "exifTrue", "shadowTrue", "ruledTrue", "smallTrue",
                 "inkTrue", "inkFalse"):
        assert seen[cond] >= 10, (cond, seen)
    paths = [p.save(tmp_path / f"d{k}{p.suffix}") for k, p in enumerate(photos)]
    got = predict_images(model, paths)
    right = sum(g.get("digit") == p.labels[0] for g, p in zip(got, photos))
    # The model is trained in this session and differs in its last bits from one CPU to another.
    # Measured over fast-cnn models (seeds 0-4, numba on the host CPU, as photo_model trains them):
    # 198-199 of these 200 (the earlier 400 photos, seed 7: 390-394, as results/test-margins.json
    # has them over 10+ models: 389-394). The goal, 97% (194 of 200), is measured on more photos by
    # benchmarks/photo_accuracy.py; here the threshold sits 4 photos below the worst model.
    # Since the 2026-12-01 ink mask: 392-395 of the 400 (results/test-margins-zen3-2026-12-01.json).
    # Since the sixth session's mask and photosynth fix: 390-394 (results/test-margins-zen3-2026-12-01b.json).
    assert right >= 194, f"{right}/{len(photos)}"


# size -> (photos, fewest read right). Measured over the same 10+ models: 28 px 59/60 every time,
# 40 px 56-58/60, 4000 px 3/3 (an Intel Xeon read 10/12 of the earlier 12-photo 28-px sample,
# failing a threshold of 11); the thresholds sit 3-4 photos below the worst. Since the sixth session's
# mask: 28 px 57-59, 40 px 55-58 (results/test-margins-zen3-2026-12-01b.json), 2 above the thresholds.
SIZES = {28: (60, 55), 40: (60, 53), 4000: (3, 2)}


@pytest.mark.parametrize("size", list(SIZES))
def test_any_size_from_28_to_4000_pixels(photo_model, size):
    model, _, xt, yt = photo_model
    count, fewest = SIZES[size]
    photos = photosynth.digit_photos(xt, yt, count, seed=size, sizes=[size])
    got = predict_images(model, [Image.open(io.BytesIO(p.data)) for p in photos])  # Pillow images in
    assert max(photos[0].conditions["size"]) == size
    right = sum(g.get("digit") == p.labels[0] for g, p in zip(got, photos))
    assert right >= fewest, f"{right}/{count}"


def test_blank_paper_is_no_digit_never_a_guess(photo_model, tmp_path):
    model, model_path, _, _ = photo_model
    paths = [photosynth.blank_photo(s).save(tmp_path / f"blank{s}.jpg") for s in range(12)]
    for r in predict_images(model, paths):
        assert r["digit"] is None and "no digit found" in r["error"], r
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "predict", str(model_path), str(paths[0]), "--json"],
                          capture_output=True, text=True, timeout=120)
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["digit"] is None and "no digit found" in line["error"]


def test_numbers_at_least_90_percent_exact_with_boxes(photo_model, tmp_path):
    model, _, xt, yt = photo_model
    photos = photosynth.number_photos(xt, yt, 100, seed=7)
    assert {len(p.labels) for p in photos} == {2, 3, 4, 5, 6}
    paths = [p.save(tmp_path / f"n{k}{p.suffix}") for k, p in enumerate(photos)]
    read = read_numbers(model, paths)
    exact = sum(r["number"] == "".join(map(str, p.labels)) for r, p in zip(read, photos))
    # measured 92-94 over the 10+ models above; 94-95 since the 2026-12-01 ink mask
    # (results/test-margins-zen3-2026-12-01.json: numba seeds 0-4, AVX2 and haswell code, numpy seed 0)
    # 95-96 since the sixth session's mask and whole numbers (results/test-margins-zen3-2026-12-01b.json)
    assert exact >= 88, f"{exact}/100 read exactly"
    for r, p in zip(read, photos):  # boxes in the upright picture's pixels, on the written digits
        if len(r["digits"]) != len(p.labels):
            continue
        for d, (x0, y0, x1, y1) in zip(r["digits"], p.boxes):
            bx0, by0, bx1, by1 = d["box"]
            inter = max(0, min(x1, bx1) - max(x0, bx0)) * max(0, min(y1, by1) - max(y0, by0))
            union = (x1 - x0) * (y1 - y0) + (bx1 - bx0) * (by1 - by0) - inter
            assert inter / union > 0.5, (r["file"], d["box"], (x0, y0, x1, y1))
            assert 0 < d["probability"] <= 1


def draw_number_in_strokes(path):
    """'47' with the 4 in two strokes and the 7 with a separate crossbar, plus a speck of dust."""
    img = Image.new("RGB", (420, 220), (238, 234, 222))
    d = ImageDraw.Draw(img)
    ink = (30, 30, 40)
    d.line([(90, 40), (50, 130), (130, 130)], fill=ink, width=12)  # the 4's first stroke
    d.line([(110, 70), (110, 185)], fill=ink, width=12)             # its second stroke, apart
    d.line([(230, 45), (330, 45), (265, 185)], fill=ink, width=12)  # the 7
    d.line([(255, 115), (320, 115)], fill=ink, width=10)            # its bar, apart from the stem
    d.ellipse([(390, 200), (393, 203)], fill=ink)
    img.save(path)
    return path


def test_digits_in_two_strokes_are_one_digit_and_show_draws_them(photo_model, tmp_path):
    model, model_path, _, _ = photo_model
    path = draw_number_in_strokes(tmp_path / "47.png")
    rec = read_numbers(model, [path], show=True)[0]
    assert len(rec["digits"]) == 2, rec
    (a, b) = (d["box"] for d in rec["digits"])
    assert a[0] < 55 and a[2] > 120 and b[0] < 235 and b[2] > 325  # each box spans both strokes
    shown = Image.open(rec["shown"]).convert("RGB")
    assert shown.size == (420, 220)
    px = np.asarray(shown)
    red = (px[..., 0] > 180) & (px[..., 1] < 80) & (px[..., 2] < 80)
    assert red[a[1]:a[3], a[0]].mean() > 0.8  # the box's left edge is drawn
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "predict", str(model_path), str(path), "--number",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(line) >= {"file", "number", "digits"} and len(line["number"]) == 2
    assert set(line["digits"][0]) == {"digit", "probability", "box"}


def model_reads(model, digit28) -> int:
    """What the model reads in the MNIST original itself: the photo tests below check the photo
    pipeline, so they compare with this, not with the label (a model trained on another CPU may
    misread a digit either way; the pipeline must not add a misreading)."""
    return int(np.argmax(model.predict(digit28[None, None])))


def test_exif_rotated_photo_is_read_upright(photo_model, tmp_path):
    model, _, xt, yt = photo_model
    rng = np.random.default_rng(5)
    img = photosynth.render([xt[0]], [int(yt[0])], rng, long_side=400, fmt="png")
    upright = Image.open(io.BytesIO(img.data))
    for orientation in (3, 6, 8):
        stored = upright.rotate(photosynth.ORIENTATIONS[orientation], expand=True)
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"rot{orientation}.jpg"
        stored.save(path, quality=92, exif=exif.tobytes())
        assert predict_images(model, [path])[0]["digit"] == model_reads(model, xt[0])
        box = read_numbers(model, [path])[0]["digits"][0]["box"]
        assert box[2] <= upright.size[0] and box[3] <= upright.size[1]  # upright coordinates


def test_arrays_and_images_are_accepted(photo_model):
    model, _, xt, yt = photo_model
    p = photosynth.render([xt[1]], [int(yt[1])], np.random.default_rng(2), long_side=300, fmt="png")
    img = Image.open(io.BytesIO(p.data))
    expected = model_reads(model, xt[1])
    for form in (img, np.asarray(img), np.asarray(img.convert("L")), np.asarray(img.convert("L")) / 255.0):
        assert predict_images(model, [form])[0]["digit"] == expected
    assert read_numbers(model, [np.asarray(img)])[0]["number"] == str(expected)
    bad = predict_images(model, [np.zeros((3, 3, 7))])[0]
    assert bad["digit"] is None and "expected a grey" in bad["error"]


def test_predict_without_a_model_trains_the_reader_once_and_caches_it(tmp_path, mnist_dir):
    """fastmnist predict photo.jpg on a fresh machine: the reader's networks are trained on first use
    (here on 2000 images, numpy, two networks), saved under $XDG_CACHE_HOME/fastmnist and reused by
    the next run; a cached network that no longer loads is trained again, the others are kept."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), FASTMNIST_READER_TRAIN_LIMIT="2000",
               FASTMNIST_DATA=str(mnist_dir), FASTMNIST_BACKEND="numpy")
    photo = REPO / "docs" / "img" / "photo-example.jpg"
    code = "import sys; from fastmnist import cli, config; config.READER_MEMBERS = 2; sys.exit(cli.main(sys.argv[1:]))"
    run = lambda: subprocess.run([sys.executable, "-c", code, "predict", str(photo), "--json"],  # noqa: E731
                                 capture_output=True, text=True, env=env, timeout=600)
    first = run()
    assert first.returncode == 0, first.stderr
    from fastmnist.reader import recipe_digest
    stem = tmp_path / "cache" / "fastmnist" / f"reader-{fastmnist.__version__}-{recipe_digest()}"
    cached = [stem.with_name(f"{stem.name}-seed{seed}.npz") for seed in (0, 1)]
    assert all(c.exists() and f"saved {c}" in first.stderr for c in cached), first.stderr
    assert first.stderr.count("training network") == 2
    assert json.loads(first.stdout.strip().splitlines()[-1])["digit"] in range(10)
    second = run()
    assert second.returncode == 0 and "training" not in second.stderr  # loaded, not trained again
    assert second.stdout == first.stdout
    cached[1].write_bytes(b"garbage")  # a cache that no longer loads is trained again, not used
    third = run()
    assert third.returncode == 0 and "does not load" in third.stderr and third.stderr.count("training network") == 1
    assert "seed 1," in third.stderr and third.stdout == first.stdout  # the same network, trained again


def test_the_reader_reads_by_the_mean_of_its_networks(monkeypatch, tmp_path, photo_model):
    """get_reader gives an Ensemble of READER_MEMBERS networks from seeds 0, 1, ...; its
    probabilities are the mean of theirs."""
    from fastmnist import config, reader
    from fastmnist.ensemble import Ensemble
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(config, "READER_MEMBERS", 2)
    model, _, xt, _ = photo_model
    for seed, path in enumerate(reader.reader_paths()):
        path.parent.mkdir(parents=True, exist_ok=True)
        fastmnist.zoo.create("reader", seed=seed).save(path)  # untrained, but different networks
    ensemble = reader.get_reader(log=lambda line: pytest.fail(f"nothing to train: {line}"))
    assert isinstance(ensemble, Ensemble) and [m.seed for m in ensemble.models] == [0, 1]
    x = xt[:5, None]
    want = (ensemble.models[0].predict(x).astype(np.float64) + ensemble.models[1].predict(x)) / 2
    assert np.allclose(ensemble.predict(x), want, atol=1e-6) and not np.allclose(want, ensemble.models[0].predict(x))


def test_an_ensemble_refuses_models_of_other_shapes(photo_model):
    from fastmnist.ensemble import Ensemble
    from fastmnist.errors import InvalidArgument
    with pytest.raises(InvalidArgument, match="ensemble model 1 takes inputs \\(784,\\)"):
        Ensemble([fastmnist.zoo.create("fast-cnn"), fastmnist.zoo.create("two-layer")])
    with pytest.raises(InvalidArgument, match="at least one"):
        Ensemble([])


def test_predict_reads_with_several_models_together(tmp_path, photo_model):
    """fastmnist predict --model A --model B: the mean of both models' probabilities."""
    model, _, xt, _ = photo_model
    other = fastmnist.zoo.create("fast-cnn", seed=1)
    a, b = model.save(tmp_path / "a.npz"), other.save(tmp_path / "b.npz")
    img = tmp_path / "d.png"
    from fastmnist.photos.images import save_input_png
    save_input_png(xt[3], img)
    out = subprocess.run([sys.executable, "-m", "fastmnist", "predict", "--model", str(a), "--model", str(b), str(img),
                          "--json"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr
    probs = np.array(json.loads(out.stdout.strip().splitlines()[-1])["probabilities"])
    from fastmnist.photos.images import load_grey, mnistify
    x = mnistify(load_grey(img))[None, None]
    want = (model.predict(x)[0].astype(np.float64) + other.predict(x)[0]) / 2
    assert np.allclose(probs, want, atol=1e-5)


def test_predict_refuses_models_of_other_inputs_together_naming_them(tmp_path, capsys):
    from fastmnist import cli
    a, b = tmp_path / "cnn.npz", tmp_path / "mlp.npz"
    fastmnist.zoo.create("fast-cnn").save(a)
    fastmnist.zoo.create("two-layer").save(b)
    rc = cli.main(["predict", "--model", str(a), "--model", str(b), str(REPO / "docs" / "img" / "photo-example.jpg")])
    err = capsys.readouterr().err
    assert rc == 2 and f"--model {b} takes inputs (784,)" in err and f"--model {a} (1, 28, 28)" in err and "Traceback" not in err


def test_a_changed_reader_recipe_is_cached_apart(monkeypatch):
    """A reader trained by an earlier recipe is never read as today's: the recipe is in the file name."""
    import dataclasses

    from fastmnist import zoo
    from fastmnist.layers import Dense
    from fastmnist.reader import reader_paths
    before = reader_paths()
    assert reader_paths() == before  # the names are stable from call to call
    recipe = zoo.ZOO["reader"]
    monkeypatch.setitem(zoo.ZOO, "reader", dataclasses.replace(recipe, augment={**recipe.augment, "blur": 0.5}))
    assert not set(reader_paths()) & set(before) and reader_paths()[0].parent == before[0].parent
    wider = lambda: [Dense(300) if isinstance(layer, Dense) and layer.units == 256 else layer  # noqa: E731
                     for layer in recipe.layers()]
    monkeypatch.setitem(zoo.ZOO, "reader", dataclasses.replace(recipe, layers=wider))
    assert not set(reader_paths()) & set(before)  # another network, the same description


def test_wide_photos_record_their_conditions_and_leave_the_default_sample_alone(photo_model):
    """photosynth's wide mode draws pen, rotation and blur; the default photos stay what they were
    (the seeds behind the measured tables draw the same pictures)."""
    _, _, xt, yt = photo_model
    plain = photosynth.digit_photos(xt, yt, 3, seed=5)
    again = photosynth.digit_photos(xt, yt, 3, seed=5)
    assert [p.data for p in plain] == [p.data for p in again] and "pen" not in plain[0].conditions
    wide = photosynth.digit_photos(xt, yt, 3, seed=5, wide=True)
    for p in wide:
        c = p.conditions
        assert c["pen"] in ("thick", "thin", "normal") and -15 <= c["rotation"] <= 15 and 0 <= c["blur"] <= 1.5


def test_wide_photos_are_read(photo_model):
    """The wide photos (turns to 15 degrees, thick and thin pens, blur to 1.5 px) with the photo tests'
    fast-cnn, trained without augmentation: a guard on the whole chain for them. Measured (numba seeds
    0-4, host and haswell code, numpy seed 0; results/test-margins-zen3-2026-12-01c.json, the mask's
    in-line groups in): 187-190 of the 200 digits, 34-41 of the 50 numbers; the thresholds sit 4 and
    4 below the worst. (The reader, three augmented networks, reads 96-98.25% of such digits:
    docs/photos.md.)"""
    model, _, xt, yt = photo_model
    photos = photosynth.digit_photos(xt, yt, 200, seed=3, wide=True)
    got = predict_images(model, [Image.open(io.BytesIO(p.data)) for p in photos])
    right = sum(g.get("digit") == p.labels[0] for g, p in zip(got, photos))
    assert right >= 183, f"{right}/200"
    numbers = photosynth.number_photos(xt, yt, 50, seed=3, wide=True)
    exact = sum(r["number"] == "".join(map(str, p.labels))
                for r, p in zip(read_numbers(model, [Image.open(io.BytesIO(p.data)) for p in numbers]), numbers))
    assert exact >= 30, f"{exact}/50"


def test_a_number_photo_holds_the_whole_number(photo_model):
    """Turned digits and wide gaps can outgrow the page; the number is then drawn smaller, never cut
    off by the picture's edge (6, 9 and 9 of the 100 wide numbers of seeds 2, 5 and 8 were: their
    last digit unreadable, yet counted as a misread)."""
    _, _, xt, yt = photo_model
    for seed, wide in ((2, True), (8, True), (7, False)):
        for p in photosynth.number_photos(xt, yt, 100, seed=seed, wide=wide):
            assert len(p.boxes) == len(p.labels) and p.boxes[-1][2] < p.conditions["size"][0], (seed, p.boxes)


def test_faint_strokes_are_found_and_blank_pages_stay_blank(photo_model, tmp_path):
    """Blurred and thin-pen digits (photosynth's wide photos) are found by the ink mask: of these 80,
    50 were before the faint-stroke rule, 65 with it, 80 once faint pieces away from the picture's
    edge count too (measured). Blank pages still hold no digit: without the edge rule, the shadows'
    tips at the border on pages 5, 16, 25 and 33 of these 40 would be read as writing (measured)."""
    from fastmnist.photos import inkmask
    from fastmnist.photos.images import as_grey
    _, _, xt, yt = photo_model
    photos = photosynth.digit_photos(xt, yt, 80, seed=3, wide=True)
    found = 0
    for k, p in enumerate(photos):
        try:
            inkmask.ink_map(as_grey(p.save(tmp_path / f"w{k}{p.suffix}"), "w"))
            found += 1
        except inkmask.NoInk:
            pass
    assert found >= 76, found
    for seed in range(40):
        blank = photosynth.blank_photo(seed=seed)
        with pytest.raises(inkmask.NoInk):
            inkmask.ink_map(as_grey(blank.save(tmp_path / f"b{seed}{blank.suffix}"), "b"))


def test_a_faint_stroke_counts_inside_the_picture_not_at_its_edge():
    """The same faint, blurred stroke (peak ink 0.4 of the paper's light, mean about 0.25: under every
    pen test that holds at the edge) is a digit in the middle of the page and the light's residue at
    its edge."""
    from fastmnist.photos import inkmask
    page = np.full((200, 200), 0.9)
    stroke = np.zeros((200, 200))
    stroke[60:140] = 0.4 * np.exp(-0.5 * ((np.arange(200) - 100) / 3.0) ** 2)  # a vertical bar, 80 px tall
    inside = inkmask.ink_map(page * (1 - stroke))
    assert len(inside.pieces) == 1 and inside.pieces[0].box[1] < 65 < 135 < inside.pieces[0].box[3]
    at_edge = np.roll(stroke, -60, axis=0)  # the same bar from the top border down
    with pytest.raises(inkmask.NoInk):
        inkmask.ink_map(page * (1 - at_edge))
    darker = np.roll(stroke, -60, axis=0) * 2.0  # a pen's ink at the edge still counts
    assert len(inkmask.ink_map(page * (1 - darker)).pieces) == 1


def test_a_faint_pens_fainter_digit_is_not_lost_from_the_number():
    """Two faint strokes side by side, peaks 0.4 and 0.2 of the paper's light: the second is under the
    threshold that seeds strokes (0.22 at the least), so it is found only because the pen is faint and
    the seed follows it (FAINT_SEED times the darkest piece's mean ink)."""
    from fastmnist.photos import inkmask
    page = np.full((200, 300), 0.9)
    x = np.arange(300)
    bars = 0.4 * np.exp(-0.5 * ((x - 80) / 3.0) ** 2) + 0.2 * np.exp(-0.5 * ((x - 200) / 3.0) ** 2)
    stroke = np.zeros((200, 300))
    stroke[60:140] = bars
    found = inkmask.ink_map(page * (1 - stroke)).pieces
    assert [p.box[0] < 100 for p in found] == [True, False], [p.box for p in found]


def test_a_digits_crop_keeps_the_faint_ink_beside_its_strokes_not_a_neighbours():
    """A thin pen's stroke fades below the mask's floor along its thinnest part: the crop keeps the
    unmasked ink within STROKE_REACH of the piece's box (here 3 px), but not ink farther away, nor
    another piece's ink inside the box."""
    from fastmnist.photos import inkmask
    ink, labels = np.zeros((50, 60)), np.zeros((50, 60), int)
    labels[10:40, 20:22] = 1
    labels[38:40, 20:50] = 1  # an L: the box is x 20..50, y 10..40, its longer side 30
    ink[labels == 1] = 0.8
    ink[10:30, 24] = 0.08   # faint, 3 px from the stroke: part of it
    ink[10:30, 40] = 0.08   # faint, 18 px from the nearest stroke: not
    labels[20:25, 30:32] = 2  # another piece inside the box
    ink[20:25, 30:32] = 0.9
    piece = inkmask.Piece(1, int((labels == 1).sum()), (20, 10, 50, 40), float(ink[labels == 1].sum()))
    crop = inkmask.InkMap(ink, labels, [piece], 1.0, floor=0.15).crop([piece])
    assert crop.shape == (30, 30)
    assert np.allclose(crop[0:20, 4], 0.08)   # the faint stroke beside the piece
    assert not crop[0:20, 20].any()           # the faint mark beyond reach
    assert not crop[10:15, 10:12].any()       # the other piece
    assert np.allclose(crop[labels[10:40, 20:50] == 1], 0.8)  # the piece's own ink as it is


def test_a_fainter_digit_in_line_with_the_others_is_kept_shading_is_not(monkeypatch):
    """Three strokes 80 px tall in a row, the third much fainter (mean ink under half the darkest's,
    the faint-shading test): it stands in line with the writing, as tall as its digits, so it is a
    digit; a faint mark a quarter of their height is not."""
    from fastmnist.photos import inkmask
    page = np.full((200, 400), 0.9)
    x = np.arange(400)
    profile = lambda at, peak: peak * np.exp(-0.5 * ((x - at) / 3.0) ** 2)
    stroke = np.zeros((200, 400))
    stroke[60:140] = profile(80, 0.8) + profile(180, 0.8) + profile(280, 0.3)
    stroke[90:110] += profile(350, 0.3)  # short: shading, not a digit
    found = inkmask.ink_map(page * (1 - stroke)).pieces
    assert [round((p.box[0] + p.box[2]) / 2) for p in found] == [80, 180, 280], [p.box for p in found]
    monkeypatch.setattr(inkmask, "IN_LINE", False)
    assert len(inkmask.ink_map(page * (1 - stroke)).pieces) == 2


def _three_strokes(third_rows, third_peak, third_width, dark_peak, dark_width):
    """A page with two strokes 80 px tall at x 80 and 180 (peak ink ``dark_peak``) and a third at
    x 280 over ``third_rows`` (slices), fainter and maybe wider: its ink map's pieces."""
    from fastmnist.photos import inkmask
    page = np.full((200, 400), 0.9)
    x = np.arange(400)
    profile = lambda at, peak, width: peak * np.exp(-0.5 * ((x - at) / width) ** 2)
    stroke = np.zeros((200, 400))
    stroke[60:140] = profile(80, dark_peak, dark_width) + profile(180, dark_peak, dark_width)
    for rows in third_rows:
        stroke[rows] += profile(280, third_peak, third_width)
    return inkmask.ink_map(page * (1 - stroke)).pieces


def test_a_faint_digit_broken_in_two_is_judged_whole(monkeypatch):
    """A faint third digit whose stroke breaks in the middle: each half is under half the writing's
    height, but the two share their columns and together stand as tall as a digit in line."""
    from fastmnist.photos import inkmask
    halves = (slice(60, 97), slice(103, 140))
    found = _three_strokes(halves, 0.3, 3.0, 0.8, 3.0)
    assert sorted(round((p.box[0] + p.box[2]) / 2) for p in found) == [80, 180, 280, 280], [p.box for p in found]
    monkeypatch.setattr(inkmask, "IN_LINE_GROUPS", False)  # each half judged alone: too short
    assert len(_three_strokes(halves, 0.3, 3.0, 0.8, 3.0)) == 2


def test_a_fainter_digit_of_a_faint_pen_is_kept_from_IN_LINE_MIN(monkeypatch):
    """A faint pen (every stroke under PEN_MIN): the third digit, fainter and blurred wider, has a
    mean ink between IN_LINE_MIN and PEN_INSIDE_MIN (as a thin pen's 7 beside its 4 and 8 had on a
    wide photo): it is a digit in line with the writing."""
    from fastmnist.photos import inkmask
    found = _three_strokes((slice(60, 140),), 0.19, 6.0, 0.5, 4.0)
    assert [round((p.box[0] + p.box[2]) / 2) for p in found] == [80, 180, 280], [p.box for p in found]
    assert inkmask.IN_LINE_MIN <= found[2].mass / found[2].area < inkmask.PEN_INSIDE_MIN  # the case meant
    monkeypatch.setattr(inkmask, "IN_LINE_MIN", inkmask.PEN_INSIDE_MIN)
    assert len(_three_strokes((slice(60, 140),), 0.19, 6.0, 0.5, 4.0)) == 2


def test_a_faint_digit_is_placed_with_solid_strokes_like_mnist(photo_model):
    """MNIST's strokes are solid (about 40% of a digit's ink pixels at full strength); a faint, uneven
    stroke's ink is scaled so that its cores are too, not by its one darkest pixel."""
    from fastmnist.photos.images import place
    _, _, xt, _ = photo_model
    for digit in xt[:20].reshape(-1, 28, 28):
        uneven = digit[4:24, 4:24] * np.linspace(0.15, 0.4, 20)[None, :]  # faint, and fading left to right
        uneven[10, 10] = 0.5  # one dark dot where two strokes cross
        placed = place(uneven)
        ink = placed[placed > 0.05]
        assert np.mean(ink >= 0.95) >= 0.25, np.mean(ink >= 0.95)


def test_a_reader_that_cannot_be_cached_still_reads(tmp_path, mnist_dir):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    env = dict(os.environ, XDG_CACHE_HOME=str(a_file), FASTMNIST_READER_TRAIN_LIMIT="500",
               FASTMNIST_DATA=str(mnist_dir), FASTMNIST_BACKEND="numpy")
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "predict", str(REPO / "docs" / "img" / "photo-example.jpg"),
                           "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "could not cache it" in proc.stderr and json.loads(proc.stdout.strip().splitlines()[-1])["digit"] in range(10)
