"""What lies around a calcification. Coronary arteries run inside the pericardium in epicardial fat, so a
calcification with much aerated lung close around it is in the lung or a hilar lymph node, not a coronary artery
(on the project's phantoms coronary plaques have at most a fifth of lung around them; a calcified hilar node
on real chest CT about half).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

AERATED_HU = -500.0  # lung parenchyma and air; fat (-100 HU) and soft tissue lie above
SURROUNDINGS_MM = 5.0
MAX_AERATED_SHARE = 1 / 3  # above it a calcification is not coronary


def _disk(radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    ry, rx = (int(np.ceil(radius_mm / s)) for s in spacing_yx)
    y, x = np.ogrid[-ry : ry + 1, -rx : rx + 1]
    return (y * spacing_yx[0]) ** 2 + (x * spacing_yx[1]) ** 2 <= radius_mm**2


def aerated_share(
    hu: np.ndarray, spacing_xyz, components: np.ndarray, ids, radius_mm: float = SURROUNDINGS_MM
) -> np.ndarray:
    """For each component id: the share of aerated voxels (lung or air, on a 3 x 3 median that keeps noise out)
    in its in-plane surroundings, from one voxel to `radius_mm` around it on its own slices."""
    spacing_yx = (float(spacing_xyz[1]), float(spacing_xyz[0]))
    disk = _disk(radius_mm, spacing_yx)
    ry, rx = disk.shape[0] // 2, disk.shape[1] // 2
    boxes = ndimage.find_objects(components, max_label=int(max(ids, default=0)))
    shares = np.zeros(len(ids))
    for index, component in enumerate(ids):
        box = boxes[component - 1]
        if box is None:
            continue
        crop = (
            box[0],
            slice(max(0, box[1].start - ry - 1), box[1].stop + ry + 1),
            slice(max(0, box[2].start - rx - 1), box[2].stop + rx + 1),
        )
        own = components[crop] == component
        near = np.stack([ndimage.binary_dilation(plane, disk) for plane in own])
        touching = np.stack([ndimage.binary_dilation(plane, np.ones((3, 3), bool)) for plane in own])
        ring = near & ~touching
        smoothed = ndimage.median_filter(hu[crop], size=(1, 3, 3))
        shares[index] = float((smoothed[ring] < AERATED_HU).mean()) if ring.any() else 0.0
    return shares
