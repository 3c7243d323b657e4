"""Randomised CT acquisition for the thorax phantom: grid, slice profile, kernel, noise texture, HU offset,
cardiac motion and metal streaks.

`draw_acquisition` fills in what a caller leaves out, drawn over the range seen in clinical chest and
calcium-scoring CT: field of view 180-400 mm on a matrix of at most 512 (pixel 0.35-0.98 mm), slice
thickness 0.5-5 mm reconstructed at an increment up to half the thickness apart (overlapping) or equal to
it, noise 5-40 HU, a sharp or smooth kernel, a +/-20 HU calibration offset and, for scans without ECG
gating, cardiac motion blur.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..errors import InputError
from . import render

KERNELS = ("smooth", "sharp")
CT_RANGE_HU = (-1024.0, 3071.0)  # 12-bit CT numbers: metal saturates at the top
DEFAULT_MAX_SLICES = 160  # thin slices cover a partial field of view rather than a huge volume
CARDIAC_COVERAGE_MM = (110.0, 170.0)
CHEST_COVERAGE_MM = (250.0, 350.0)
KEYS = (
    "fov_mm", "pixel_mm", "thickness_mm", "increment_mm", "noise_hu", "kernel", "offset_hu", "gated",
    "motion_mm", "coverage_mm", "centre_z_mm", "max_slices",
)  # fmt: skip


def draw_acquisition(rng: np.random.Generator, field_of_view: str, given: dict | None = None) -> dict:
    """A complete acquisition: the given settings, the rest drawn (module docstring)."""
    given = dict(given or {})
    unknown = set(given) - set(KEYS)
    if unknown:
        raise InputError(f"unknown acquisition setting(s) {', '.join(sorted(unknown))}: use {', '.join(KEYS)}")
    # Every value is drawn so that fixing one setting leaves the others' draws unchanged.
    drawn = {"fov_mm": rng.uniform(180.0, 400.0)}
    fov = float(given.get("fov_mm", drawn["fov_mm"]))
    drawn["pixel_mm"] = rng.uniform(max(0.35, fov / 512.0), 0.98)
    drawn["thickness_mm"] = rng.uniform(0.5, 5.0)
    thickness = float(given.get("thickness_mm", drawn["thickness_mm"]))
    overlap = rng.uniform() < 0.4
    drawn["increment_mm"] = max(0.5, thickness * rng.uniform(0.5, 0.9)) if overlap else thickness
    drawn["noise_hu"] = rng.uniform(5.0, 40.0)
    drawn["kernel"] = KERNELS[int(rng.integers(2))]
    drawn["offset_hu"] = rng.uniform(-20.0, 20.0)
    gated = rng.uniform() < (0.8 if field_of_view == "cardiac" else 0.2)
    drawn["gated"] = bool(given.get("gated", gated))
    motion = rng.uniform(1.5, 6.0)
    drawn["motion_mm"] = 0.0 if drawn["gated"] else motion
    coverage = CARDIAC_COVERAGE_MM if field_of_view == "cardiac" else CHEST_COVERAGE_MM
    drawn["coverage_mm"] = rng.uniform(*coverage)
    drawn["centre_z_mm"] = rng.uniform(-8.0, 8.0) if field_of_view == "cardiac" else rng.uniform(0.0, 15.0)
    drawn["max_slices"] = DEFAULT_MAX_SLICES
    acquisition = {**drawn, **given}
    for key in KEYS:
        if key not in ("kernel", "gated", "max_slices"):
            acquisition[key] = float(acquisition[key])
    acquisition["max_slices"] = int(acquisition["max_slices"])
    _check(acquisition)
    return acquisition


def _check(acq: dict) -> None:
    if acq["kernel"] not in KERNELS:
        raise InputError(f"acquisition kernel must be one of {', '.join(KERNELS)}, not {acq['kernel']!r}")
    for key in ("fov_mm", "pixel_mm", "thickness_mm", "increment_mm", "coverage_mm"):
        if acq[key] <= 0:
            raise InputError(f"acquisition {key} must be > 0, not {acq[key]:g}")
    if acq["increment_mm"] > acq["thickness_mm"] + 1e-9:
        raise InputError(
            f"acquisition increment_mm {acq['increment_mm']:g} exceeds thickness_mm {acq['thickness_mm']:g}:"
            " slices would leave gaps; give an increment up to the thickness"
        )
    if acq["noise_hu"] < 0 or acq["motion_mm"] < 0:
        raise InputError("acquisition noise_hu and motion_mm must be >= 0")
    if acq["fov_mm"] / acq["pixel_mm"] > 1024 or acq["max_slices"] < 8:
        raise InputError("acquisition needs fov_mm / pixel_mm <= 1024 and max_slices >= 8")


def grid_of(acq: dict, centre_xy) -> render.Grid:
    """The reconstruction grid: matrix fov / pixel, slices every increment over the coverage (at most
    max_slices, a partial field of view around centre_z_mm beyond that)."""
    matrix = max(8, round(acq["fov_mm"] / acq["pixel_mm"]))
    slices = min(int(acq["coverage_mm"] / acq["increment_mm"]) + 1, acq["max_slices"])
    spacing = (acq["pixel_mm"], acq["pixel_mm"], acq["increment_mm"])
    return render.Grid.centred((slices, matrix, matrix), spacing, centre=(*centre_xy, acq["centre_z_mm"]))


def psf_sigma_mm(acq: dict) -> tuple[float, float, float]:
    """(x, y, z) Gaussian sigma: in-plane by kernel; in z the part of the slice profile (a box of the
    thickness) that sampling at the increment has not already integrated."""
    inplane = 0.75 if acq["kernel"] == "smooth" else 0.45
    extra_z = math.sqrt(max(acq["thickness_mm"] ** 2 - acq["increment_mm"] ** 2, 0.0) / 12.0)
    return (inplane, inplane, math.hypot(0.5, extra_z))


def motion_blur(image, grid: render.Grid, box, weight: np.ndarray, length_mm: float, angle: float) -> None:
    """Average along an in-plane direction over length_mm inside a box, blended by weight (0..1, zero at
    the box's edges): a beating heart scanned without ECG gating."""
    region = image[box]
    steps = max(2, int(math.ceil(length_mm / min(grid.spacing[:2]))) + 1)
    smeared = np.zeros_like(region)
    for t in np.linspace(-0.5, 0.5, steps):
        shift = (round(t * length_mm * math.sin(angle) / grid.spacing[1]), round(t * length_mm * math.cos(angle) / grid.spacing[0]))
        smeared += np.roll(region, shift, axis=(1, 2))
    smeared /= np.float32(steps)
    image[box] = region + weight * (smeared - region)


def sharpen(image: np.ndarray, grid: render.Grid) -> None:
    """A sharp kernel's edge enhancement: unsharp masking in-plane (overshoot at edges, in place)."""
    low = ndimage.gaussian_filter(image, render.gaussian_sigma_voxels(grid, (1.0, 1.0, 0.0)), truncate=3.0)
    image += np.float32(0.6) * (image - low)


def textured_noise(shape, grid: render.Grid, noise_hu: float, kernel: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of SD noise_hu: white for a sharp kernel, correlated in-plane for a smooth one."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    if kernel == "smooth":
        noise = ndimage.gaussian_filter(noise, (0.0, 0.8, 0.8), truncate=3.0)
        noise /= np.float32(noise.std() or 1.0)
    return noise * np.float32(noise_hu)


def metal_streaks(image_slice: np.ndarray, grid: render.Grid, metal: np.ndarray, rng: np.random.Generator) -> tuple:
    """Add streaks radiating from the metal of one slice (in place, inside the body): lines through its
    centre at random angles, mostly dark, some bright, fading with distance. Returns (x, y, angles,
    amplitudes)."""
    ys, xs = grid.axis(1), grid.axis(0)
    jj, ii = np.nonzero(metal)
    cx, cy = float(xs[ii].mean()), float(ys[jj].mean())
    n_lines = int(rng.integers(5, 12))
    angles = rng.uniform(0.0, math.pi, n_lines)
    amplitudes = rng.uniform(150.0, 400.0, n_lines) * rng.choice([-1.0, 1.0], n_lines, p=[0.6, 0.4])
    width, fade = rng.uniform(0.6, 1.4), rng.uniform(50.0, 110.0)
    dx, dy = (xs[None, :] - cx).astype(np.float32), (ys[:, None] - cy).astype(np.float32)
    envelope = np.exp(-np.hypot(dx, dy) / np.float32(fade))
    pattern = np.zeros(image_slice.shape, np.float32)
    for angle, amplitude in zip(angles, amplitudes, strict=True):
        across = (dx * np.float32(math.sin(angle)) - dy * np.float32(math.cos(angle))) / np.float32(width)
        near = np.abs(across) < 4.0
        pattern[near] += np.float32(amplitude) * np.exp(-0.5 * across[near] ** 2)
    body = image_slice > -500.0
    image_slice[body] += (pattern * envelope)[body]
    return cx, cy, angles.tolist(), amplitudes.tolist()
