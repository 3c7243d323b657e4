"""Write a label map as a Stanford COCA-style calcium annotation: an Apple plist XML of per-slice polygons.

Structure (as in the COCA gated release, written by OsiriX): {"Images": [{"ImageIndex", "ImageWidth",
"ImageHeight", "NumberOfROIs", "ROIs": [{"Name", "Type": 15, "IndexInImage", "NumberOfPoints",
"Point_px": ["(x, y)", ...], "Point_mm": ["(x, y, z)", ...], "Area" (mm²), "Length" (mm), "Center"
"(x, y, z)" (mm), "Max", "Mean", "Min", "Dev", "Total" (HU)}]}]}.

Conventions: ImageIndex i is the slice at position-order index n-1-i (COCA numbers images from the head
end; our slice index grows towards the head). Point_px are pixel coordinates with integer values at pixel
centres; each ROI is the outer outline of one 8-connected region of one artery on one slice (holes filled),
traced at the 0.5 level between region and background, so filling the polygon (pixel centres inside)
gives back the region. ROI names are the artery's `coca_roi_names[0]`.
"""

from __future__ import annotations

import plistlib
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import measure

from ..labels import ARTERY_LABELS
from ..volume import CTVolume

ROI_TYPE_POLYGON = 15
_ROI_NAME = {artery.id: artery.coca_roi_names[0] for artery in ARTERY_LABELS}


def _outline(region: np.ndarray) -> np.ndarray:
    """Outer contour (n, 2) as (row, col) of a filled 2D region, without the repeated closing point."""
    padded = np.pad(region, 1).astype(np.float32)
    contours = measure.find_contours(padded, 0.5, fully_connected="high")
    contour = max(contours, key=len) - 1.0
    return contour[:-1] if len(contour) > 1 and np.allclose(contour[0], contour[-1]) else contour


def _world(ct: CTVolume, columns, rows, k) -> np.ndarray:
    """World (x, y, z) mm of continuous pixel coordinates on slice k."""
    direction = np.asarray(ct.direction, dtype=float).reshape(3, 3)
    index = np.stack(
        [np.asarray(columns, float), np.asarray(rows, float), np.full(np.shape(columns), float(k))]
    )
    return (
        np.asarray(ct.origin, float)[:, None] + direction @ (np.asarray(ct.spacing, float)[:, None] * index)
    ).T


def _point(values) -> str:
    return "(" + ", ".join(f"{float(v):.6f}" for v in values) + ")"


def coca_images(ct: CTVolume, labels: np.ndarray) -> list[dict]:
    """The plist "Images" entries (sorted by ImageIndex) for the labelled regions of `labels` on `ct`."""
    n_slices, height, width = labels.shape
    hu = np.asarray(ct.array)
    images = []
    for k in range(n_slices - 1, -1, -1):  # ImageIndex 0, 1, ... = slices n-1, n-2, ...
        rois = []
        for label_id, name in _ROI_NAME.items():
            regions, count = ndimage.label(labels[k] == label_id, structure=np.ones((3, 3)))
            for region_id in range(1, count + 1):
                region = ndimage.binary_fill_holes(regions == region_id)
                contour = _outline(region)
                rows, columns = contour[:, 0], contour[:, 1]
                points_mm = _world(ct, columns, rows, k)
                values = hu[k][region].astype(np.float64)
                centre_row, centre_column = ndimage.center_of_mass(region)
                closed = np.vstack([points_mm, points_mm[:1]])
                rois.append(
                    {
                        "Name": name,
                        "Type": ROI_TYPE_POLYGON,
                        "IndexInImage": len(rois),
                        "NumberOfPoints": len(contour),
                        "Point_px": [_point(p) for p in zip(columns, rows, strict=True)],
                        "Point_mm": [_point(p) for p in points_mm],
                        "Area": float(region.sum() * ct.pixel_area_mm2),
                        "Length": float(np.linalg.norm(np.diff(closed, axis=0), axis=1).sum()),
                        "Center": _point(_world(ct, [centre_column], [centre_row], k)[0]),
                        "Max": float(values.max()),
                        "Mean": float(values.mean()),
                        "Min": float(values.min()),
                        "Dev": float(values.std()),
                        "Total": float(values.sum()),
                    }
                )
        if rois:
            images.append(
                {
                    "ImageIndex": n_slices - 1 - k,
                    "ImageWidth": width,
                    "ImageHeight": height,
                    "NumberOfROIs": len(rois),
                    "ROIs": rois,
                }
            )
    return images


def write_coca_xml(ct: CTVolume, labels: np.ndarray, path: str | Path) -> Path:
    """Write the COCA-style calcium XML (Apple plist) of `labels` on `ct` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        plistlib.dump({"Images": coca_images(ct, labels)}, f, fmt=plistlib.FMT_XML)
    return path
