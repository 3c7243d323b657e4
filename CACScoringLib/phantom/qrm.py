"""Find and score the QRM Cardiac Calcification Insert (QRM-CCI) on a real CT scan.

Layout: nine hydroxyapatite (HA) cylinders, length = diameter = 1, 3 and 5 mm, at 200, 400 and 800 mg HA/cm³,
in one axial plane on three rays from the insert's centre, 120° apart, one density per ray; along each ray
the 1, 3 and 5 mm cylinders sit at one third, two thirds and all of the large cylinders' ring radius. A
200 mg HA/cm³ calibration rod and a water rod run along z elsewhere in the insert.

Everything is found from the image, with that layout, not from voxel indices:
1. large inserts: components of the image smoothed over 1 mm at >= 130 HU that are short in z and compact
   in-plane; of all triples on one plane forming an equilateral triangle, the one holding the most HU;
2. centre: the triangle's circumcentre; densities: the large inserts' mean HU, ascending -> 200, 400, 800
   (no assumption about the phantom's rotation or mirroring);
3. medium and small inserts: placed at 2/3 and 1/3 of the ring on each ray, moved to the smoothed image's
   maximum within `SEARCH_RADIUS_MM` when that reaches 130 HU (`located`), else left where the layout
   puts them;
4. calibration rod: the largest component above 130 HU inside the ring that is rod-sized in-plane and long in
   z, eroded by `ROD_EROSION_MM` against partial volume; water rod: the darkest rod-sized disc of the same
   slices inside the ring, away from the HA rod.
"""

from __future__ import annotations

import csv
import itertools
import math
import tarfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage
from scipy.signal import fftconvolve

from ..errors import InputError
from ..scoring import MassCalibration, ScoringParams, calibrated_params, score_volume
from ..scoring.params import STANDARD_THRESHOLD_HU
from ..volume import CTVolume
from .calibration import CALIBRATION_ROD_DENSITY_MG_CM3, DENSITY_ROW_LABEL, INSERT_DENSITIES_MG_CM3

DIAMETERS_MM = {"small": 1.0, "medium": 3.0, "large": 5.0}
RING_FRACTION = {"small": 1 / 3, "medium": 2 / 3, "large": 1.0}
SMOOTH_MM = 1.0  # in-plane Gaussian sigma that keeps noise specks below 130 HU when finding structures
EQUILATERAL_TOLERANCE = 0.15  # longest / shortest side of the large inserts' triangle - 1
MAX_CANDIDATES = 40  # heaviest short blobs tried as large inserts (bounds the triple search)
RING_RADIUS_RANGE_MM = (15.0, 45.0)  # the CCI is 100 mm across
SEARCH_RADIUS_MM = 1.5  # how far a medium or small insert may sit from its layout position
ROI_MARGIN_MM = 3.0  # insert ROI: the cylinder grown by this in-plane (blur halo) and one slice in z
ROD_DIAMETER_RANGE_MM = (8.0, 30.0)
ROD_MIN_LENGTH_MM = 10.0
ROD_EROSION_MM = 2.0
BACKGROUND_TOLERANCE_HU = 15.0  # rod slices used: insert background within this of the insert plane's
WATER_ROD_MIN_CONTRAST_HU = 10.0  # the water rod must be this much darker than the insert around it


@dataclass(frozen=True)
class QRMInsert:
    index: int  # 1-9, the value of its ROI in QRMLayout.insert_map
    size: str  # small, medium, large
    density_mg_cm3: float
    centre_zyx: tuple[float, float, float]  # voxel index coordinates
    located: bool  # position measured (the smoothed image reaches 130 HU near it), not only from the layout

    @property
    def diameter_mm(self) -> float:
        return DIAMETERS_MM[self.size]

    @property
    def volume_mm3(self) -> float:
        """Nominal volume pi r² L (L = diameter)."""
        return math.pi * (self.diameter_mm / 2) ** 2 * self.diameter_mm

    @property
    def mass_mg(self) -> float:
        return self.density_mg_cm3 * self.volume_mm3 / 1000.0


@dataclass
class QRMLayout:
    plane_slice: int  # the slice nearest the inserts' centre
    centre_yx: tuple[float, float]  # voxel index coordinates, on the insert plane
    ring_radius_mm: float  # distance of the large inserts from the centre
    inserts: list[QRMInsert]
    insert_map: np.ndarray  # uint8 (z, y, x): each insert's ROI numbered by its index
    rod_mask: np.ndarray  # bool: inside the 200 mg HA/cm³ calibration rod
    water_mask: np.ndarray  # bool: inside the water rod, on the rod's slices


@dataclass(frozen=True)
class _Blob:
    voxels: tuple[np.ndarray, np.ndarray, np.ndarray]
    weight: float  # sum over its voxels of smoothed HU above the threshold (+1 HU each)
    centroid_zyx: np.ndarray


def _blobs(smooth: np.ndarray, threshold: float) -> list[_Blob]:
    labels, count = ndimage.label(smooth >= threshold)
    blobs = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        local = np.nonzero(labels[box] == index)
        voxels = tuple(axis + part.start for axis, part in zip(local, box, strict=True))
        excess = smooth[voxels] - threshold + 1.0
        centroid = np.array([np.average(axis, weights=excess) for axis in voxels])
        blobs.append(_Blob(voxels, float(excess.sum()), centroid))
    return blobs


def _extent_mm(blob: _Blob, axis: int, spacing_zyx) -> float:
    coordinates = blob.voxels[axis]
    return float(coordinates.max() - coordinates.min() + 1) * spacing_zyx[axis]


def _circumcentre(points: np.ndarray) -> np.ndarray:
    """Centre of the circle through three 2D points."""
    (a, b, c) = points
    matrix = 2 * np.array([b - a, c - a])
    rhs = np.array([b @ b - a @ a, c @ c - a @ a])
    return np.linalg.solve(matrix, rhs)


def _large_inserts(blobs: list[_Blob], spacing_zyx) -> tuple[_Blob, ...]:
    large = DIAMETERS_MM["large"]
    candidates = [
        blob
        for blob in blobs
        if _extent_mm(blob, 0, spacing_zyx) <= large + 2 * spacing_zyx[0]
        and max(_extent_mm(blob, 1, spacing_zyx), _extent_mm(blob, 2, spacing_zyx)) <= 3 * large
    ]
    candidates = sorted(candidates, key=lambda blob: blob.weight, reverse=True)[:MAX_CANDIDATES]
    best, best_weight = None, 0.0
    scale = np.asarray(spacing_zyx, dtype=np.float64)
    for triple in itertools.combinations(candidates, 3):
        centres = np.array([blob.centroid_zyx for blob in triple]) * scale
        if np.ptp(centres[:, 0]) > spacing_zyx[0]:
            continue
        sides = [np.linalg.norm(centres[i, 1:] - centres[j, 1:]) for i, j in ((0, 1), (1, 2), (0, 2))]
        radius = float(np.mean(sides)) / math.sqrt(3.0)
        if max(sides) > (1 + EQUILATERAL_TOLERANCE) * min(sides):
            continue
        if not RING_RADIUS_RANGE_MM[0] <= radius <= RING_RADIUS_RANGE_MM[1]:
            continue
        weight = sum(blob.weight for blob in triple)
        if weight > best_weight:
            best, best_weight = triple, weight
    if best is None:
        raise InputError(
            "no QRM calcification insert found: expected three 5 mm calcium cylinders 120° apart on one "
            "plane (is this a QRM-CCI scan?)"
        )
    return best


def _disk(radius_px_yx) -> np.ndarray:
    ry, rx = radius_px_yx
    y, x = np.ogrid[-math.ceil(ry) : math.ceil(ry) + 1, -math.ceil(rx) : math.ceil(rx) + 1]
    return (y / ry) ** 2 + (x / rx) ** 2 <= 1.0


def _plane_distance_mm(shape_yx, centre_yx, spacing_yx) -> np.ndarray:
    y, x = np.ogrid[: shape_yx[0], : shape_yx[1]]
    return np.hypot((y - centre_yx[0]) * spacing_yx[0], (x - centre_yx[1]) * spacing_yx[1])


def _refine(smooth, position_zyx, spacing_zyx, threshold) -> tuple[tuple[float, float, float], bool]:
    """The smoothed maximum within SEARCH_RADIUS_MM of the layout position, if it reaches the threshold."""
    z = int(round(position_zyx[0]))
    slices = smooth[max(z - 1, 0) : z + 2]
    near = _plane_distance_mm(slices.shape[1:], position_zyx[1:], spacing_zyx[1:]) <= SEARCH_RADIUS_MM
    values = np.where(near[None], slices, -np.inf)
    dz, y, x = np.unravel_index(int(np.argmax(values)), values.shape)
    if values[dz, y, x] < threshold:
        return tuple(float(c) for c in position_zyx), False
    return (float(position_zyx[0]), float(y), float(x)), True


def _insert_roi(shape, insert: QRMInsert, spacing_zyx) -> np.ndarray:
    z, y, x = insert.centre_zyx
    in_disk = _plane_distance_mm(shape[1:], (y, x), spacing_zyx[1:]) <= insert.diameter_mm / 2 + ROI_MARGIN_MM
    slice_z = np.arange(shape[0])
    in_length = np.abs(slice_z - z) * spacing_zyx[0] <= insert.diameter_mm / 2 + spacing_zyx[0]
    return in_length[:, None, None] & in_disk[None]


def _rods(hu, blobs, centre_yx, ring_radius_mm, plane_z, spacing_zyx, threshold):
    """Masks of the HA calibration rod (eroded) and of the water rod, on the rod's usable slices."""
    pixel_area = spacing_zyx[1] * spacing_zyx[2]
    best = None
    for blob in blobs:
        areas = np.bincount(blob.voxels[0])
        diameter = 2 * math.sqrt(areas.max() * pixel_area / math.pi)
        centre_distance = math.hypot(
            (blob.centroid_zyx[1] - centre_yx[0]) * spacing_zyx[1],
            (blob.centroid_zyx[2] - centre_yx[1]) * spacing_zyx[2],
        )
        if (
            ROD_DIAMETER_RANGE_MM[0] <= diameter <= ROD_DIAMETER_RANGE_MM[1]
            and _extent_mm(blob, 0, spacing_zyx) >= ROD_MIN_LENGTH_MM
            and centre_distance <= ring_radius_mm
            and (best is None or blob.voxels[0].size > best.voxels[0].size)
        ):
            best = blob
    if best is None:
        raise InputError(
            "no calibration rod found in the QRM insert: expected a 200 mg HA/cm³ rod, "
            f"{ROD_DIAMETER_RANGE_MM[0]:g}-{ROD_DIAMETER_RANGE_MM[1]:g} mm across and at least "
            f"{ROD_MIN_LENGTH_MM:g} mm long"
        )
    rod = np.zeros(hu.shape, dtype=bool)
    rod[best.voxels] = True
    erosion = _disk((ROD_EROSION_MM / spacing_zyx[1], ROD_EROSION_MM / spacing_zyx[2]))
    rod = ndimage.binary_erosion(rod, structure=erosion[None])
    areas = rod.sum(axis=(1, 2))
    # Calibrate only where the insert's background HU is that of the insert plane: near the phantom's ends
    # cone-beam shading lowers every HU, and the rod's ends suffer partial volume.
    interior = _plane_distance_mm(hu.shape[1:], centre_yx, spacing_zyx[1:]) <= ring_radius_mm
    background = np.array([np.median(plane[interior & (plane < threshold)]) for plane in hu])
    full = (areas >= 0.5 * areas.max()) & (
        np.abs(background - background[plane_z]) <= BACKGROUND_TOLERANCE_HU
    )
    if not full.any():
        raise InputError(
            "the calibration rod has no slice whose background matches the insert plane's "
            f"({background[plane_z]:.0f} HU): is the rod cut by the scan's ends?"
        )
    rod &= full[:, None, None]

    # Water rod: the darkest disc of the eroded rod's size, averaged over the same slices.
    radius_mm = math.sqrt(areas.max() * spacing_zyx[1] * spacing_zyx[2] / math.pi)
    disc = _disk((radius_mm / spacing_zyx[1], radius_mm / spacing_zyx[2])).astype(np.float64)
    mean_slice = hu[full].mean(axis=0)
    disc_mean = fftconvolve(mean_slice, disc / disc.sum(), mode="same")
    rod_centre = np.array(ndimage.center_of_mass(rod.any(axis=0)))
    shape_yx = hu.shape[1:]
    rod_diameter_mm = 2 * (radius_mm + ROD_EROSION_MM)
    search = (_plane_distance_mm(shape_yx, centre_yx, spacing_zyx[1:]) <= ring_radius_mm) & (
        _plane_distance_mm(shape_yx, rod_centre, spacing_zyx[1:]) >= rod_diameter_mm + ROD_EROSION_MM
    )
    values = np.where(search, disc_mean, np.inf)
    y, x = np.unravel_index(int(np.argmin(values)), values.shape)
    contrast = float(np.median(disc_mean[search]) - values[y, x])
    if contrast < WATER_ROD_MIN_CONTRAST_HU:
        raise InputError(
            f"no water rod found beside the calibration rod (the darkest rod-sized disc is {contrast:.0f} HU "
            f"below the insert, {WATER_ROD_MIN_CONTRAST_HU:g} HU needed): does the scan cover both rods?"
        )
    water_disc = _plane_distance_mm(shape_yx, (y, x), spacing_zyx[1:]) <= radius_mm
    water = water_disc[None] & full[:, None, None]
    return rod, water


def locate_qrm_inserts(ct: CTVolume, threshold_hu: float = STANDARD_THRESHOLD_HU) -> QRMLayout:
    """The nine inserts' positions and ROIs, the calibration rod and the water rod of a QRM-CCI scan."""
    hu = ct.array
    spacing_zyx = (float(ct.spacing[2]), float(ct.spacing[1]), float(ct.spacing[0]))
    smooth = ndimage.gaussian_filter(
        hu.astype(np.float32), sigma=(0.0, SMOOTH_MM / spacing_zyx[1], SMOOTH_MM / spacing_zyx[2])
    )
    blobs = _blobs(smooth, threshold_hu)
    large = _large_inserts(blobs, spacing_zyx)
    plane_z = float(np.mean([blob.centroid_zyx[0] for blob in large]))
    large_yx = np.array([blob.centroid_zyx[1:] for blob in large])
    scale = np.array(spacing_zyx[1:])
    centre_yx = _circumcentre(large_yx * scale) / scale
    ring_radius_mm = float(np.mean(np.linalg.norm((large_yx - centre_yx) * scale, axis=1)))

    mean_hu = [float(hu[blob.voxels].mean()) for blob in large]
    inserts: list[QRMInsert] = []
    insert_map = np.zeros(hu.shape, dtype=np.uint8)
    for density, ray in zip(INSERT_DENSITIES_MG_CM3, np.argsort(mean_hu), strict=True):
        for size in ("small", "medium", "large"):
            layout_yx = centre_yx + RING_FRACTION[size] * (large_yx[ray] - centre_yx)
            position = (plane_z, *layout_yx)
            if size == "large":
                centre, located = tuple(float(c) for c in position), True
            else:
                centre, located = _refine(smooth, position, spacing_zyx, threshold_hu)
            insert = QRMInsert(len(inserts) + 1, size, density, centre, located)
            inserts.append(insert)
            roi = _insert_roi(hu.shape, insert, spacing_zyx)
            if (insert_map[roi] > 0).any():
                raise InputError(
                    "QRM insert ROIs overlap: the scan's geometry does not match the QRM-CCI layout"
                )
            insert_map[roi] = insert.index
    rod, water = _rods(hu, blobs, centre_yx, ring_radius_mm, int(round(plane_z)), spacing_zyx, threshold_hu)
    return QRMLayout(
        plane_slice=int(round(plane_z)),
        centre_yx=(float(centre_yx[0]), float(centre_yx[1])),
        ring_radius_mm=ring_radius_mm,
        inserts=inserts,
        insert_map=insert_map,
        rod_mask=rod,
        water_mask=water,
    )


def score_qrm_inserts(
    ct: CTVolume, layout: QRMLayout, params: ScoringParams | None = None
) -> tuple[MassCalibration, list[dict]]:
    """Each insert's ROI scored by the engine, the mass calibrated on the HA and water rods."""
    calibration, params = calibrated_params(
        ct.array, layout.water_mask, layout.rod_mask, CALIBRATION_ROD_DENSITY_MG_CM3, params
    )
    # Score only the slab of slices holding the ROIs (the same lesions, a fraction of the work).
    slab = np.flatnonzero(layout.insert_map.any(axis=(1, 2)))
    first, stop = int(slab[0]), int(slab[-1]) + 1
    z_axis = np.asarray(ct.direction, dtype=np.float64).reshape(3, 3)[:, 2]
    origin = tuple(float(o) for o in np.asarray(ct.origin) + z_axis * first * ct.spacing[2])
    slab_ct = replace(ct, array=ct.array[first:stop], origin=origin)
    insert_map = layout.insert_map[first:stop]
    rows = []
    for insert in layout.inserts:
        roi = insert_map == insert.index
        labels = np.where(roi, DENSITY_ROW_LABEL[insert.density_mg_cm3], 0).astype(np.uint8)
        result = score_volume(slab_ct, labels, params)
        rows.append(
            {
                "size": insert.size,
                "density_mg_cm3": insert.density_mg_cm3,
                "diameter_mm": insert.diameter_mm,
                "located": insert.located,
                "detected": result.total.lesions > 0,
                "centre_zyx": insert.centre_zyx,
                "roi_mean_hu": float(slab_ct.array[roi].mean()),
                "peak_hu": float(slab_ct.array[roi].max()),
                "agatston": result.total.agatston,
                "volume_mm3": result.total.volume_mm3,
                "mass_mg": result.total.mass_mg,
                "lesions": result.total.lesions,
                "nominal_volume_mm3": insert.volume_mm3,
                "nominal_mass_mg": insert.mass_mg,
            }
        )
    return calibration, rows


LABEL_BOX = {"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0}  # readable on any HU


def write_qrm_overlay(ct: CTVolume, layout: QRMLayout, path) -> Path:
    """PNG: the insert plane with the nine insert ROIs, and a rod slice with the HA and water rod ROIs."""
    spacing_yx = (float(ct.spacing[1]), float(ct.spacing[0]))
    half = [int((layout.ring_radius_mm + 15.0) / s) for s in spacing_yx]
    cy, cx = (int(round(c)) for c in layout.centre_yx)
    crop = (slice(max(cy - half[0], 0), cy + half[0]), slice(max(cx - half[1], 0), cx + half[1]))
    extent = (crop[1].start - 0.5, crop[1].stop - 0.5, crop[0].stop - 0.5, crop[0].start - 0.5)
    rod_slices = np.flatnonzero(layout.rod_mask.any(axis=(1, 2)))
    rod_slice = int(rod_slices[rod_slices.size // 2])
    colours = {200.0: "tab:green", 400.0: "tab:orange", 800.0: "tab:red"}

    figure = Figure(figsize=(11, 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    plane_axis, rod_axis = figure.subplots(1, 2)
    plane_axis.imshow(ct.array[layout.plane_slice][crop], cmap="gray", vmin=-100, vmax=400, extent=extent)
    for insert in layout.inserts:
        roi = layout.insert_map[layout.plane_slice] == insert.index
        colour = colours[insert.density_mg_cm3]
        plane_axis.contour(
            roi[crop], levels=[0.5], colors=colour, linewidths=1.0, extent=extent, origin="upper"
        )
        _, y, x = insert.centre_zyx
        marker = "" if insert.located else " (layout)"
        plane_axis.annotate(
            f"{insert.density_mg_cm3:g}/{insert.diameter_mm:g}mm{marker}",
            (x, y),
            xytext=(10, -16),
            textcoords="offset points",
            color=colour,
            fontsize=7,
            bbox=LABEL_BOX,
        )
    plane_axis.set_title(f"slice {layout.plane_slice}: insert ROIs (mg HA/cm³ / diameter)", fontsize=9)
    rod_axis.imshow(ct.array[rod_slice][crop], cmap="gray", vmin=-100, vmax=400, extent=extent)
    for mask, colour, name in (
        (layout.rod_mask, "tab:red", "HA 200"),
        (layout.water_mask, "tab:blue", "water"),
    ):
        rod_axis.contour(
            mask[rod_slice][crop], levels=[0.5], colors=colour, linewidths=1.0, extent=extent, origin="upper"
        )
        y, x = ndimage.center_of_mass(mask[rod_slice])
        rod_axis.annotate(
            name,
            (x, y),
            xytext=(-12, 0),
            textcoords="offset points",
            color=colour,
            fontsize=8,
            bbox=LABEL_BOX,
        )
    rod_axis.set_title(
        f"slice {rod_slice}: calibration ROIs (slices {rod_slices[0]}-{rod_slices[-1]})", fontsize=9
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def extract_scan(tarball, destination) -> Path:
    """Unpack a DICOM series archive (e.g. .tar.xz) into destination; returns the series' folder."""
    tarball, destination = Path(tarball), Path(destination)
    if not tarball.is_file():
        raise InputError(f"no scan archive at {tarball}: give the path of the .tar.xz file")
    try:
        with tarfile.open(tarball) as archive:
            archive.extractall(destination, filter="data")  # keeps every path inside destination
    except (tarfile.TarError, OSError) as error:
        raise InputError(f"cannot unpack {tarball.name}: {error}") from None
    files = Counter(path.parent for path in destination.rglob("*") if path.is_file())
    if not files:
        raise InputError(f"{tarball.name} holds no files: give an archive of a DICOM series")
    return files.most_common(1)[0][0]  # the series; an archive may carry a few reference files beside it


REFERENCE_DENSITY = {"Low Density": 200.0, "Medium Density": 400.0, "High Density": 800.0}


def read_qrm_reference(path, vendor: str, scan: str) -> dict[tuple[float, str], dict]:
    """The data set's reference rows (agatston.csv of MolloiLab's CAC-stanford-data) for one scan.

    Keyed by (density mg/cm³, size): true mass and the authors' Agatston and mass (mg).
    """
    path = Path(path)
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["vender"] == vendor and row["scan"] == scan]
    if not rows:
        raise InputError(f"{path.name} has no rows for vendor {vendor!r}, scan {scan!r}: check the names")
    reference = {}
    for row in rows:
        density = REFERENCE_DENSITY[row["inserts"]]
        for size in DIAMETERS_MM:
            reference[(density, size)] = {
                "true_mass_mg": float(row[f"ground_truth_mass_{size}"]),
                "agatston": float(row[f"calculated_agat_{size}"]),
                "mass_mg": float(row[f"calculated_mass_{size}"]),
            }
    return reference


def comparison_table(rows: list[dict], reference: dict[tuple[float, str], dict]) -> list[dict]:
    """Our scores next to the true mass and the data set authors' Agatston and mass, one row per insert."""
    table = []
    for row in rows:
        theirs = reference[(row["density_mg_cm3"], row["size"])]
        table.append(
            {
                "insert": f"{row['density_mg_cm3']:g} mg/cm³ {row['size']} ({row['diameter_mm']:g} mm)",
                "agatston": row["agatston"],
                "volume_mm3": row["volume_mm3"],
                "mass_mg": row["mass_mg"],
                "true_mass_mg": theirs["true_mass_mg"],
                "mass_error_pct": 100.0 * (row["mass_mg"] / theirs["true_mass_mg"] - 1.0),
                "authors_agatston": theirs["agatston"],
                "authors_mass_mg": theirs["mass_mg"],
                "detected": row["detected"],
            }
        )
    return table
