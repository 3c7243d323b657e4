"""Anatomical thorax phantom for non-contrast cardiac (calcium scoring) CT, randomised per seed.

World frame is DICOM patient LPS (x to the patient's left, y posterior, z superior), identity direction, so
array index x grows to the patient's left (radiological display) and slice index grows towards the head.

Tissues (HU): air -1000, fat -100 (subcutaneous) / -90 (epicardial), muscle 45, lung -850, blood 40,
myocardium 50, liver 60, intervertebral disc 80, cancellous bone 250, cortical bone 1000-1300 (spine;
sternum and posterior elements 85% and 80% of it) and 800-1100 (ribs). Structures: elliptical body with a fat layer, two lungs, liver dome, vertebrae
with discs and posterior elements, ribs sloping down anteriorly, sternum, heart (ellipsoid with epicardial
fat, myocardium, blood pool) on an oblique long axis, ascending aorta from the aortic root and descending
aorta beside the spine, and coronary arteries as tubes on the heart surface: LM from the aortic root to
its bifurcation, LAD down the anterior interventricular groove, LCX round the left atrioventricular groove,
RCA from the root round the right atrioventricular groove and down the posterior interventricular groove.

Calcifications are ellipsoids rendered with partial volume and the scanner blur, each scaled so that its
noise-free peak equals a target HU; coronary plaques sit eccentrically on the vessel wall, aortic ones on
the aortic wall. Labels are what a reader's click in scoring software gives: the whole 26-connected region
>= 130 HU that holds a plaque carries its artery id, including blurred rim and noise voxels joined to it
(a region that also touches aortic calcium or bone, or holds plaques of two arteries, keeps the id on
plaque voxels only). Aortic calcium and bone (also >= 130 HU) stay 0, which is what a segmentation model
has to learn.

Realistic options (off by default, docs/phantoms.md): a full-chest field of view and the chest's anatomy
(chest.py), distractors that are bright but not coronary, all labelled 0 (distractors.py), and a random
scanner acquisition (acquisition.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..labels import ARTERIES, LABEL_ID, votes_per_region
from ..scoring import ScoreResult, ScoringParams, score_volume
from ..volume import CTVolume, ScanInfo
from . import acquisition as acq_mod
from . import chest, render
from . import distractors as distractor_mod

AIR, FAT, EPICARDIAL_FAT, MUSCLE, LUNG, BLOOD, MYOCARDIUM, LIVER, DISC = (
    -1000.0, -100.0, -90.0, 45.0, -850.0, 40.0, 50.0, 60.0, 80.0,
)  # fmt: skip
CANCELLOUS_BONE = 250.0
COSTAL_CARTILAGE = 90.0  # hyaline cartilage: denser than muscle, below the plaque-placement limit (100 HU)
SCORING_THRESHOLD_HU = 130.0

# Default plaque counts per artery (inclusive ranges); a case has no coronary calcium at all with
# probability p_no_calcium, and an artery can draw zero plaques on its own.
DEFAULT_N_PLAQUES = {"LM": (0, 1), "LAD": (0, 4), "LCX": (0, 3), "RCA": (0, 3)}
# Target peaks are drawn band by band so that every Agatston density weight (1-4) occurs.
AGATSTON_PEAK_BANDS_HU = ((130.0, 200.0), (200.0, 300.0), (300.0, 400.0), (400.0, float("inf")))
VESSEL_RADIUS_MM = {"LM": (2.2, 2.0), "LAD": (1.8, 1.0), "LCX": (1.6, 1.0), "RCA": (2.0, 1.2)}  # start, end
AORTA_RADIUS_MM = (13.0, 11.0)  # ascending, descending
PLAQUE_SUPPORT_FRACTION = 0.1  # a voxel belongs to a calcification where it holds >= 10% of it (blurred)
# Where LAD and LCX leave the LM their centrelines coincide, and a plaque there is the same object whichever
# branch it was drawn on: its reference artery would be a coin toss no reader or model could match.
SISTER_BRANCH = {"LAD": "LCX", "LCX": "LAD"}
DEFAULT_BIFURCATION_CLEARANCE_MM = 5.0  # vessel radius (<= 2.2 mm) + plaque half-width (<= 2.5 mm), rounded up
# The descending aorta runs behind the left atrium with the oesophagus and pericardium between: no coronary
# artery reaches it. Drawn freely, the heart's posterior wall (and the distal RCA on it) can overlap its tube.
DEFAULT_DESCENDING_AORTA_CLEARANCE_MM = 5.0  # from its wall to the heart's epicardial fat
PERIAORTIC_FAT_MM = 3.0
MAX_BACKGROUND_HU = 100.0  # a plaque is only placed where nothing else nearby reaches this
CURVE_STEP_MM = 0.3
FIELDS_OF_VIEW = ("cardiac", "chest")
P_CHEST_FIELD_OF_VIEW = 0.6  # field_of_view="random"
CHEST_CENTRE_Z_MM = 5.0  # a chest grid's middle: neck and upper abdomen about equally far from the heart
ANATOMY_FLOOR_Z_MM = -70.5  # the default grid's lowest slice, off which non-legacy lungs and liver hang
PRESETS = {"realchest": {"field_of_view": "random", "distractors": "all", "acquisition": "random"}}


@dataclass
class Calcification:
    """One calcified blob: a coronary plaque (artery = LM/LAD/LCX/RCA) or aortic calcium (artery 'aorta')."""

    artery: str
    label: int  # label id it carries in ThoraxPhantom.labels (0 for aortic calcium)
    centre_mm: tuple[float, float, float]  # (x, y, z)
    semi_axes_mm: tuple[float, float, float]  # along the vessel, across, across
    target_peak_hu: float  # noise-free peak the blob was scaled to
    material_hu: float  # HU of the blob's material before partial volume and blur
    peak_hu: float | None  # highest HU of its voxels >= 130 HU in the final image (None: none reached it)
    n_voxels: int  # its voxels >= 130 HU in the final image

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ThoraxPhantom:
    ct: CTVolume
    labels: np.ndarray  # uint8 (z, y, x): artery id on each coronary lesion (module docstring)
    scores: ScoreResult | None  # score_volume(ct, labels, ScoringParams()); None when not requested
    plaques: list[Calcification]
    aortic_calcifications: list[Calcification]
    bone_mask: np.ndarray  # bool: vertebrae, ribs, sternum (>= 130 HU, label 0)
    aortic_calcium_mask: np.ndarray  # bool: aortic calcium voxels >= 130 HU (label 0)
    seed: int
    noise_hu: float
    blur_sigma_mm: float
    anatomy: dict = field(default_factory=dict)  # sampled anatomy parameters (mm, degrees)
    distractors: list = field(default_factory=list)  # distractors.Distractor: bright, not coronary (label 0)
    distractor_map: np.ndarray | None = None  # uint8: distractors.KIND_ID on each distractor's voxels
    realism: dict | None = None  # field of view, distractor counts, acquisition; None for a legacy phantom

    def truth(self) -> dict:
        """JSON-ready ground truth: generator settings, calcifications and implied scores."""
        extended = {}
        if self.realism is not None:  # legacy phantoms keep their truth as it was
            extended = {
                **self.realism,
                "distractor_kinds": distractor_mod.KIND_ID,
                "distractors": [d.to_dict() for d in self.distractors],
            }
        return {
            **extended,
            "kind": "thorax",
            "seed": self.seed,
            "shape_zyx": list(self.ct.shape),
            "spacing_xyz_mm": list(self.ct.spacing),
            "origin_xyz_mm": list(self.ct.origin),
            "noise_hu": self.noise_hu,
            "blur_sigma_mm": self.blur_sigma_mm,
            "anatomy": self.anatomy,
            "plaques": [p.to_dict() for p in self.plaques],
            "aortic_calcifications": [c.to_dict() for c in self.aortic_calcifications],
            "scores": self.scores.to_dict() if self.scores is not None else None,
        }


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


class _Heart:
    """Heart ellipsoid frame: long axis L (base to apex), anterior e_ant and side e_side (to the left)."""

    def __init__(self, centre, long_semi_axis, short_semi_axis, azimuth_deg, elevation_deg):
        self.centre = np.asarray(centre, dtype=np.float64)
        self.a, self.b = float(long_semi_axis), float(short_semi_axis)
        az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
        # Apex points left (+x), anterior (-y) and inferior (-z).
        self.long = _unit([math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), -math.sin(el)])
        anterior = np.array([0.0, -1.0, 0.0])
        self.ant = _unit(anterior - anterior.dot(self.long) * self.long)
        side = np.cross(self.long, self.ant)
        self.side = side if side[0] > 0 else -side

    def surface(self, u, phi_deg, gap_mm) -> np.ndarray:
        """Points gap_mm outside the surface at long-axis fraction u (-1 base .. 1 apex) and azimuth phi
        (0 anterior, +90 left, -90 right, 180 posterior)."""
        u = np.asarray(u, dtype=np.float64)
        phi = np.radians(phi_deg)
        rho = self.b * np.sqrt(np.clip(1.0 - u**2, 0.0, None)) + gap_mm
        radial = np.cos(phi)[:, None] * self.ant + np.sin(phi)[:, None] * self.side
        return self.centre + (u * self.a)[:, None] * self.long + rho[:, None] * radial

    def outline(self, scale_mm: float, step_deg: float = 3.0) -> np.ndarray:
        """(N, 3) points on the ellipsoid with semi-axes grown by scale_mm (local_q(scale_mm) == 1)."""
        theta, phi = np.meshgrid(np.radians(np.arange(0.0, 180.0 + step_deg, step_deg)), np.radians(np.arange(0.0, 360.0, step_deg)))
        theta, phi = theta.ravel()[:, None], phi.ravel()[:, None]
        a, b = self.a + scale_mm, self.b + scale_mm
        radial = np.cos(phi) * self.ant + np.sin(phi) * self.side
        return self.centre + a * np.cos(theta) * self.long + b * np.sin(theta) * radial

    def local_q(self, xs, ys, zs, scale_mm=0.0, long_scale=1.0):
        """Ellipsoid quadratic form (<= 1 inside) on a box of world coordinates, semi-axes grown by scale_mm."""
        dx, dy, dz = (
            xs[None, None, :] - self.centre[0],
            ys[None, :, None] - self.centre[1],
            zs[:, None, None] - self.centre[2],
        )
        q = 0.0
        for axis, semi in (
            (self.long, self.a * long_scale + scale_mm),
            (self.ant, self.b + scale_mm),
            (self.side, self.b + scale_mm),
        ):
            q = q + ((dx * axis[0] + dy * axis[1] + dz * axis[2]) / semi) ** 2
        return q


def _distance_to_curve(point: np.ndarray, curve: np.ndarray) -> float:
    return float(np.linalg.norm(curve - point, axis=1).min())


def _clear_of_heart(
    start, direction, radius, heart: _Heart, fat_mm: float, clearance_mm: float, spine_xy, vertebra_r: float, zs
) -> np.ndarray:
    """The start of a vertical tube moved in the axial plane until its wall is clearance_mm outside the heart's
    epicardial fat, pushed away from the heart's centre and, where that presses it into the vertebral body
    on any slice zs, around the vertebra."""
    surface = heart.outline(fat_mm)
    spine_xy = np.asarray(spine_xy, dtype=np.float64)
    start = np.asarray(start, dtype=np.float64).copy()

    def axis_at(z):
        return start + direction * ((np.asarray(z) - start[2]) / direction[2])[:, None]

    for _ in range(200):
        offsets = surface - axis_at(surface[:, 2])
        deficit = radius + clearance_mm - np.linalg.norm(offsets[:, :2], axis=1).min()
        from_spine = axis_at(zs)[:, :2] - spine_xy
        nearest = int(np.linalg.norm(from_spine, axis=1).argmin())
        overlap = vertebra_r + radius - np.linalg.norm(from_spine[nearest])
        if deficit <= 0.0 and overlap <= 0.0:
            break
        if overlap > 0.0:
            start[:2] += (overlap + 0.1) * _unit(from_spine[nearest])
        else:
            away = axis_at([heart.centre[2]])[0] - heart.centre
            start[:2] += (deficit + 0.1) * _unit(away[:2])
    return start


def _coronary_tree(heart: _Heart, rng: np.random.Generator, root: np.ndarray, aorta_radius: float):
    """Centrelines (N, 3) mm and radii (N,) of LM, LAD, LCX, RCA."""
    u_av = rng.uniform(-0.64, -0.54)  # atrioventricular groove, near the base
    gap = 3.0  # vessels run in the epicardial fat, a few mm outside the myocardium
    n = 300
    t = np.linspace(0.0, 1.0, n)
    bifurcation_phi = rng.uniform(32.0, 44.0)
    lad_end_phi = rng.uniform(5.0, 25.0)
    wiggle = rng.uniform(2.0, 5.0) * np.sin(2 * np.pi * rng.uniform(1.0, 2.0) * t + rng.uniform(0, 2 * np.pi))
    lad = heart.surface(
        u_av + (rng.uniform(0.82, 0.92) - u_av) * t,
        bifurcation_phi + (lad_end_phi - bifurcation_phi) * t + wiggle,
        gap,
    )
    lcx = heart.surface(
        u_av + rng.uniform(0.1, 0.2) * t,
        bifurcation_phi + (rng.uniform(125.0, 160.0) - bifurcation_phi) * t,
        gap,
    )
    rca_start_phi = rng.uniform(-35.0, -15.0)
    groove_u = u_av + rng.uniform(0.05, 0.15) * t
    rca_groove = heart.surface(groove_u, rca_start_phi + (-180.0 - rca_start_phi) * t, gap)
    pda = heart.surface(groove_u[-1] + (rng.uniform(0.3, 0.5) - groove_u[-1]) * t, np.full(n, -180.0), gap)
    bifurcation = lad[0]

    def from_ostium(target):
        ostium = root + aorta_radius * _unit(target - root)
        return np.linspace(ostium, target, 40)

    lm = from_ostium(bifurcation)
    rca = np.concatenate([from_ostium(rca_groove[0])[:-1], rca_groove, pda[1:]])
    tree = {}
    for key, points in (("LM", lm), ("LAD", lad), ("LCX", lcx), ("RCA", rca)):
        points = render.resample_polyline(points, CURVE_STEP_MM)
        start, end = VESSEL_RADIUS_MM[key]
        tree[key] = (points, np.linspace(start, end, len(points)))
    return tree


def _paint_tube(image: np.ndarray, grid: render.Grid, points: np.ndarray, radii: np.ndarray, value: float):
    """Set voxels whose centres lie within radius of a densely sampled centreline to value."""
    spacing = np.array(grid.spacing)
    reach = np.ceil(radii.max() / spacing).astype(int)
    offsets = np.stack(np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij"), axis=-1).reshape(
        -1, 3
    )  # (x, y, z)
    centre_index = np.rint(grid.to_index(points)).astype(int)
    candidates = centre_index[:, None, :] + offsets[None, :, :]
    world = np.asarray(grid.origin) + candidates * spacing
    inside = np.linalg.norm(world - points[:, None, :], axis=2) <= radii[:, None]
    hits = candidates[inside]
    size = np.array(grid.shape[::-1])
    hits = hits[np.all((hits >= 0) & (hits < size), axis=1)]
    image[hits[:, 2], hits[:, 1], hits[:, 0]] = value


def _paint_vertical_tube(image, grid, zs, xs, ys, start, direction, radius, value, z_from=-np.inf, z_to=np.inf):
    """A straight tube of roughly vertical axis, painted slice by slice as discs (from z_from up to z_to)."""
    direction = _unit(direction)
    for k, z in enumerate(zs):
        if z < z_from or z > z_to:
            continue
        centre = start + direction * (z - start[2]) / direction[2]
        box = grid.box((centre[0], centre[1], z), (radius, radius, 0.0))
        if box is None:
            continue
        _, yb, xb = box
        disc = (xs[xb][None, :] - centre[0]) ** 2 + (ys[yb][:, None] - centre[1]) ** 2 <= radius**2
        image[k, yb, xb][disc] = value
    return direction


def _frame_from_tangent(tangent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotation whose columns are the tangent and two random normals."""
    tangent = _unit(tangent)
    helper = np.array([0.0, 0.0, 1.0]) if abs(tangent[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    n1 = _unit(np.cross(tangent, helper))
    n2 = np.cross(tangent, n1)
    angle = rng.uniform(0, 2 * np.pi)
    n1, n2 = math.cos(angle) * n1 + math.sin(angle) * n2, -math.sin(angle) * n1 + math.cos(angle) * n2
    return np.stack([tangent, n1, n2], axis=1)


def _render_blob(
    image, grid, centre, semi_axes, rotation, target_peak_hu, blur_sigma_mm, max_contrast=2500.0
):
    """Blurred partial-volume blob whose noise-free peak over the image is target_peak_hu.

    Returns (box, blurred fraction, support mask, contrast HU, material HU) with nothing painted yet, or
    None when the blob misses the grid, lies on anything reaching MAX_BACKGROUND_HU (bone, calcium) or
    would need an implausible contrast (too small for the voxels).
    """
    pad = int(np.ceil(3 * np.max(blur_sigma_mm) / min(grid.spacing))) + 1
    shape = render.ellipsoid_fraction(grid, centre, semi_axes, rotation, supersample=3)
    if shape is None:
        return None
    box, fraction = shape
    padded = []
    for sl, n in zip(box, grid.shape, strict=True):
        lo, hi = max(sl.start - pad, 0), min(sl.stop + pad, n)
        padded.append((slice(lo, hi), sl.start - lo))
    big_box = tuple(p[0] for p in padded)
    field = np.zeros(tuple(p[0].stop - p[0].start for p in padded), dtype=np.float32)
    field[tuple(slice(p[1], p[1] + s) for p, s in zip(padded, fraction.shape, strict=True))] = fraction
    field = render.blur(field, grid, blur_sigma_mm)
    support = field >= PLAQUE_SUPPORT_FRACTION
    if not support.any():
        return None
    background = image[big_box][support]
    if background.max() >= MAX_BACKGROUND_HU:
        return None
    # Largest contrast keeping background + contrast * fraction <= target everywhere: the peak hits it.
    contrast = float(np.min((target_peak_hu - background) / field[support]))
    if contrast > max_contrast:
        return None
    material = float(background[np.argmax(field[support])] + contrast)
    return big_box, field, support, contrast, material


def _lesion_labels(calcified: np.ndarray, plaque_artery: np.ndarray, other_calcium: np.ndarray) -> np.ndarray:
    """Reference labels as a reader's click would make them (see the module docstring)."""
    labels = np.where(calcified, plaque_artery, 0).astype(np.uint8)
    regions, count = ndimage.label(calcified, structure=np.ones((3, 3, 3), bool))
    votes = votes_per_region(regions, count, labels)
    touches_other = np.bincount(regions[calcified & other_calcium], minlength=count + 1) > 0
    whole = ((votes[:, 1:] > 0).sum(axis=1) == 1) & ~touches_other
    whole[0] = False
    artery = np.where(whole, votes[:, 1:].argmax(axis=1) + 1, 0).astype(np.uint8)[regions]
    return np.where(artery > 0, artery, labels)


def _measured(blobs, calcium_mask, image) -> list[Calcification]:
    """Fill in each blob's voxel count and peak HU among its support voxels that are calcium."""
    result = []
    for blob, box, support in blobs:
        voxels = calcium_mask[box] & support
        blob.n_voxels = int(voxels.sum())
        blob.peak_hu = float(image[box][voxels].max()) if blob.n_voxels else None
        result.append(blob)
    return result


def make_thorax_phantom(
    seed: int = 0,
    shape=None,
    spacing=None,
    noise_hu: float | None = None,
    blur_sigma_mm: float = 0.6,
    n_plaques: dict | None = None,
    p_no_calcium: float = 0.2,
    plaque_peak_hu=(150.0, 1000.0),
    plaque_size_mm=(0.8, 2.5),
    n_aortic_calcifications=(0, 5),
    bifurcation_clearance_mm: float = DEFAULT_BIFURCATION_CLEARANCE_MM,
    descending_aorta_clearance_mm: float | None = DEFAULT_DESCENDING_AORTA_CLEARANCE_MM,
    compute_scores: bool = True,
    field_of_view: str | None = None,
    distractors=None,
    acquisition=None,
    metal_streaks: bool = True,
    preset: str | None = None,
) -> ThoraxPhantom:
    """A random but anatomically plausible non-contrast cardiac CT with labelled coronary calcium.

    shape (z, y, x), default (48, 256, 256); spacing (x, y, z) mm, default (0.8, 0.8, 3). noise_hu None draws
    the noise SD from 8-22 HU. n_plaques maps
    artery -> (min, max) plaque count (default DEFAULT_N_PLAQUES). Plaque target peaks fall in
    plaque_peak_hu, spread over the four Agatston density bands; plaque semi-axes across the vessel lie in
    plaque_size_mm (up to twice as long along it). LAD and LCX plaques are centred at least
    bifurcation_clearance_mm from the other branch's centreline (0: anywhere, as the generator placed them
    before this option; the shipped default model's training phantoms were drawn so). The descending aorta is
    moved away from the heart until its wall is descending_aorta_clearance_mm outside the epicardial fat (None:
    where it was drawn, overlapping the heart's posterior wall and distal RCA in some phantoms, as before this
    option).

    Realistic options (docs/phantoms.md), all off by default, which keeps the phantoms of earlier versions
    bit for bit: field_of_view "cardiac" (default), "chest" (neck to upper abdomen, with trachea, bronchi,
    aortic arch, neck vessels, liver and stomach) or "random"; distractors "all" (random kinds and counts)
    or a dict kind -> count of distractors.KINDS, all labelled 0; acquisition "random" or a dict of
    acquisition.KEYS (the rest drawn), which then sets the grid, the kernel and the noise (shape and spacing
    must be left out); metal_streaks False leaves the metal's streaks out; preset "realchest" sets all three
    at random (explicit options win). Any of them also gives the chest's anatomy (arch, great vessels,
    airways) in the scan's field of view.
    """
    options = {"field_of_view": field_of_view, "distractors": distractors, "acquisition": acquisition}
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"unknown phantom preset {preset!r}: choose one of {', '.join(PRESETS)}")
        options = {**PRESETS[preset], **{key: value for key, value in options.items() if value is not None}}
    # New draws come from their own stream, so that the default's draws (and phantoms) stay as they were.
    extra = np.random.default_rng([seed, 15])
    fov = options["field_of_view"] or "cardiac"
    if fov == "random":
        fov = "chest" if extra.uniform() < P_CHEST_FIELD_OF_VIEW else "cardiac"
    if fov not in FIELDS_OF_VIEW:
        raise InputError(f"unknown field of view {fov!r}: choose one of {', '.join(FIELDS_OF_VIEW)} or random")
    kinds = distractor_mod.counts(options["distractors"], extra)
    acq = None
    if options["acquisition"] is not None and options["acquisition"] is not False:
        if shape is not None or spacing is not None:
            raise InputError("give either shape/spacing or an acquisition (it sets the grid), not both")
        given = options["acquisition"]
        if given in ("random", True):
            given = {}
        if not isinstance(given, dict):
            raise InputError(f"acquisition must be 'random' or a dict of settings, not {given!r}")
        acq = acq_mod.draw_acquisition(extra, fov, given)
    legacy = fov == "cardiac" and acq is None and options["distractors"] in (None, False)

    rng = np.random.default_rng(seed)
    counts = {**DEFAULT_N_PLAQUES, **(n_plaques or {})}
    drawn_noise_hu = rng.uniform(8.0, 22.0)  # drawn either way: the anatomy does not depend on noise_hu
    if noise_hu is None:
        noise_hu = acq["noise_hu"] if acq is not None else drawn_noise_hu
    noise_hu = float(noise_hu)
    psf = blur_sigma_mm
    if acq is not None:
        acq["noise_hu"] = noise_hu
        grid = acq_mod.grid_of(acq, (15.0, -5.0))
        psf = acq_mod.psf_sigma_mm(acq)
    else:
        centre_z = CHEST_CENTRE_Z_MM if fov == "chest" else 0.0
        grid = render.Grid.centred(shape or (48, 256, 256), spacing or (0.8, 0.8, 3.0), centre=(15.0, -5.0, centre_z))
    xs, ys, zs = grid.axis(0), grid.axis(1), grid.axis(2)
    nz = grid.shape[0]
    x2, y2 = xs[None, :], ys[:, None]
    # Legacy phantoms hang lungs and liver off the grid's lowest slice; the others off the default's.
    floor_z = zs[0] if legacy else ANATOMY_FLOOR_Z_MM

    # ---- body, lungs, liver (z-invariant outlines first, one slice repeated)
    body_a, body_b = rng.uniform(145.0, 165.0), rng.uniform(100.0, 115.0)
    fat = rng.uniform(8.0, 20.0)
    body_q = (x2 / body_a) ** 2 + (y2 / body_b) ** 2
    plane = np.full(grid.shape[1:], AIR, dtype=np.float32)
    plane[body_q <= 1.0] = FAT
    plane[(x2 / (body_a - fat)) ** 2 + (y2 / (body_b - fat)) ** 2 <= 1.0] = MUSCLE
    image = np.repeat(plane[None], nz, axis=0)

    lung_q = {
        side: ((x2 - side * body_a * 0.45) / (body_a * 0.34)) ** 2 + ((y2 - 8.0) / (body_b * 0.66)) ** 2
        for side in (-1, 1)
    }
    lung_bottom = floor_z + rng.uniform(-10.0, 20.0)
    taper = np.clip((zs - lung_bottom) / 40.0, 0.0, 1.0)[:, None, None]  # lungs narrow towards the diaphragm
    lungs = (lung_q[-1][None] <= taper) | (lung_q[1][None] <= taper)
    image[lungs] = LUNG
    liver_centre = np.array([-45.0, 15.0, floor_z - rng.uniform(5.0, 25.0)])
    liver_box = grid.box(liver_centre, (95.0, 85.0, 60.0))
    if liver_box is not None:
        zb, yb, xb = liver_box
        liver = ((xs[xb][None, None, :] - liver_centre[0]) / 95.0) ** 2 + (
            (ys[yb][None, :, None] - liver_centre[1]) / 85.0
        ) ** 2 + ((zs[zb][:, None, None] - liver_centre[2]) / 60.0) ** 2 <= 1.0
        image[liver_box][liver] = LIVER

    # ---- heart, aortas, coronaries (drawn first, painted below)
    scale = rng.uniform(0.88, 1.1)
    heart = _Heart(
        centre=(rng.uniform(15.0, 28.0), rng.uniform(-15.0, -5.0), rng.uniform(-12.0, 2.0)),
        long_semi_axis=rng.uniform(56.0, 64.0) * scale,
        short_semi_axis=rng.uniform(40.0, 46.0) * scale,
        azimuth_deg=rng.uniform(35.0, 55.0),
        elevation_deg=rng.uniform(25.0, 40.0),
    )
    epicardial_fat = rng.uniform(6.0, 10.0)
    root = heart.centre + rng.uniform(-0.8, -0.7) * heart.a * heart.long + rng.uniform(5.0, 12.0) * heart.ant
    ascending_dir = (rng.uniform(-0.25, -0.05), rng.uniform(-0.2, 0.0), 1.0)
    ascending_r, descending_r = AORTA_RADIUS_MM
    spine_y = body_b * rng.uniform(0.58, 0.64)
    vertebra_r = rng.uniform(15.0, 19.0)
    descending_start = np.array([vertebra_r + rng.uniform(5.0, 9.0), spine_y - rng.uniform(10.0, 16.0), 0.0])
    descending_dir = (rng.uniform(-0.05, 0.05), 0.0, 1.0)
    tree = _coronary_tree(heart, rng, root, ascending_r)
    if descending_aorta_clearance_mm is not None:
        descending_start = _clear_of_heart(
            descending_start,
            _unit(descending_dir),
            descending_r,
            heart,
            epicardial_fat,
            descending_aorta_clearance_mm,
            (0.0, spine_y),
            vertebra_r,
            zs,
        )
    layout = None
    ascending_top = descending_top = np.inf
    if not legacy:
        layout = chest.chest_layout(
            extra, heart, root, _unit(ascending_dir), ascending_r, descending_start, _unit(descending_dir),
            descending_r, spine_y, vertebra_r, body_b, fat,
        )  # fmt: skip
        ascending_top, descending_top = layout.ascending_top_z, layout.descending_top_z
        chest.paint_soft_tissue(image, grid, layout, extra, lung_q, lung_bottom, (body_a, body_b), fat, spine_y)
        chest.paint_airways(image, grid, layout)

    heart_box = grid.box(heart.centre, np.full(3, heart.a + epicardial_fat))
    if heart_box is not None:
        zb, yb, xb = heart_box
        region = image[heart_box]
        region[heart.local_q(xs[xb], ys[yb], zs[zb], epicardial_fat) <= 1.0] = EPICARDIAL_FAT
        region[heart.local_q(xs[xb], ys[yb], zs[zb]) <= 1.0] = MYOCARDIUM
        region[heart.local_q(xs[xb], ys[yb], zs[zb], -12.0, long_scale=0.75) <= 1.0] = BLOOD
    if layout is not None:
        chest.paint_vessels(image, grid, layout)
    _paint_vertical_tube(image, grid, zs, xs, ys, root, ascending_dir, ascending_r, BLOOD, z_from=root[2], z_to=ascending_top)
    if descending_aorta_clearance_mm is not None:
        # Moved beside the vertebra it would lie in muscle of nearly its own HU: fat outlines it, as on CT.
        _paint_vertical_tube(image, grid, zs, xs, ys, descending_start, descending_dir, descending_r + PERIAORTIC_FAT_MM, FAT, z_to=descending_top)
    _paint_vertical_tube(image, grid, zs, xs, ys, descending_start, descending_dir, descending_r, BLOOD, z_to=descending_top)
    for points, radii in tree.values():
        _paint_tube(image, grid, points, radii, BLOOD)

    # ---- bones: spine (vertebral bodies, discs, posterior elements), ribs, sternum
    bone = np.zeros(grid.shape, dtype=bool)
    cortical = rng.uniform(1000.0, 1300.0)
    r_spine = np.sqrt(x2**2 + (y2 - spine_y) ** 2)
    body_plane = r_spine <= vertebra_r
    canal_y = spine_y + vertebra_r + 9.0
    r_canal = np.sqrt(x2**2 + (y2 - canal_y) ** 2)
    posterior = ((r_canal > 8.0) & (r_canal <= 12.5) & (y2 >= canal_y - 3.0)) | (
        (np.abs(x2) <= 3.5) & (y2 >= canal_y + 10.0) & (y2 <= canal_y + 32.0)
    )
    disc_period, disc_width = rng.uniform(26.0, 30.0), 5.0
    disc_phase = rng.uniform(0.0, disc_period)
    in_disc = ((zs - disc_phase) % disc_period) < disc_width
    image[:, body_plane] = CANCELLOUS_BONE
    image[:, body_plane & (r_spine > vertebra_r - 2.0)] = cortical
    image[:, posterior] = cortical * 0.8
    image[:, r_canal <= 8.0] = 20.0  # spinal canal
    bone[:, body_plane | posterior] = True
    disc = in_disc[:, None, None] & body_plane[None]
    image[disc] = DISC
    bone[disc] = False

    # The sternum runs from the xiphoid up to the thoracic inlet (over the whole legacy grid).
    sternum_z = slice(None) if layout is None else slice(*np.searchsorted(zs, [layout.xiphoid_z, layout.inlet_z]))
    sternum_y = -(body_b - fat - rng.uniform(6.0, 9.0))
    sternum_q = (x2 / 14.0) ** 2 + ((y2 - sternum_y) / 6.5) ** 2
    image[sternum_z][:, sternum_q <= 1.0] = cortical * 0.85
    image[sternum_z][:, (x2 / 11.5) ** 2 + ((y2 - sternum_y) / 4.0) ** 2 <= 1.0] = CANCELLOUS_BONE
    bone[sternum_z][:, sternum_q <= 1.0] = True

    # Ribs: flat cross-sections (7 x 12 mm) below the chest wall surface, sloping down anteriorly.
    theta = np.arctan2(*np.broadcast_arrays(y2, x2))
    ellipse_radius = 1.0 / np.sqrt((np.cos(theta) / body_a) ** 2 + (np.sin(theta) / body_b) ** 2)
    rib_depth_offset = rng.uniform(5.0, 8.0)
    depth = (1.0 - np.sqrt(body_q)) * ellipse_radius - (fat + rib_depth_offset)
    from_posterior = np.abs(np.angle(np.exp(1j * (theta - np.pi / 2)))) / np.pi  # 0 back .. 1 front
    ring = (np.abs(depth) <= 3.5) & (from_posterior >= 0.1) & (from_posterior <= 0.78)
    ring_y, ring_x = np.nonzero(ring)
    rib_drop, rib_period = rng.uniform(110.0, 150.0), rng.uniform(24.0, 28.0)
    rib_phase = rng.uniform(0.0, rib_period)
    rib_value = rng.uniform(800.0, 1100.0)
    dr = depth[ring_y, ring_x]
    # Height of each ring pixel relative to the nearest rib's centre, by rib index along z.
    z_rel = zs[:, None] - (rib_phase - rib_drop * from_posterior[ring_y, ring_x])[None, :]
    dz = z_rel - rib_period * np.round(z_rel / rib_period)
    in_rib = (dr[None] / 3.5) ** 2 + (dz / 6.0) ** 2 <= 1.0
    marrow = (dr[None] / 2.0) ** 2 + (dz / 4.5) ** 2 <= 1.0
    if layout is not None:  # the first ribs reach the thoracic inlet
        below_inlet = (zs <= layout.inlet_z + 3.0)[:, None]
        in_rib, marrow = in_rib & below_inlet, marrow & below_inlet
    kz, kp = np.nonzero(in_rib)
    image[kz, ring_y[kp], ring_x[kp]] = rib_value
    bone[kz, ring_y[kp], ring_x[kp]] = True
    kz, kp = np.nonzero(marrow)
    image[kz, ring_y[kp], ring_x[kp]] = CANCELLOUS_BONE
    if layout is not None:
        # Costal cartilages continue the ribs' course from their anterior ends to the sternum's edge.
        band = (np.abs(depth) <= 3.0) & (from_posterior > 0.78) & (from_posterior <= 0.95) & (np.abs(x2) > 14.0)
        band_y, band_x = np.nonzero(band)
        z_rel = zs[:, None] - (rib_phase - rib_drop * from_posterior[band_y, band_x])[None, :]
        dz = z_rel - rib_period * np.round(z_rel / rib_period)
        kz, kp = np.nonzero((depth[band_y, band_x][None] / 3.0) ** 2 + (dz / 5.0) ** 2 <= 1.0)
        keep = zs[kz] <= layout.inlet_z
        image[kz[keep], band_y[kp[keep]], band_x[kp[keep]]] = COSTAL_CARTILAGE

    scene = distractor_mod.Scene(
        heart=heart, epicardial_fat=float(epicardial_fat), root=root, ascending_dir=_unit(ascending_dir),
        ascending_r=ascending_r, tree=tree, layout=layout, z_range=(float(zs[0]), float(zs[-1])),
        body_semi_axes=(float(body_a), float(body_b)), fat=float(fat), sternum_y=float(sternum_y),
        rib={"drop": float(rib_drop), "period": float(rib_period), "phase": float(rib_phase), "depth_offset": float(rib_depth_offset)},
        spine_xy=np.array([0.0, spine_y]), vertebra_r=float(vertebra_r),
        disc={"period": float(disc_period), "phase": float(disc_phase), "width": disc_width},
    )  # fmt: skip
    found: list = []  # (Distractor, box, support) of every distractor drawn
    metal_core = np.zeros(grid.shape, dtype=bool) if any(k in distractor_mod.METAL_KINDS for k in kinds) else None
    if layout is not None:
        chest.paint_neck_and_clavicles(image, bone, grid, layout, extra, (body_a, body_b), fat, sternum_y, cortical)
        for _ in range(kinds.get("osteophyte", 0)):
            found += _paint_osteophyte(image, bone, grid, scene, extra, cortical)
        for kind in distractor_mod.METAL_KINDS:
            for _ in range(kinds.get(kind, 0)):
                found += _paint_metal(image, grid, scene, extra, kind, metal_core)

    image = render.blur(image, grid, psf)

    # ---- calcifications: aortic (label 0) first, then distractors, then coronary plaques away from them all
    support_artery = np.zeros(grid.shape, dtype=np.uint8)
    aortic_support = np.zeros(grid.shape, dtype=bool)
    distractor_support = np.zeros(grid.shape, dtype=bool)
    for _item, box, support in found:  # metal's blooming and osteophytes: no plaque is placed on them
        distractor_support[box] |= support
    ostia = [tree["LM"][0][0], tree["RCA"][0][0]]

    def place(centre, semi_axes, rotation, target):
        """Render a blob; None where it cannot reach its target or would touch bone or other calcium."""
        rendered = _render_blob(image, grid, centre, semi_axes, rotation, target, psf)
        if rendered is None:
            return None
        box, field, support, contrast, material = rendered
        if (support_artery[box][support] > 0).any() or aortic_support[box][support].any() or distractor_support[box][support].any():
            return None
        return box, field, contrast, material, support

    def paint(placed, support_mask):
        """Add a placed blob to the image and its support to support_mask; (box, material HU, support)."""
        box, blob, contrast, material, support = placed
        image[box] += contrast * blob
        support_mask[box] |= support
        return box, material, support

    aortic = []
    for _ in range(int(rng.integers(n_aortic_calcifications[0], n_aortic_calcifications[1] + 1))):
        for _attempt in range(20):
            descending = rng.uniform() < 0.6
            start, direction, radius = (
                (descending_start, _unit(descending_dir), descending_r)
                if descending
                else (root, _unit(ascending_dir), ascending_r)
            )
            z_low = zs[1] if descending else max(zs[1], root[2])  # the ascending aorta starts at the root
            z_high = min(zs[-2], descending_top if descending else ascending_top)
            if z_low >= z_high:
                continue
            z = rng.uniform(z_low, z_high)
            axis_point = start + direction * (z - start[2]) / direction[2]
            angle = rng.uniform(0, 2 * np.pi)
            radial = np.array([math.cos(angle), math.sin(angle), 0.0])
            centre = axis_point + (radius - 0.5) * radial
            if min(np.linalg.norm(centre - o) for o in ostia) < 15.0:
                continue
            rotation = np.stack([np.cross(direction, radial), radial, direction], axis=1)
            semi = tuple(
                float(v) for v in (rng.uniform(1.5, 4.0), rng.uniform(0.8, 1.8), rng.uniform(1.5, 5.0))
            )
            target = float(rng.uniform(250.0, 1000.0))
            placed = place(centre, semi, rotation, target)
            if placed is None:
                continue
            box, material, support = paint(placed, aortic_support)
            blob_info = Calcification(
                "aorta", 0, tuple(map(float, centre)), semi, target, float(material), None, 0
            )
            aortic.append((blob_info, box, support))
            break

    for kind in distractor_mod.CALCIUM_KINDS:
        for _ in range(kinds.get(kind, 0)):
            for _attempt in range(20):
                blobs = distractor_mod.propose(kind, extra, scene)
                if blobs is None:
                    break
                placed_any = False
                for centre, semi, rotation, target, site in blobs:  # one blob, or a ring's beads one by one
                    if distractor_mod.coronary_distance(scene, centre[None]) < max(semi) + distractor_mod.CORONARY_CLEARANCE_MM:
                        continue
                    placed = place(centre, semi, rotation, target)
                    if placed is None:
                        continue
                    box, _material, support = paint(placed, distractor_support)
                    info = distractor_mod.Distractor(kind, tuple(map(float, centre)), tuple(map(float, semi)), float(target), site)
                    found.append((info, box, support))
                    placed_any = True
                if placed_any:
                    break

    bands = [(max(lo, plaque_peak_hu[0]), min(hi, plaque_peak_hu[1])) for lo, hi in AGATSTON_PEAK_BANDS_HU]
    bands = [band for band in bands if band[0] < band[1]]
    plaques_spec = []
    if rng.uniform() >= p_no_calcium:
        for key in ARTERIES:
            lo, hi = counts[key]
            plaques_spec += [key] * int(rng.integers(lo, hi + 1))
    plaques = []
    size = np.array(grid.shape[::-1])
    for key in plaques_spec:
        points, radii = tree[key]
        for _attempt in range(30):
            i = int(len(points) * 0.85 * rng.uniform() ** 1.5)  # proximal segments calcify more often
            index = grid.to_index(points[i])
            if np.any(index < [3, 3, 1]) or np.any(index > size - [4, 4, 2]):
                continue
            tangent = points[min(i + 1, len(points) - 1)] - points[max(i - 1, 0)]
            rotation = _frame_from_tangent(tangent, rng)
            across = rng.uniform(*plaque_size_mm)
            semi = (min(across * rng.uniform(1.0, 2.0), 5.0), across, across * rng.uniform(0.6, 1.0))
            centre = points[i] + radii[i] * rng.uniform(0.2, 0.7) * rotation[:, 1]
            if key in SISTER_BRANCH and _distance_to_curve(centre, tree[SISTER_BRANCH[key]][0]) < bifurcation_clearance_mm:
                continue
            band = bands[int(rng.integers(len(bands)))]
            target = float(rng.uniform(band[0], band[1]))
            placed = place(centre, semi, rotation, target)
            if placed is None:
                continue
            box, blob, contrast, material, support = placed
            image[box] += contrast * blob
            support_artery[box][support] = LABEL_ID[key]
            blob_info = Calcification(
                key,
                LABEL_ID[key],
                tuple(map(float, centre)),
                tuple(map(float, semi)),
                target,
                material,
                None,
                0,
            )
            plaques.append((blob_info, box, support))
            break

    streaks = []
    if acq is not None:
        if acq["motion_mm"] > 0:
            _cardiac_motion(image, grid, heart, epicardial_fat, acq["motion_mm"], extra)
        if acq["kernel"] == "sharp":
            acq_mod.sharpen(image, grid)
    if metal_core is not None and metal_streaks:
        streak_rng = np.random.default_rng([seed, 15, 1])  # its own stream: streaks on or off change nothing else
        for k in np.nonzero(metal_core.any(axis=(1, 2)))[0]:
            streaks.append((int(k), *acq_mod.metal_streaks(image[k], grid, metal_core[k], streak_rng)))
    if acq is None:
        render.add_noise(image, noise_hu, rng)
    else:
        image += acq_mod.textured_noise(image.shape, grid, noise_hu, acq["kernel"], rng)
        image += np.float32(acq["offset_hu"])
    if not legacy:
        np.clip(image, *acq_mod.CT_RANGE_HU, out=image)
    np.rint(image, out=image)  # whole HU, as scanners store them (NIfTI and DICOM then agree exactly)
    calcified = image >= SCORING_THRESHOLD_HU
    other = aortic_support | bone | distractor_support
    labels = _lesion_labels(calcified, support_artery, other)
    aortic_calcium_mask = calcified & aortic_support

    info = ScanInfo(
        slice_thickness_mm=acq["thickness_mm"] if acq is not None else grid.spacing[2],
        slice_increment_mm=grid.spacing[2],
        kvp=120.0,
        manufacturer="CACScoring phantom",
        modality="CT",
        patient_id=f"PHANTOM-THORAX-{seed:04d}",
        source=f"phantom:thorax seed={seed}",
    )
    ct = CTVolume(array=image, spacing=grid.spacing, origin=grid.origin, info=info)
    plaques = _measured(plaques, calcified, image)
    aortic = _measured(aortic, aortic_calcium_mask, image)
    anatomy = {
        "body_semi_axes_mm": [float(body_a), float(body_b)],
        "heart_centre_mm": heart.centre.tolist(),
        "heart_semi_axes_mm": [heart.a, heart.b, heart.b],
        "heart_long_axis": heart.long.tolist(),
        "aortic_root_mm": root.tolist(),
        "epicardial_fat_mm": float(epicardial_fat),
        "ascending_aorta": {"start_mm": root.tolist(), "direction": _unit(ascending_dir).tolist(), "radius_mm": ascending_r},
        "descending_aorta": {
            "start_mm": descending_start.tolist(),
            "direction": _unit(descending_dir).tolist(),
            "radius_mm": descending_r,
        },
        "lung_centres_mm": [[side * body_a * 0.45, 8.0] for side in (-1.0, 1.0)],
        "spine_centre_mm": [0.0, float(spine_y)],
        "vertebral_body_radius_mm": float(vertebra_r),
    }
    distractor_map = None
    realism = None
    if not legacy:
        anatomy["coronary_ostia_mm"] = [o.tolist() for o in ostia]
        anatomy["coronary_bifurcation_mm"] = tree["LAD"][0][0].tolist()  # where LM divides into LAD and LCX
        anatomy["chest"] = layout.to_dict()
        anatomy["sternum_y_mm"] = float(sternum_y)
        anatomy["ribs"] = scene.rib
        anatomy["discs"] = scene.disc
        distractor_map = np.zeros(grid.shape, dtype=np.uint8)
        for item, box, support in found:
            region = distractor_map[box]
            region[support & (region == 0)] = distractor_mod.KIND_ID[item.kind]
        realism = {
            "field_of_view": fov,
            "distractor_counts": kinds,
            "acquisition": acq,
            "metal_streaks": [
                {"slice": k, "centre_xy_mm": [x, y], "angles_rad": angles, "amplitudes_hu": amplitudes}
                for k, x, y, angles, amplitudes in streaks
            ],
        }
    scores = score_volume(ct, labels, ScoringParams()) if compute_scores else None
    return ThoraxPhantom(
        ct=ct,
        labels=labels,
        scores=scores,
        plaques=plaques,
        aortic_calcifications=aortic,
        bone_mask=bone,
        aortic_calcium_mask=aortic_calcium_mask,
        seed=seed,
        noise_hu=noise_hu,
        blur_sigma_mm=float(np.max(psf)),
        anatomy=anatomy,
        distractors=_measured(found, calcified, image),
        distractor_map=distractor_map,
        realism=realism,
    )


def _paint_osteophyte(image, bone, grid, scene, rng, cortical) -> list:
    """A bony spur at a vertebral body's endplate rim, painted as bone (with partial volume) before the
    scanner blur; drawn again where it would miss every slice."""
    for _attempt in range(10):
        ((centre, semi, rotation, _, _),) = distractor_mod.propose("osteophyte", rng, scene)
        shape = render.ellipsoid_fraction(grid, centre, semi, rotation)
        if shape is None:
            continue
        box, fraction = shape
        fraction = np.where(bone[box], 0.0, fraction)  # on the vertebra's rim, not inside it
        spur = fraction >= 0.25
        if not spur.any():
            continue
        region = image[box]
        region += fraction * (np.float32(cortical * 0.8) - region)
        bone[box] |= spur
        return [(distractor_mod.Distractor("osteophyte", tuple(map(float, centre)), tuple(map(float, semi)), None), box, spur)]
    return []


def _paint_metal(image, grid, scene, rng, kind, metal_core) -> list:
    """Metal splatted onto the voxels it passes through (its volume spread over theirs) before the blur."""
    for _attempt in range(10):
        path = distractor_mod.metal_path(kind, rng, scene)
        if path is None:
            return []
        points, volume = path
        if kind != "stent" and distractor_mod.coronary_distance(scene, points) < distractor_mod.CORONARY_CLEARANCE_MM:
            continue
        index = np.rint(grid.to_index(points)).astype(int)
        inside = np.all((index >= 0) & (index < np.array(grid.shape[::-1])), axis=1)
        if not inside.any():
            return []
        voxel_volume = float(np.prod(grid.spacing))
        k, j, i = index[inside, 2], index[inside, 1], index[inside, 0]
        np.add.at(image, (k, j, i), np.float32(distractor_mod.METAL_HU * volume / voxel_volume))
        metal_core[k, j, i] = True
        lo, hi = np.array([k.min(), j.min(), i.min()]), np.array([k.max(), j.max(), i.max()]) + 1
        pad = np.array([1, 3, 3])
        start = np.maximum(lo - pad, 0)
        box = tuple(slice(int(a), int(b)) for a, b in zip(start, np.minimum(hi + pad, grid.shape), strict=True))
        own = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
        own[k - start[0], j - start[1], i - start[2]] = True
        support = ndimage.binary_dilation(own, np.ones((3, 7, 7), bool))  # its voxels and the blur's reach
        half = (points.max(axis=0) - points.min(axis=0)) / 2
        centre = (points.max(axis=0) + points.min(axis=0)) / 2
        return [(distractor_mod.Distractor(kind, tuple(map(float, centre)), tuple(map(float, half)), None), box, support)]
    return []


def _cardiac_motion(image, grid, heart: _Heart, epicardial_fat, length_mm, rng) -> None:
    """A non-gated scan: the heart (and its calcium) smeared along a random in-plane direction."""
    margin = epicardial_fat + 10.0
    # The box leaves room for the weight's tail and the shift, which wraps round at its edges.
    box = grid.box(heart.centre, np.full(3, heart.a + margin + 12.0 + length_mm))
    if box is None:
        return
    zb, yb, xb = box
    xs, ys, zs = grid.axis(0)[xb], grid.axis(1)[yb], grid.axis(2)[zb]
    weight = (heart.local_q(xs, ys, zs, margin) <= 1.0).astype(np.float32)
    weight = ndimage.gaussian_filter(weight, render.gaussian_sigma_voxels(grid, 4.0))
    acq_mod.motion_blur(image, grid, box, weight, length_mm, rng.uniform(0.0, math.pi))
