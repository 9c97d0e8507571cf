"""Separating ink from paper in a photo: the step before MNIST's recipe.

1. Paper light: the page is estimated by a morphological closing (a max then a min filter wider
   than any pen stroke) and divided out, which flattens lighting gradients, vignetting and shadow
   edges alike (a closing keeps steps and slopes, it only fills narrow dark marks), leaving an
   "ink" map in [0, 1] that is 0 on paper wherever the light falls.
2. Ink mask: Otsu's threshold on that map, kept within sane bounds, with hysteresis so that a
   stroke's soft edges stay attached to its core while isolated faint noise does not.
3. Pieces: connected components; specks (tiny next to the largest piece) and ruled lines (long,
   thin, across the page) are dropped. The ink's grey levels are kept inside the mask.

scikit-image does the thresholds and labelling, SciPy (which it brings) the filters.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ImageError, NoInk

#: The ink map is computed at most this many pixels on the longer side (boxes are scaled back).
WORK_SIDE = 800
#: ... and at least this many on the shorter side (tiny images are enlarged first).
MIN_SIDE = 112
#: Closing width as a fraction of the shorter side: wider than pen strokes, even in close-ups.
CLOSING_FRACTION = 0.2
#: Bounds on Otsu's threshold of the ink map; below INK_MIN nothing counts as ink at all (0.3
#: refused thin, blurred digits whose strongest ink is 0.23-0.29; at 0.2, 1000 of 1000 blank pages
#: are still "no digit found": the piece tests below refuse what light and paper leave).
THRESHOLD_BOUNDS = (0.22, 0.6)
INK_MIN = 0.2
#: A picture whose median grey is darker than this is light ink on a dark ground.
DARK_PAPER = 0.35
#: The second pass's closing is this many stroke widths wide.
STROKES_PER_CLOSING = 3
#: A piece smaller than this fraction of the largest one is a speck.
SPECK_FRACTION = 0.03
#: A piece whose mean ink is below this fraction of the darkest large piece's is no pen stroke
#: (what is left of a shadow's edge, a fold, a faint smudge). 0.4 read one more wide number of 200
#: but kept a shadow's edge (mean 0.3-0.4) beside dark ink as part of a digit: measured, dropped.
FAINT_FRACTION = 0.5
#: Pen strokes' mean ink is at least this (measured: 0.46 or more on the photos of tests/, while
#: what shadows and paper leave on blank pages stays under 0.28).
PEN_MIN = 0.38
#: ... or, for a blurred or thin-pen stroke (its mean ink spread thin), a mean of at least
#: PEN_FAINT_MIN with a peak of at least PEN_PEAK_MIN (measured on photosynth's wide photos: such
#: strokes 0.30-0.37 mean with peaks 0.51-0.81; blank pages' largest marks at most 0.27 mean).
PEN_FAINT_MIN = 0.30
PEN_PEAK_MIN = 0.55
#: Away from the picture's edge, a piece with a mean ink of at least PEN_INSIDE_MIN and at least
#: PEN_INSIDE_SIZE of the shorter side long is a stroke too (a thin pen blurred: means from 0.17;
#: what light and paper leave on blank pages, means up to 0.27, sits at the edge: the tip of a
#: shadow where it meets the border, which the closing fills as it fills strokes).
PEN_INSIDE_MIN = 0.15
PEN_INSIDE_SIZE = 0.06
#: Where the darkest piece is fainter than PEN_MIN (a thin or blurred pen), strokes are seeded
#: again from this fraction of its mean ink: a number's fainter digits may not reach Otsu's
#: threshold (at least 0.22) at all (measured on the wide photos: +1 and +3 digits of 400).
FAINT_SEED = 0.6
#: A digit's crop keeps the unmasked ink within this fraction of its box's longer side of its
#: pieces (InkMap.crop). Measured on the wide photos, seeds 2 and 5, 800 digits: 0.05, 0.1 and
#: 0.2 read 96.5%, 96.75% and 96.6% right, the mask alone 95.9%, the mask with ink counted from
#: 0.3 of the hysteresis floor 96.4% (benchmarks/results/photo-mask-ab-2026-12-01.txt, sixth session).
STROKE_REACH = 0.1
#: A fainter piece (mean ink from IN_LINE_MIN) beside writing counts when it is as tall as the
#: writing's pieces, within these fractions of their median height, and in their rows (_in_line);
#: with IN_LINE_GROUPS, fainter pieces that share their columns are judged together, as one digit.
#: Measured on the wide photos, seeds 2, 5 and 8 (300 numbers): IN_LINE_MIN 0.15 -> 0.12 and the
#: groups each cut one more number into the right count of digits, neither lost a digit; 0.10 read
#: as 0.12 (benchmarks/results/photo-mask-ab-2026-12-01.txt, seventh session).
IN_LINE = True
IN_LINE_HEIGHT = (0.5, 1.5)
IN_LINE_MIN = 0.12
IN_LINE_GROUPS = True
#: A piece much shorter than the digits (_merge_fragments) joins its nearest neighbour only within
#: this fraction of the digits' median height of it; farther away it is dropped (None: never). A
#: shadow's tip at the picture's edge, in line with a 0, had widened the 0's box by half.
#: FRAGMENT_REACH and FAINT_TRUSTED, measured with the reader on the five wide samples (seeds 2, 5,
#: 8, 11, 14; 2000 digits): 96.90% -> 96.95% and 97.05% right, 97.10% together; numbers unchanged,
#: blank pages 0 of 1000 read (benchmarks/results/photo-mask-ab-2026-12-01.txt, ninth session).
FRAGMENT_REACH = 0.5
#: The faint pen's second pass (FAINT_SEED) only extends strokes the first pass accepted as
#: writing, so it skips the test for "only faint residue": a whole faint stroke's mean ink falls
#: under that test's floor even where its darkest junction passed it.
FAINT_TRUSTED = True


def _skimage():
    try:
        from scipy import ndimage
        from skimage import filters, measure
    except ImportError:
        raise ImageError("preparing photos needs scikit-image: pip install 'fastmnist[image]'") from None
    return ndimage, filters, measure


@dataclass
class Piece:
    label: int
    area: int
    box: tuple  # (x0, y0, x1, y1) in the ink map's pixels, x1/y1 exclusive
    mass: float
    peak: float = 1.0  # the strongest ink in the piece


@dataclass
class InkMap:
    ink: np.ndarray        # (h, w) ink strength in [0, 1], at work scale
    labels: np.ndarray     # (h, w) piece labels (0: paper)
    pieces: list           # kept Pieces, left to right
    scale: float           # work pixels per original pixel
    floor: float = 0.0     # the hysteresis threshold: ink below it is not part of a stroke (crop keeps it beside one)

    def crop(self, pieces) -> np.ndarray:
        """The ink of ``pieces`` and of the unmasked ink around them (within STROKE_REACH of the
        box's longer side, other pieces excluded), grey levels as they are, cropped to their box.

        A thin pen's strokes, blurred, fade below the hysteresis floor along their thinnest parts
        (a 6's loop, a 4's first stroke): the mask cuts them off, and MNIST's recipe then sees
        another digit. Their faint grey levels beside the strokes keep the shape; paper there is
        near 0 once the light is divided out."""
        ndimage = _skimage()[0]
        x0, y0 = min(p.box[0] for p in pieces), min(p.box[1] for p in pieces)
        x1, y1 = max(p.box[2] for p in pieces), max(p.box[3] for p in pieces)
        labels = self.labels[y0:y1, x0:x1]
        mine = np.isin(labels, [p.label for p in pieces])
        reach = max(1.0, STROKE_REACH * max(y1 - y0, x1 - x0))
        near = ndimage.distance_transform_edt(~mine) <= reach
        keep = mine | (near & (labels == 0))
        return np.where(keep, self.ink[y0:y1, x0:x1], 0.0)

    def box(self, pieces) -> list[int]:
        """The pieces' box in the original (upright) picture's pixels."""
        x0, y0 = min(p.box[0] for p in pieces), min(p.box[1] for p in pieces)
        x1, y1 = max(p.box[2] for p in pieces), max(p.box[3] for p in pieces)
        return [int(np.floor(x0 / self.scale)), int(np.floor(y0 / self.scale)), int(np.ceil(x1 / self.scale)),
                int(np.ceil(y1 / self.scale))]


def resize(a: np.ndarray, h: int, w: int, method: str = "auto") -> np.ndarray:
    """A float image (h0, w0) -> (h, w) through Pillow's float mode: 'auto' averages boxes when
    shrinking and is bicubic when enlarging; 'lanczos' is MNIST's anti-aliased scaling."""
    from PIL import Image
    methods = {"box": Image.Resampling.BOX, "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
    if method == "auto":
        method = "box" if h * w < a.shape[0] * a.shape[1] else "bicubic"
    return np.asarray(Image.fromarray(a.astype(np.float32)).resize((w, h), methods[method]), np.float64)


def _rescale(grey: np.ndarray, scale: float) -> np.ndarray:
    h, w = grey.shape
    return resize(grey, max(1, round(h * scale)), max(1, round(w * scale)))


def _flatten(work, k, ndimage):
    """Divide out the paper: a closing k pixels wide (max then min filter) estimates the page."""
    paper = ndimage.minimum_filter(ndimage.maximum_filter(work, size=k), size=k)
    paper = ndimage.uniform_filter(np.maximum(paper, work), size=max(3, k // 8))  # soften the filters' blocks
    ink = np.clip(1.0 - work / np.maximum(paper, 1e-3), 0.0, 1.0)
    return ndimage.gaussian_filter(ink, 0.6)  # JPEG blocks and sensor noise


def _dark_ink(work) -> bool:
    """Is the ink darker than the paper? Paper is most of a picture of a digit, and even paper in a
    deep shadow stays lighter than DARK_PAPER somewhere along the border; a darker median and a
    dark border all round mean light ink on a dark ground (MNIST's own images). Local contrast
    tests fail here: ruled lines and light strips between shadows are thin bright marks on a page,
    just as strokes are on a blackboard."""
    border = np.concatenate([work[0], work[-1], work[:, 0], work[:, -1]])
    return float(np.median(work)) >= DARK_PAPER or float(np.percentile(border, 95)) >= DARK_PAPER


def _stroke_width(labels, pieces, ndimage) -> float:
    """Stroke width of the larger pieces: twice the distance to the edge along the skeleton."""
    from skimage.morphology import skeletonize
    biggest = max(p.area for p in pieces)
    widths = []
    for p in pieces:
        if p.area < 0.2 * biggest:
            continue
        x0, y0, x1, y1 = p.box
        piece = np.pad(labels[y0:y1, x0:x1] == p.label, 1)
        depth = ndimage.distance_transform_edt(piece)[skeletonize(piece)]
        if depth.size:  # the thick end of the range: blobs where strokes meet must still be filled
            widths.append(2.0 * float(np.percentile(depth, 90)))
    return max(widths) if widths else 0.0


def _pieces(ink, filters, measure, seed=None, trusted=False):
    """Labels, kept pieces and the floor: Otsu's threshold (or ``seed``, where lower) seeds the
    strokes, and hysteresis follows them down to half of it."""
    lo, hi = THRESHOLD_BOUNDS
    t = float(np.clip(filters.threshold_otsu(ink), lo, hi))
    t = t if seed is None else min(t, seed)
    labels = measure.label(filters.apply_hysteresis_threshold(ink, 0.5 * t, t), connectivity=2)
    return labels, _keep(labels, ink, measure, trusted), 0.5 * t


def ink_map(grey: np.ndarray) -> InkMap:
    """Grey levels (H, W) in [0, 1], either polarity -> the ink, its pieces and the work scale.

    Two passes: the first, with a closing wide enough for any pen in a close-up, finds the strokes
    and measures their width; the second flattens the light again with a closing a few strokes
    wide, narrow enough to follow the edge of a shadow across the page."""
    ndimage, filters, measure = _skimage()
    h, w = grey.shape
    scale = min(1.0, WORK_SIDE / max(h, w))
    if min(h, w) * scale < MIN_SIDE:
        scale = MIN_SIDE / min(h, w)
    work = _rescale(grey, scale) if scale != 1.0 else grey.astype(np.float64)
    k = max(3, int(CLOSING_FRACTION * min(work.shape)) | 1)
    if not _dark_ink(work):  # light ink on dark paper (MNIST itself): make the paper light
        work = 1.0 - work
    ink = _flatten(work, k, ndimage)
    if ink.max() < INK_MIN:
        raise NoInk(f"no digit found (the strongest mark is {ink.max():.2f} of the paper's brightness darker)")
    labels, pieces, floor = _pieces(ink, filters, measure)
    if pieces:
        k2 = max(5, int(STROKES_PER_CLOSING * _stroke_width(labels, pieces, ndimage)) | 1)
        if k2 < 0.7 * k:
            ink = _flatten(work, k2, ndimage)
            labels, pieces, floor = _pieces(ink, filters, measure)
    if not pieces:
        raise NoInk("no digit found (only specks, lines or faint shading on the paper)")
    darkest = max(p.mass / p.area for p in pieces)
    if darkest < PEN_MIN:  # a faint pen: its faintest digits may not reach the usual seed threshold
        faint = _pieces(ink, filters, measure, seed=FAINT_SEED * darkest, trusted=FAINT_TRUSTED)
        if faint[1]:
            labels, pieces, floor = faint
    return InkMap(ink, labels, sorted(pieces, key=lambda p: p.box[0]), scale, floor)


def _touches_edge(piece: Piece, h: int, w: int) -> bool:
    x0, y0, x1, y1 = piece.box
    return x0 == 0 or y0 == 0 or x1 == w or y1 == h


def _pen_ink(piece: Piece) -> bool:
    """Ink as dark as a pen's anywhere in a picture: evenly dark, or a blurred stroke's strong peak."""
    mean = piece.mass / piece.area
    return mean >= PEN_MIN or (mean >= PEN_FAINT_MIN and piece.peak >= PEN_PEAK_MIN)


def _keep(labels, ink, measure, trusted=False) -> list[Piece]:
    h, w = labels.shape
    regions = measure.regionprops(labels, intensity_image=ink)
    pieces, at_edge = [], []
    for r in regions:
        y0, x0, y1, x1 = r.bbox
        bw, bh = x1 - x0, y1 - y0
        thin = r.area / max(bw, bh) <= max(2.5, 0.012 * min(h, w))
        if thin and (bw >= 0.4 * w or bh >= 0.4 * h):  # a ruled line or the page's edge
            continue
        piece = Piece(r.label, int(r.area), (x0, y0, x1, y1), float(r.intensity_mean * r.area), float(r.intensity_max))
        if _touches_edge(piece, h, w) and not _pen_ink(piece):
            at_edge.append(piece)  # the light's residue where the paper estimate is weakest (a shadow's
            continue               # tip at the border), unless it stands in line with writing (below)
        pieces.append(piece)
    if not pieces:
        return []
    biggest = max(p.area for p in pieces)
    big_enough = lambda p: p.area >= SPECK_FRACTION * biggest and p.area >= 6
    pieces = [p for p in pieces if big_enough(p)]
    large = [p for p in pieces if p.area >= 0.2 * biggest]
    darkest = max(p.mass / p.area for p in large)
    faint_stroke = lambda p: p.mass / p.area >= PEN_INSIDE_MIN and max(p.box[2] - p.box[0], p.box[3] - p.box[1]) >= \
        PEN_INSIDE_SIZE * min(h, w)
    if not trusted and not any(_pen_ink(p) or faint_stroke(p) for p in large):  # only the faint residue of shadows and paper
        return []
    kept = [p for p in pieces if p.mass / p.area >= FAINT_FRACTION * darkest]  # pen ink is evenly dark
    if not IN_LINE:
        return kept
    fainter = [p for p in pieces + at_edge if p not in kept and big_enough(p) and p.mass / p.area >= IN_LINE_MIN]
    return kept + _in_line(fainter, [p for p in kept if p.area >= 0.2 * biggest])


def _in_line(candidates: list[Piece], writing: list[Piece]) -> list[Piece]:
    """The candidates that stand in line with the writing as a digit would: as tall as its pieces
    are (IN_LINE_HEIGHT of their median), and within the rows they span. A thin pen's digits differ
    in strength within one number (a fainter 8 beside a darker 7), and a number may run to the
    picture's edge; shading does not take a digit's height in the digits' row. Candidates that
    share columns are judged together (IN_LINE_GROUPS), as one digit: a faint 2 breaks into a top
    and a bottom, each shorter than a digit."""
    heights = sorted(p.box[3] - p.box[1] for p in writing)
    typical = heights[len(heights) // 2]
    top, bottom = min(p.box[1] for p in writing), max(p.box[3] for p in writing)
    lo, hi = IN_LINE_HEIGHT
    groups = _column_groups(candidates) if IN_LINE_GROUPS else [[p] for p in candidates]
    kept = []
    for g in groups:
        _, y0, _, y1 = _extent(g)
        if lo * typical <= y1 - y0 <= hi * typical and min(bottom, y1) - max(top, y0) >= 0.8 * (y1 - y0):
            kept += g
    return kept


def _column_groups(pieces: list[Piece], overlap: float = 0.4) -> list[list[Piece]]:
    """Pieces whose column ranges overlap by at least ``overlap`` of the narrower one, together,
    left to right."""
    groups: list[list[Piece]] = []
    for p in sorted(pieces, key=lambda q: q.box[0]):
        for g in groups:
            gx0, gx1 = min(q.box[0] for q in g), max(q.box[2] for q in g)
            common = min(gx1, p.box[2]) - max(gx0, p.box[0])
            if common >= overlap * min(gx1 - gx0, p.box[2] - p.box[0]):
                g.append(p)
                break
        else:
            groups.append([p])
    return sorted(groups, key=lambda g: min(q.box[0] for q in g))


def group_digits(pieces: list[Piece], overlap: float = 0.4) -> list[list[Piece]]:
    """Pieces -> digits, left to right: pieces whose column ranges overlap by at least ``overlap`` of
    the narrower one are one digit (a 5's bar, a 4 or a 7 written in two strokes)."""
    return _merge_fragments(_column_groups(pieces, overlap))


def _extent(g):
    return (min(q.box[0] for q in g), min(q.box[1] for q in g), max(q.box[2] for q in g), max(q.box[3] for q in g))


def _merge_fragments(groups: list[list[Piece]]) -> list[list[Piece]]:
    """A group much shorter than the others (under 60% of their median height) is a broken-off part
    of a stroke, not a digit: it joins the neighbour it is closest to, left or right."""
    while len(groups) > 1:
        heights = sorted(_extent(g)[3] - _extent(g)[1] for g in groups)
        typical = heights[len(heights) // 2]
        short = [i for i, g in enumerate(groups) if _extent(g)[3] - _extent(g)[1] < 0.6 * typical]
        if not short:
            break
        i = short[0]
        x0, _, x1, _ = _extent(groups[i])
        gap = lambda j, x0=x0, x1=x1: max(_extent(groups[j])[0] - x1, x0 - _extent(groups[j])[2])
        j = min((j for j in (i - 1, i + 1) if 0 <= j < len(groups)), key=gap)
        far = FRAGMENT_REACH is not None and gap(j) > FRAGMENT_REACH * typical
        fragment = groups.pop(i)
        if far:  # not a part of any digit: a shadow's tip or a speck of dirt beside the writing
            continue
        j = j if j < i else j - 1
        groups[j] = groups[j] + fragment
    return groups


def main_digit(pieces: list[Piece]) -> list[Piece]:
    """For a one-digit picture: the piece with the most ink, the pieces that share its columns (as
    ``group_digits`` groups them) and the pieces that reach into its box widened by a third on
    every side (a 4 or a 5 written in two strokes)."""
    main = max(pieces, key=lambda p: p.mass)
    group = next((g for g in group_digits(pieces) if main in g), [main])
    x0, y0, x1, y1 = main.box
    rx, ry = (x1 - x0) / 3, (y1 - y0) / 3
    near = lambda p: p.box[0] < x1 + rx and p.box[2] > x0 - rx and p.box[1] < y1 + ry and p.box[3] > y0 - ry
    return [p for p in pieces if p in group or near(p)]
