"""Rendering helpers shared by the phantoms: world grids, partial-volume shapes, point spread and noise.

Shapes are rendered as the fraction of each voxel they fill (sub-voxel supersampling), so that edges show
partial volume as in a real scan; the point spread function is a Gaussian and noise is white Gaussian.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Grid:
    """Voxel grid: `shape` (z, y, x); `spacing`, `origin` (x, y, z) mm; identity direction."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @classmethod
    def centred(cls, shape, spacing, centre=(0.0, 0.0, 0.0)) -> Grid:
        """Grid whose middle lies at `centre` (x, y, z) mm."""
        shape = tuple(int(n) for n in shape)
        spacing = tuple(float(s) for s in spacing)
        origin = tuple(
            float(c - (n - 1) / 2 * s) for c, n, s in zip(centre, shape[::-1], spacing, strict=True)
        )
        return cls(shape, spacing, origin)

    def axis(self, xyz: int) -> np.ndarray:
        """World coordinates (mm) of the voxel centres along x (0), y (1) or z (2)."""
        n = self.shape[2 - xyz]
        return (self.origin[xyz] + self.spacing[xyz] * np.arange(n)).astype(np.float64)

    def to_index(self, point_xyz) -> np.ndarray:
        """Continuous (x, y, z) voxel index of world points (..., 3)."""
        return (np.asarray(point_xyz, dtype=np.float64) - self.origin) / self.spacing

    def box(self, centre_xyz, half_extent_xyz, pad_voxels: int = 0) -> tuple[slice, slice, slice] | None:
        """(z, y, x) slices of the voxels whose centres lie within centre ± half extent; None if outside."""
        lo = np.floor(self.to_index(np.asarray(centre_xyz) - half_extent_xyz)).astype(int) - pad_voxels
        hi = np.ceil(self.to_index(np.asarray(centre_xyz) + half_extent_xyz)).astype(int) + 1 + pad_voxels
        size = np.array(self.shape[::-1])
        lo, hi = np.clip(lo, 0, size), np.clip(hi, 0, size)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(lo[i]), int(hi[i])) for i in (2, 1, 0))

    def box_coordinates(self, box, supersample: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (z, y, x) sample coordinates in a box, each voxel split into supersample³ sub-voxels.

        Returned arrays are 1-D per axis with supersample samples per voxel, in voxel order.
        """
        offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
        axes = []
        for xyz, sl in zip((2, 1, 0), box, strict=True):
            centres = self.axis(xyz)[sl]
            axes.append((centres[:, None] + offsets[None, :] * self.spacing[xyz]).ravel())
        return tuple(axes)


def resample_polyline(points: np.ndarray, step: float) -> np.ndarray:
    """Points evenly spaced by arc length along a polyline."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.linspace(0.0, arc[-1], max(int(arc[-1] / step) + 1, 2))
    return np.stack([np.interp(s, arc, points[:, i]) for i in range(3)], axis=1)


def block_mean(samples: np.ndarray, supersample: int) -> np.ndarray:
    """Average blocks of supersample sub-voxel samples per axis (any number of axes) back to voxels."""
    if supersample == 1:
        return samples
    split = [n for size in samples.shape for n in (size // supersample, supersample)]
    return samples.reshape(split).mean(axis=tuple(range(1, 2 * samples.ndim, 2)))


def ellipsoid_fraction(grid: Grid, centre_xyz, semi_axes_mm, rotation=None, supersample: int = 3):
    """Fraction of each voxel inside an ellipsoid. Returns (box, fraction) or None when it misses the grid.

    `rotation` (3x3, columns = the ellipsoid axes in world x, y, z) defaults to the identity.
    """
    semi_axes = np.asarray(semi_axes_mm, dtype=np.float64)
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    # Axis-aligned half extent of the rotated ellipsoid.
    half_extent = np.sqrt(((rotation * semi_axes[None, :]) ** 2).sum(axis=1))
    box = grid.box(centre_xyz, half_extent, pad_voxels=1)
    if box is None:
        return None
    zs, ys, xs = grid.box_coordinates(box, supersample)
    d = [
        xs[None, None, :] - centre_xyz[0],
        ys[None, :, None] - centre_xyz[1],
        zs[:, None, None] - centre_xyz[2],
    ]
    q = 0.0
    for axis in range(3):
        local = d[0] * rotation[0, axis] + d[1] * rotation[1, axis] + d[2] * rotation[2, axis]
        q = q + (local / semi_axes[axis]) ** 2
    return box, block_mean((q <= 1.0).astype(np.float32), supersample)


def cylinder_fraction(grid: Grid, centre_xyz, radius_mm: float, length_mm: float, supersample: int = 5):
    """Fraction of each voxel inside a cylinder along z (disk in-plane, interval in z), exact in z.

    Returns (box, fraction) or None when it misses the grid.
    """
    half = np.array([radius_mm, radius_mm, length_mm / 2])
    box = grid.box(centre_xyz, half, pad_voxels=1)
    if box is None:
        return None
    zbox, ybox, xbox = box
    _, ys, xs = grid.box_coordinates((slice(0, 1), ybox, xbox), supersample)
    inside = ((xs[None, :] - centre_xyz[0]) ** 2 + (ys[:, None] - centre_xyz[1]) ** 2) <= radius_mm**2
    disk = block_mean(inside.astype(np.float32), supersample)
    # z: overlap of each slab [z - dz/2, z + dz/2] with the cylinder's length, as a fraction of the slab.
    dz = grid.spacing[2]
    zc = grid.axis(2)[zbox]
    lo = np.maximum(zc - dz / 2, centre_xyz[2] - length_mm / 2)
    hi = np.minimum(zc + dz / 2, centre_xyz[2] + length_mm / 2)
    along = np.clip(hi - lo, 0.0, None) / dz
    return box, (along[:, None, None] * disk[None]).astype(np.float32)


def gaussian_sigma_voxels(grid: Grid, sigma_mm) -> tuple[float, float, float]:
    """Gaussian sigma in mm (one number, or (x, y, z) for an anisotropic one) as (z, y, x) voxel sigmas."""
    sigma = np.broadcast_to(np.asarray(sigma_mm, dtype=np.float64), (3,))
    return tuple(float(sigma[i]) / grid.spacing[i] for i in (2, 1, 0))


def blur(image: np.ndarray, grid: Grid, sigma_mm) -> np.ndarray:
    """Gaussian point spread function (sigma in mm, isotropic or (x, y, z)); no-op for sigma 0."""
    if np.max(sigma_mm) <= 0:
        return image
    return ndimage.gaussian_filter(image, gaussian_sigma_voxels(grid, sigma_mm), mode="nearest", truncate=3.0)


def add_noise(image: np.ndarray, noise_hu: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise with standard deviation noise_hu (in place; float32)."""
    if noise_hu > 0:
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_hu)
    return image
