"""Augmentation: each training batch warped by a random affine map per sample, on the backend,
and where asked its strokes made thicker or thinner and blurred.

The maps, stroke amounts and blur widths are drawn on the host from the training loop's own
generator (so a seed gives the same batches on every backend, and a resumed run draws what the
uninterrupted one drew); the work is done by backend kernels: ``affine_warp`` (bilinear, zero
outside, about the image centre), ``elastic_warp`` (a smooth distortion from a small grid of
random displacements, bilinear between them), ``stroke_width`` (toward the 3x3 grey dilation or
erosion) and ``gaussian_blur`` (the contract's taps), on numpy, numba and cupy, each checked
against a loop oracle.

Used through ``fit(..., augment=Augment())`` or ``fastmnist train --augment``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .backends.contract import MAX_BLUR_SIGMA
from .errors import InvalidArgument

#: the elastic distortion's grid of random displacements (corners on the image's): 4 x 4 points
#: bend a 28-pixel digit's strokes over about 9 pixels, the scale of Simard et al.'s smoothed fields
ELASTIC_GRID = 4


@dataclass(frozen=True)
class Augment:
    """Ranges of the random maps, each drawn uniformly per sample.

    Parameters
    ----------
    rotation : float
        Degrees, in [-rotation, rotation].
    scale : float
        Relative size change, in [1 - scale, 1 + scale].
    shear : float
        Degrees of horizontal shear, in [-shear, shear].
    shift : float
        Pixels, each axis in [-shift, shift].
    thickness : float
        Stroke width change, in [-thickness, thickness]: the share of the way toward the 3x3 grey
        dilation (> 0, a thicker pen) or erosion (< 0, a thinner one). 0 draws nothing.
    blur : float
        Gaussian blur, sigma in [0, blur] pixels. 0 draws nothing.
    elastic : float
        Elastic distortion: displacements in [-elastic, elastic] pixels on an ELASTIC_GRID x
        ELASTIC_GRID grid over the image, bilinear between its points. 0 draws nothing.
    """

    rotation: float = 12.0
    scale: float = 0.1
    shear: float = 8.0
    shift: float = 2.0
    thickness: float = 0.0
    blur: float = 0.0
    elastic: float = 0.0

    def __post_init__(self):
        for name, value, top in (("rotation", self.rotation, 90.0), ("scale", self.scale, 0.5),
                                 ("shear", self.shear, 45.0), ("shift", self.shift, 14.0),
                                 ("thickness", self.thickness, 1.0), ("blur", self.blur, MAX_BLUR_SIGMA),
                                 ("elastic", self.elastic, 5.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= top:
                raise InvalidArgument(f"Augment: {name} must be a number in [0, {top}], got {value!r}")

    def config(self) -> dict:
        return asdict(self)

    def thetas(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, 2, 3) float64 sampling maps: for each sample, the inverse of the drawn forward map
        ``p -> R(angle) @ Shear @ scale * p + shift`` (about the image centre)."""
        angle = np.deg2rad(rng.uniform(-self.rotation, self.rotation, n))
        shear = np.deg2rad(rng.uniform(-self.shear, self.shear, n))
        size = rng.uniform(1 - self.scale, 1 + self.scale, n)
        shift = rng.uniform(-self.shift, self.shift, (n, 2))
        forward = np.empty((n, 2, 2))
        cos, sin, tan = np.cos(angle), np.sin(angle), np.tan(shear)
        forward[:, 0, 0], forward[:, 0, 1] = size * cos, size * (cos * tan - sin)
        forward[:, 1, 0], forward[:, 1, 1] = size * sin, size * (sin * tan + cos)
        inverse = np.linalg.inv(forward)
        theta = np.empty((n, 2, 3))
        theta[:, :, :2] = inverse
        theta[:, :, 2] = -np.einsum("nij,nj->ni", inverse, shift)
        return theta


def warp_batch(be, xb, augment: Augment, rng: np.random.Generator):
    """``xb`` (N, C, H, W) or flat (N, side*side) warped on backend ``be`` (then its strokes
    changed and blurred, where ``augment`` asks); the same shape back. A range of 0 draws nothing
    from ``rng``, so runs without strokes or blur draw what they drew before those existed."""
    n = xb.shape[0]
    theta = augment.thetas(rng, n)
    images = xb
    if xb.ndim == 2:
        side = math.isqrt(xb.shape[1])
        if side * side != xb.shape[1]:
            raise InvalidArgument(f"augment needs square images; flat inputs of {xb.shape[1]} values are not")
        images = xb.reshape(n, 1, side, side)
    out = be.affine_warp(images, theta)
    if augment.elastic > 0:
        out = be.elastic_warp(out, rng.uniform(-augment.elastic, augment.elastic, (n, 2, ELASTIC_GRID, ELASTIC_GRID)))
    if augment.thickness > 0:
        out = be.stroke_width(out, rng.uniform(-augment.thickness, augment.thickness, n))
    if augment.blur > 0:
        out = be.gaussian_blur(out, rng.uniform(0.0, augment.blur, n))
    return out.reshape(xb.shape)
