"""What real chest CT holds that is bright but not coronary calcium, placed where its anatomy puts it.

Calcifications (rendered like plaques, scaled to a target peak): aortic-valve cusps just below the coronary
ostia, a mitral-annulus ring at the left atrioventricular junction, calcified hilar, subcarinal and
paratracheal lymph nodes, costal-cartilage calcium between the anterior rib ends and the sternum, calcium
on the aortic arch and the neck vessels, and pericardial plaques outside the epicardial fat. Bone: vertebral
osteophytes at the vertebral bodies' endplate rims. Metal (saturating, with streaks): sternal wires round
the sternum, a pacemaker lead from a pectoral generator through the subclavian vein and the superior vena
cava into the right atrium and the right ventricular apex, and coronary stents on a proximal coronary
segment. Every one is labelled 0: a stent too, since the Agatston score leaves stented segments out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError
from .render import resample_polyline

CALCIUM_KINDS = (
    "aortic_valve", "mitral_annulus", "lymph_node", "costal_cartilage", "aortic_arch", "neck_vessel",
    "pericardial",
)  # fmt: skip
METAL_KINDS = ("sternal_wire", "pacemaker_lead", "stent")
KINDS = (*CALCIUM_KINDS, *METAL_KINDS, "osteophyte")
KIND_ID = {kind: index for index, kind in enumerate(KINDS, start=1)}  # ids of ThoraxPhantom.distractor_map
# distractors="all": probability that a case shows the kind, and its count range (rings, wires, leads, ...)
RANDOM_RATES = {
    "aortic_valve": (0.5, 1, 4),
    "mitral_annulus": (0.25, 1, 1),
    "lymph_node": (0.5, 1, 5),
    "costal_cartilage": (0.5, 2, 8),
    "aortic_arch": (0.5, 1, 5),
    "neck_vessel": (0.4, 1, 4),
    "pericardial": (0.15, 1, 4),
    "sternal_wire": (0.12, 4, 7),
    "pacemaker_lead": (0.08, 1, 1),
    "stent": (0.1, 1, 2),
    "osteophyte": (0.5, 1, 6),
}
METAL_HU = 30000.0  # steel: far beyond the 12-bit range, so voxels it fills saturate at 3071
CORONARY_CLEARANCE_MM = 4.0  # between a distractor's surface and a coronary artery's wall


@dataclass
class Distractor:
    """One non-coronary bright object (label 0) as drawn, and what of it reaches 130 HU in the image."""

    kind: str
    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]  # calcium and bone: the ellipsoid; metal: half its extent
    target_peak_hu: float | None  # calcium: noise-free peak it was scaled to; None for metal and bone
    site: str = ""  # lymph nodes: hilar / subcarinal / paratracheal; neck vessels: which one
    peak_hu: float | None = None
    n_voxels: int = 0  # its voxels >= 130 HU in the final image

    def to_dict(self) -> dict:
        return asdict(self)


def counts(distractors, rng: np.random.Generator) -> dict[str, int]:
    """Kind -> count from the make_thorax_phantom option: None, 'all' (random per RANDOM_RATES) or a dict."""
    if distractors is None or distractors is False:
        return {}
    if distractors is True or distractors == "all":
        drawn = {}
        for kind, (p, lo, hi) in RANDOM_RATES.items():
            present, n = rng.uniform() < p, int(rng.integers(lo, hi + 1))
            if present:
                drawn[kind] = n
        return drawn
    if not isinstance(distractors, dict):
        raise InputError(f"distractors must be None, 'all' or a dict of kind -> count, not {distractors!r}")
    unknown = set(distractors) - set(KINDS)
    if unknown:
        raise InputError(f"unknown distractor kind(s) {', '.join(sorted(unknown))}: choose from {', '.join(KINDS)}")
    if any(int(n) < 0 for n in distractors.values()):
        raise InputError("distractor counts must be >= 0")
    return {kind: int(n) for kind, n in distractors.items() if int(n) > 0}


def labelled_voxels_per_kind(distractor_map: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """How many voxels of each distractor kind a label map (e.g. a model's output) labels as coronary: 0
    everywhere in the phantom's own labels."""
    counts = np.bincount(distractor_map[labels > 0].ravel(), minlength=len(KINDS) + 1)
    return {kind: int(counts[kind_id]) for kind, kind_id in KIND_ID.items()}


@dataclass
class Scene:
    """What the placement needs from the phantom's anatomy (mm, world LPS)."""

    heart: object  # thorax._Heart
    epicardial_fat: float
    root: np.ndarray
    ascending_dir: np.ndarray
    ascending_r: float
    tree: dict  # artery -> (centreline points, radii)
    layout: object | None  # chest.ChestLayout when the field of view reaches the neck
    z_range: tuple[float, float]
    body_semi_axes: tuple[float, float]
    fat: float
    sternum_y: float
    rib: dict  # drop, period, phase, depth_offset
    spine_xy: np.ndarray
    vertebra_r: float
    disc: dict  # period, phase, width
    coronary_index: tuple | None = None  # built on first use by coronary_distance


def coronary_distance(scene: Scene, points: np.ndarray) -> float:
    """Distance from the nearest of points (N, 3) to the nearest coronary wall (through the centreline
    point nearest to each, whose radius differs little from its neighbours')."""
    if scene.coronary_index is None:
        centreline = np.concatenate([p for p, _ in scene.tree.values()])
        scene.coronary_index = (cKDTree(centreline), np.concatenate([r for _, r in scene.tree.values()]))
    index, radii = scene.coronary_index
    distance, nearest = index.query(np.atleast_2d(points))
    return float((distance - radii[nearest]).min())


def _random_rotation(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    return q


def _frame(first, second) -> np.ndarray:
    """Rotation whose columns are first, second made orthogonal to it, and their cross product."""
    first, second = np.asarray(first, float), np.asarray(second, float)
    first = first / np.linalg.norm(first)
    second = second - second.dot(first) * first
    second /= np.linalg.norm(second)
    return np.stack([first, second, np.cross(first, second)], axis=1)


def ostia(scene: Scene) -> list[np.ndarray]:
    return [scene.tree["LM"][0][0], scene.tree["RCA"][0][0]]


def propose(kind: str, rng, scene: Scene) -> list[tuple] | None:
    """Candidate blobs [(centre, semi_axes, rotation, target_peak_hu, site)] for one calcium distractor, or
    None where the anatomy it needs is out of the scan."""
    heart = scene.heart
    if kind == "aortic_valve":
        # Cusps hang from the annulus below the ostia: 3 sectors round the root's axis.
        z_top = min(o[2] for o in ostia(scene)) - 2.0
        axis = scene.root + scene.ascending_dir * (z_top - rng.uniform(0.0, 8.0) - scene.root[2]) / scene.ascending_dir[2]
        angle = rng.uniform(0.0, 2 * math.pi)
        radial = np.array([math.cos(angle), math.sin(angle), 0.0])
        centre = axis + rng.uniform(0.3, 0.85) * scene.ascending_r * radial
        semi = (rng.uniform(1.5, 4.0), rng.uniform(1.0, 2.2), rng.uniform(1.0, 2.5))
        return [(centre, semi, _frame(np.cross(radial, [0, 0, 1.0]), radial), rng.uniform(300.0, 1200.0), "")]
    if kind == "mitral_annulus":
        lcx_start = scene.tree["LCX"][0][0]
        u = float((lcx_start - heart.centre) @ heart.long) / heart.a + rng.uniform(0.0, 0.08)
        rho = heart.b * math.sqrt(max(1.0 - u * u, 0.0))
        ring_r = rng.uniform(9.0, 13.0)
        phi = math.radians(rng.uniform(100.0, 150.0))  # left and posterior: the mitral valve
        outward = math.cos(phi) * heart.ant + math.sin(phi) * heart.side
        centre = heart.centre + u * heart.a * heart.long + (rho - ring_r - rng.uniform(6.0, 9.0)) * outward
        start, span = rng.uniform(0.0, 2 * math.pi), rng.uniform(math.pi * 0.6, math.pi * 1.4)
        blobs = []
        target = rng.uniform(300.0, 1000.0)
        for t in np.linspace(start, start + span, max(3, int(span * ring_r / 6.0))):
            radial = math.cos(t) * heart.ant + math.sin(t) * heart.side
            tangent = -math.sin(t) * heart.ant + math.cos(t) * heart.side
            semi = (rng.uniform(2.0, 3.2), rng.uniform(1.2, 2.0), rng.uniform(1.2, 2.0))
            blobs.append((centre + ring_r * radial, semi, _frame(tangent, radial), target * rng.uniform(0.8, 1.2), ""))
        return blobs
    if kind == "lymph_node":
        layout = scene.layout
        if layout is None:
            return None
        site = ("hilar", "subcarinal", "paratracheal")[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
        if site == "hilar":
            bronchus = layout.airways[("right_bronchus", "left_bronchus")[int(rng.integers(2))]]
            point = bronchus.points[int(rng.uniform(0.6, 1.0) * (len(bronchus.points) - 1))]
            direction = rng.standard_normal(3)
            direction -= direction.dot(bronchus.points[-1] - bronchus.points[0]) / np.sum((bronchus.points[-1] - bronchus.points[0]) ** 2) * (bronchus.points[-1] - bronchus.points[0])
            centre = point + (bronchus.radius + rng.uniform(4.0, 8.0)) * direction / np.linalg.norm(direction)
        elif site == "subcarinal":
            centre = layout.carina_mm + [rng.uniform(-5.0, 5.0), rng.uniform(0.0, 6.0), -rng.uniform(10.0, 18.0)]
        else:
            z = rng.uniform(layout.carina_mm[2] + 5.0, layout.arch_apex_z)
            centre = np.array([layout.trachea_xy[0] - layout.trachea_radius - rng.uniform(5.0, 9.0), layout.trachea_xy[1] + rng.uniform(-5.0, 5.0), z])
        semi = tuple(rng.uniform(1.5, 4.0, 3))
        return [(centre, semi, _random_rotation(rng), rng.uniform(300.0, 1500.0), site)]
    if kind == "costal_cartilage":
        rib = scene.rib
        side = rng.choice([-1.0, 1.0])
        from_posterior = rng.uniform(0.8, 0.9)  # between the rib ends (0.78) and the sternum's edge
        theta = math.pi / 2 + side * math.pi * from_posterior
        a, b = scene.body_semi_axes
        radius = 1.0 / math.sqrt((math.cos(theta) / a) ** 2 + (math.sin(theta) / b) ** 2)
        r = radius - scene.fat - rib["depth_offset"]
        z0 = rib["phase"] - rib["drop"] * from_posterior
        lo, hi = scene.z_range
        ks = np.arange(math.ceil((lo - z0) / rib["period"]), math.floor((hi - z0) / rib["period"]) + 1)
        if len(ks) == 0:
            return None
        z = z0 + rib["period"] * float(rng.choice(ks))
        centre = np.array([r * math.cos(theta), r * math.sin(theta), z])
        tangent = np.array([-math.sin(theta), math.cos(theta), 0.0])
        semi = (rng.uniform(2.0, 5.0), rng.uniform(1.0, 2.5), rng.uniform(1.0, 2.5))
        return [(centre, semi, _frame(tangent, [0.0, 0.0, 1.0]), rng.uniform(200.0, 900.0), "")]
    if kind in ("aortic_arch", "neck_vessel"):
        if scene.layout is None:
            return None
        vessels = scene.layout.vessels
        name = "aortic_arch" if kind == "aortic_arch" else scene.layout.NECK_VESSELS[int(rng.integers(5))]
        tube = vessels[name]
        i = int(rng.integers(len(tube.points)))
        tangent = tube.points[min(i + 1, len(tube.points) - 1)] - tube.points[max(i - 1, 0)]
        radial = np.cross(tangent, rng.standard_normal(3))
        radial /= np.linalg.norm(radial)
        centre = tube.points[i] + (tube.radius - 0.5) * radial
        semi = (rng.uniform(1.5, 4.0), rng.uniform(0.8, 1.8), rng.uniform(1.5, 4.0))
        return [(centre, semi, _frame(tangent, radial), rng.uniform(250.0, 1000.0), "" if kind == "aortic_arch" else name)]
    if kind == "pericardial":
        u, phi = rng.uniform(-0.5, 0.8), rng.uniform(-180.0, 180.0)
        centre = heart.surface(np.array([u]), np.array([phi]), scene.epicardial_fat + rng.uniform(1.5, 3.0))[0]
        normal = centre - (heart.centre + u * heart.a * heart.long)
        semi = (rng.uniform(2.0, 6.0), rng.uniform(0.8, 1.4), rng.uniform(1.5, 4.0))
        return [(centre, semi, _frame(np.cross(normal, heart.long), normal), rng.uniform(250.0, 900.0), "")]
    if kind == "osteophyte":
        disc = scene.disc
        lo, hi = scene.z_range
        ks = np.arange(math.floor((lo - disc["phase"]) / disc["period"]), math.ceil((hi - disc["phase"]) / disc["period"]) + 1)
        edge = disc["phase"] + disc["period"] * float(rng.choice(ks)) + disc["width"] * float(rng.integers(2))
        angle = rng.uniform(-math.pi, 0.15)  # anterior and lateral rims (y < 0 is anterior)
        radial = np.array([math.cos(angle), math.sin(angle), 0.0])
        centre = np.array([*scene.spine_xy, edge + rng.uniform(-1.5, 1.5)]) + (scene.vertebra_r + rng.uniform(0.5, 2.0)) * radial
        semi = (rng.uniform(3.0, 6.0), rng.uniform(1.5, 3.0), rng.uniform(1.5, 3.0))
        return [(centre, semi, _frame(np.cross([0.0, 0.0, 1.0], radial), radial), None, "")]
    raise ValueError(kind)


def metal_path(kind: str, rng, scene: Scene) -> tuple[np.ndarray, float] | None:
    """Points (N, 3) mm sampling a metal object and the metal volume (mm³) each stands for, or None where it
    has no place."""
    heart = scene.heart
    if kind == "sternal_wire":
        lo = max(scene.z_range[0], scene.layout.xiphoid_z if scene.layout else -np.inf) + 5.0
        hi = min(scene.z_range[1], scene.layout.inlet_z if scene.layout else np.inf) - 5.0
        if hi <= lo:
            return None
        z = rng.uniform(lo, hi)
        t = np.linspace(0.0, 2 * math.pi, 240)
        loop = np.stack([16.0 * np.cos(t), scene.sternum_y + 8.5 * np.sin(t), z + rng.uniform(-2.0, 2.0) * np.sin(t)], axis=1)
        knot = loop[np.argmin(loop[:, 1])] + [0.0, -1.5, 0.0]  # the twisted ends, in front of the sternum
        twist = knot + np.stack([np.linspace(0.0, 0.0, 20), np.linspace(0.0, -4.0, 20), 1.2 * np.sin(np.linspace(0.0, 6 * math.pi, 20))], axis=1)
        return np.concatenate([loop, twist]), math.pi * 0.5**2 * 0.33  # 1 mm wire, points 0.33 mm apart
    if kind == "pacemaker_lead":
        layout = scene.layout
        if layout is None:
            return None
        svc = layout.vessels["svc"].points
        side = 1.0 if rng.uniform() < 0.75 else -1.0  # generators sit mostly in the left pectoral pocket
        a, b = scene.body_semi_axes
        generator = np.array([side * rng.uniform(55.0, 75.0), -(b - scene.fat - 2.0), layout.inlet_z - rng.uniform(15.0, 30.0)])
        vein = np.array([side * rng.uniform(35.0, 45.0), scene.sternum_y + 25.0, layout.inlet_z - 5.0])
        right_atrium = heart.centre - 0.5 * heart.a * heart.long - 0.45 * heart.b * heart.side
        apex = heart.centre + 0.55 * heart.a * heart.long + 0.2 * heart.b * heart.ant - 0.1 * heart.b * heart.side
        lead = resample_polyline(np.array([generator, vein, svc[0], svc[-1], right_atrium, apex]), 0.3)
        # The generator can: a flat box under the skin, drawn as a dense grid of points.
        gx, gz = np.meshgrid(np.linspace(-22.0, 22.0, 60), np.linspace(-20.0, 20.0, 55))
        can = np.stack([generator[0] + gx.ravel(), np.full(gx.size, generator[1] + 4.0), generator[2] + gz.ravel()], axis=1)
        return np.concatenate([lead, can]), 0.3  # lead coil; the can's points each stand for 0.4 mm³ too
    if kind == "stent":
        artery = ("LAD", "RCA", "LCX")[int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
        points, radii = scene.tree[artery]
        step = float(np.linalg.norm(points[1] - points[0]))
        length = rng.uniform(12.0, 28.0)
        i0 = int(rng.uniform(0.05, 0.45) * len(points))
        i1 = min(len(points) - 1, i0 + int(length / step))
        shell = []
        for i in range(i0, i1):
            frame = _frame(points[min(i + 1, len(points) - 1)] - points[max(i - 1, 0)], np.array([0.3, 0.5, 0.8]))
            for angle in np.linspace(0.0, 2 * math.pi, 10, endpoint=False) + (i % 2) * math.pi / 10:
                shell.append(points[i] + radii[i] * 0.9 * (math.cos(angle) * frame[:, 1] + math.sin(angle) * frame[:, 2]))
        return np.array(shell), 0.03  # struts, their blooming included
    raise ValueError(kind)
