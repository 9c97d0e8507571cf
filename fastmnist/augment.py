"""Augmentation: each training batch warped by a random affine map per sample, on the backend.

The maps are drawn on the host from the training loop's own generator (so a seed gives the same
warps on every backend, and a resumed run draws what the uninterrupted one drew); the warp itself
is the backend kernel ``affine_warp`` (contract: bilinear, zero outside, about the image centre;
numpy, numba, cupy, checked against a loop oracle on each).

Used through ``fit(..., augment=Augment())`` or ``fastmnist train --augment``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .errors import InvalidArgument


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
    """

    rotation: float = 12.0
    scale: float = 0.1
    shear: float = 8.0
    shift: float = 2.0

    def __post_init__(self):
        for name, value, top in (("rotation", self.rotation, 90.0), ("scale", self.scale, 0.5),
                                 ("shear", self.shear, 45.0), ("shift", self.shift, 14.0)):
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
    """``xb`` (N, C, H, W) or flat (N, side*side) warped on backend ``be``; the same shape back."""
    theta = augment.thetas(rng, xb.shape[0])
    if xb.ndim == 2:
        side = math.isqrt(xb.shape[1])
        if side * side != xb.shape[1]:
            raise InvalidArgument(f"augment needs square images; flat inputs of {xb.shape[1]} values are not")
        return be.affine_warp(xb.reshape(xb.shape[0], 1, side, side), theta).reshape(xb.shape)
    return be.affine_warp(xb, theta)
