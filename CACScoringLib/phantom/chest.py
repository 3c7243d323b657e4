"""Full-chest anatomy for the thorax phantom (neck to upper abdomen) and the places of its distractors.

Landmarks hang off the aortic root the heart already fixes: the aortic arch's apex 60-80 mm above it, the
carina 20-30 mm below the apex, the thoracic inlet (top of the sternum, first ribs) 25-40 mm above the apex
and the lung apices 15-30 mm above that. The trachea runs down in front of the spine to the carina, the main
bronchi to the hila (the right one shorter and steeper); the arch curves from the ascending aorta over the
left main bronchus, left of the trachea, into the descending aorta; the brachiocephalic trunk (dividing
into right subclavian and common carotid), the left common carotid and the left subclavian rise from it;
the superior vena cava runs down right of the ascending aorta into the right atrium; the pulmonary trunk
rises left of the aortic root and divides below the arch. Non-contrast blood is 40 HU throughout, so where
vessels meet they merge as they do on a real scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from . import render
from .render import resample_polyline as resample

# Tissue HU (as in thorax.py, which imports this module)
AIR, FAT, MUSCLE, LUNG, BLOOD, FLUID, CANCELLOUS_BONE = -1000.0, -100.0, 45.0, -850.0, 40.0, 15.0, 250.0


@dataclass
class Tube:
    points: np.ndarray  # (N, 3) mm, evenly spaced
    radius: float

    def to_dict(self) -> dict:
        ends = self.points[[0, len(self.points) // 2, -1]]
        return {"start_mm": ends[0].tolist(), "middle_mm": ends[1].tolist(), "end_mm": ends[2].tolist(), "radius_mm": self.radius}


@dataclass
class ChestLayout:
    inlet_z: float  # top of the manubrium and the first ribs
    lung_apex_z: float
    arch_apex_z: float
    ascending_top_z: float  # where the ascending aorta turns into the arch
    descending_top_z: float
    carina_mm: np.ndarray
    trachea_xy: np.ndarray
    trachea_radius: float
    xiphoid_z: float
    neck_semi_axes: tuple[float, float]
    neck_centre_y: float
    mediastinum_semi_x: float
    airways: dict[str, Tube] = field(default_factory=dict)  # trachea, right/left main bronchus
    vessels: dict[str, Tube] = field(default_factory=dict)  # arch, neck vessels, SVC, pulmonary arteries

    NECK_VESSELS = ("brachiocephalic", "right_subclavian", "right_carotid", "left_carotid", "left_subclavian")

    def to_dict(self) -> dict:
        return {
            "inlet_z_mm": self.inlet_z,
            "lung_apex_z_mm": self.lung_apex_z,
            "arch_apex_z_mm": self.arch_apex_z,
            "ascending_top_z_mm": self.ascending_top_z,
            "descending_top_z_mm": self.descending_top_z,
            "carina_mm": self.carina_mm.tolist(),
            "xiphoid_z_mm": self.xiphoid_z,
            "trachea_xy_mm": self.trachea_xy.tolist(),
            "airways": {k: t.to_dict() for k, t in self.airways.items()},
            "vessels": {k: t.to_dict() for k, t in self.vessels.items()},
        }


def _line(a, b, step=0.5) -> np.ndarray:
    return resample(np.stack([np.asarray(a, float), np.asarray(b, float)]), step)


def _polyline(*points, step=0.5) -> np.ndarray:
    return resample(np.asarray(points, float), step)


def _xy_clearance(points: np.ndarray, axis_xy, radius_sum: float) -> float:
    return float(np.linalg.norm(points[:, :2] - axis_xy, axis=1).min() - radius_sum)


def _off_trachea(tube: Tube, trachea_xy, trachea_outer_r: float, carina_z: float) -> np.ndarray:
    """The tube's centreline pushed sideways off the trachea (above the carina) so that its wall and the fat
    round it pass beside the trachea's wall, as vessels do, instead of through it."""
    points = tube.points.copy()
    offset = points[:, :2] - trachea_xy
    distance = np.linalg.norm(offset, axis=1)
    needed = trachea_outer_r + tube.radius + 2.5
    push = (points[:, 2] >= carina_z - 2.0) & (distance < needed)
    points[push, :2] = trachea_xy + offset[push] / np.maximum(distance[push], 1e-6)[:, None] * needed
    return points


def chest_layout(rng, heart, root, ascending_dir, ascending_r, descending_start, descending_dir,
                 descending_r, spine_y, vertebra_r, body_b, fat) -> ChestLayout:  # fmt: skip
    """Chest landmarks and tubes from the heart's and aortas' placement (module docstring)."""
    root = np.asarray(root, float)
    arch_apex = root[2] + rng.uniform(60.0, 80.0)
    ascending_top = arch_apex - rng.uniform(12.0, 18.0)
    inlet = arch_apex + rng.uniform(25.0, 40.0)
    carina_z = arch_apex - rng.uniform(20.0, 30.0)
    trachea_r = rng.uniform(8.0, 10.0)
    trachea = np.array([rng.uniform(-6.0, -2.0), spine_y - vertebra_r - rng.uniform(12.0, 16.0) - trachea_r])

    def ascending_at(z):
        return root + ascending_dir * (z - root[2]) / ascending_dir[2]

    def descending_at(z):
        return descending_start + descending_dir * (z - descending_start[2]) / descending_dir[2]

    # The trachea keeps clear of the ascending aorta (moved left, towards the arch's side, if needed).
    gap = np.linalg.norm(trachea - ascending_at(ascending_top)[:2]) - (trachea_r + ascending_r + 3.0)
    if gap < 0:
        trachea[0] -= gap
    a, d = ascending_at(ascending_top), descending_at(ascending_top)
    t = np.linspace(0.0, 1.0, 80)[:, None]
    bulge = rng.uniform(10.0, 20.0)
    for _ in range(15):  # over the left main bronchus, left of the trachea (its ends join the aortas)
        arch = a + (d - a) * t + np.sin(np.pi * t) * np.array([bulge, 0.0, arch_apex - ascending_top])
        if _xy_clearance(arch[20:60], trachea, trachea_r + ascending_r + 2.0) >= 0:
            break
        bulge += 2.0
    arch = resample(arch, 0.5)
    carina = np.array([*trachea, carina_z])
    right_end = carina + [-rng.uniform(28.0, 35.0), rng.uniform(0.0, 8.0), -rng.uniform(15.0, 22.0)]
    left_end = carina + [rng.uniform(40.0, 50.0), rng.uniform(0.0, 6.0), -rng.uniform(25.0, 32.0)]
    airways = {
        "trachea": Tube(_line(carina, [*trachea, inlet + 200.0]), trachea_r),
        "right_bronchus": Tube(_line(carina, right_end), rng.uniform(6.0, 7.5)),
        "left_bronchus": Tube(_line(carina, left_end), rng.uniform(5.0, 6.5)),
    }
    # The left bronchus passes in front of the descending aorta.
    for _ in range(20):
        if _xy_clearance(airways["left_bronchus"].points, descending_at(carina_z)[:2], descending_r + 8.0) >= 0:
            break
        left_end[1] -= 2.0
        airways["left_bronchus"] = Tube(_line(carina, left_end), airways["left_bronchus"].radius)

    def on_arch(fraction):
        return arch[int(fraction * (len(arch) - 1))]

    bct_origin, lcca_origin, lsca_origin = on_arch(0.3), on_arch(0.5), on_arch(0.65)
    bct_top = bct_origin + [-rng.uniform(8.0, 14.0), -rng.uniform(0.0, 6.0), inlet - bct_origin[2] + rng.uniform(0.0, 10.0)]
    neck_top = inlet + 200.0
    right_subclavian_end = [-rng.uniform(75.0, 90.0), bct_top[1] + rng.uniform(5.0, 15.0), bct_top[2] + rng.uniform(5.0, 15.0)]
    left_subclavian_mid = lsca_origin + [rng.uniform(8.0, 14.0), rng.uniform(0.0, 5.0), inlet - lsca_origin[2] + 5.0]
    left_subclavian_end = [rng.uniform(75.0, 90.0), left_subclavian_mid[1] + rng.uniform(5.0, 15.0), left_subclavian_mid[2] + rng.uniform(5.0, 15.0)]
    carotid_dx = rng.uniform(8.0, 12.0)  # the carotids and their fat sheath beside the trachea, not in it
    vessels = {
        "aortic_arch": Tube(arch, ascending_r),
        "brachiocephalic": Tube(_line(bct_origin, bct_top), rng.uniform(5.5, 7.0)),
        "right_subclavian": Tube(_polyline(bct_top, bct_top + [-15.0, 3.0, 12.0], right_subclavian_end), rng.uniform(3.5, 4.5)),
        "right_carotid": Tube(_polyline(bct_top, [trachea[0] - trachea_r - carotid_dx, trachea[1] - 2.0, neck_top]), rng.uniform(3.0, 4.0)),
        "left_carotid": Tube(_polyline(lcca_origin, [trachea[0] + trachea_r + carotid_dx, trachea[1] - 2.0, inlet + 20.0], [trachea[0] + trachea_r + carotid_dx, trachea[1] - 2.0, neck_top]), rng.uniform(3.0, 4.0)),
        "left_subclavian": Tube(_polyline(lsca_origin, left_subclavian_mid, left_subclavian_end), rng.uniform(3.5, 4.5)),
    }
    for name, tube in vessels.items():
        vessels[name] = Tube(_off_trachea(tube, trachea, trachea_r + 1.5, carina_z), tube.radius)
    svc_r = rng.uniform(8.0, 10.0)
    svc_top = ascending_at(arch_apex) + [-(ascending_r + svc_r + 3.0), rng.uniform(0.0, 6.0), 0.0]
    svc_bottom = ascending_at(root[2]) + [-(ascending_r + svc_r + 3.0), rng.uniform(0.0, 6.0), -rng.uniform(5.0, 12.0)]
    vessels["svc"] = Tube(_line(svc_top, svc_bottom), svc_r)
    trunk_start = root + rng.uniform(20.0, 26.0) * heart.side + rng.uniform(6.0, 12.0) * heart.ant + [0.0, 0.0, 8.0]
    bifurcation = np.array([trachea[0] + rng.uniform(12.0, 20.0), trachea[1] - rng.uniform(12.0, 18.0), carina_z - rng.uniform(0.0, 8.0)])
    pa_r = rng.uniform(11.0, 14.0)
    vessels["pulmonary_trunk"] = Tube(_line(trunk_start, bifurcation), pa_r)
    vessels["left_pulmonary"] = Tube(_line(bifurcation, left_end + [0.0, -8.0, 14.0]), pa_r * 0.75)
    vessels["right_pulmonary"] = Tube(_line(bifurcation, right_end + [0.0, -16.0, 12.0]), pa_r * 0.75)
    for name in ("pulmonary_trunk", "left_pulmonary", "right_pulmonary"):
        vessels[name] = Tube(_off_trachea(vessels[name], trachea, trachea_r + 1.5, carina_z), vessels[name].radius)
    return ChestLayout(
        inlet_z=float(inlet),
        lung_apex_z=float(inlet + rng.uniform(15.0, 30.0)),
        arch_apex_z=float(arch_apex),
        ascending_top_z=float(ascending_top),
        descending_top_z=float(d[2]),
        carina_mm=carina,
        trachea_xy=trachea,
        trachea_radius=float(trachea_r),
        xiphoid_z=float(heart.centre[2] - heart.a * abs(heart.long[2]) - rng.uniform(5.0, 15.0)),
        neck_semi_axes=(float(rng.uniform(55.0, 65.0)), float(rng.uniform(50.0, 60.0))),
        neck_centre_y=float(spine_y * rng.uniform(0.45, 0.6)),
        mediastinum_semi_x=float(rng.uniform(30.0, 38.0)),
        airways=airways,
        vessels=vessels,
    )


def paint_tube(image, grid: render.Grid, points: np.ndarray, radius: float, value) -> None:
    """Set the voxels within radius of a polyline (densely sampled points) to value: a distance transform
    over the tube's box, which may reach past the grid so that tubes are cut cleanly at its edges."""
    spacing = np.array(grid.spacing)
    size = np.array(grid.shape[::-1])
    index = grid.to_index(points)
    reach = radius / spacing + 1
    near = np.all((index > -reach) & (index < size - 1 + reach), axis=1)
    if not near.any():
        return
    index = np.rint(index[near]).astype(int)
    lo = index.min(axis=0) - np.ceil(reach).astype(int)
    hi = index.max(axis=0) + np.ceil(reach).astype(int) + 1
    marks = np.zeros(tuple((hi - lo)[::-1]), dtype=bool)
    marks[tuple((index - lo)[:, ::-1].T)] = True
    inside = ndimage.distance_transform_edt(~marks, sampling=tuple(spacing[::-1])) <= radius
    a, b = np.maximum(lo, 0), np.minimum(hi, size)
    if np.any(b <= a):
        return
    crop = tuple(slice(int(a[i] - lo[i]), int(b[i] - lo[i])) for i in (2, 1, 0))
    box = tuple(slice(int(a[i]), int(b[i])) for i in (2, 1, 0))
    image[box][inside[crop]] = value


def paint_soft_tissue(image, grid, layout: ChestLayout, rng, lung_q, lung_bottom, body_axes, fat, spine_y) -> None:
    """Lungs narrowing to their apices, mediastinal fat between them above the heart, and the stomach."""
    xs, ys, zs = grid.axis(0), grid.axis(1), grid.axis(2)
    x2, y2 = xs[None, :], ys[:, None]
    _, body_b = body_axes
    sternum_y = -(body_b - fat - 7.5)
    centre_y, semi_y = (sternum_y + spine_y) / 2, (spine_y - sternum_y) / 2 - 8.0
    mediastinum = ((x2 + 2.0) / layout.mediastinum_semi_x) ** 2 + ((y2 - centre_y) / semi_y) ** 2 <= 1.0
    for k, z in enumerate(zs):
        plane = image[k]
        top = float(np.clip((layout.lung_apex_z - z) / 45.0, 0.0, 1.0))
        if top < 1.0:
            plane[(plane == LUNG) & (lung_q[-1] > top) & (lung_q[1] > top)] = MUSCLE
        if lung_bottom + 20.0 < z < layout.inlet_z:
            plane[mediastinum] = FAT
    centre = np.array([rng.uniform(45.0, 65.0), rng.uniform(-20.0, 0.0), lung_bottom - rng.uniform(10.0, 25.0)])
    semi = rng.uniform([40.0, 35.0, 35.0], [55.0, 45.0, 50.0])
    box = grid.box(centre, semi)
    if box is not None:
        zb, yb, xb = box
        dx, dy, dz = xs[xb][None, None, :] - centre[0], ys[yb][None, :, None] - centre[1], zs[zb][:, None, None] - centre[2]
        stomach = (dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2 <= 1.0
        image[box][stomach] = FLUID
        image[box][stomach & (dy < -0.35 * semi[1]) & (dz > 0.0)] = AIR  # gas rises to the front (supine)


def paint_airways(image, grid, layout: ChestLayout) -> None:
    for tube in layout.airways.values():
        paint_tube(image, grid, tube.points, tube.radius + 1.5, MUSCLE)  # the airway wall
    for tube in layout.airways.values():
        paint_tube(image, grid, tube.points, tube.radius, AIR)


def paint_vessels(image, grid, layout: ChestLayout) -> None:
    """Blood in every vessel; the neck vessels in a sheath of fat, which is what outlines them on a
    non-contrast scan (blood and muscle differ by a few HU)."""
    for name in layout.NECK_VESSELS:
        tube = layout.vessels[name]
        paint_tube(image, grid, tube.points, tube.radius + 2.0, FAT)
    for tube in layout.vessels.values():
        paint_tube(image, grid, tube.points, tube.radius, BLOOD)


def paint_neck_and_clavicles(image, bone, grid, layout: ChestLayout, rng, body_axes, fat, sternum_y, cortical) -> None:
    """Clavicles from the manubrium's top out over the lung apices, and the body narrowing into the neck
    above the shoulders."""
    for side in (-1.0, 1.0):
        start = [side * 16.0, sternum_y + 2.0, layout.inlet_z - 3.0]
        end = [side * rng.uniform(75.0, 90.0), sternum_y + rng.uniform(15.0, 30.0), layout.inlet_z + rng.uniform(8.0, 18.0)]
        points = resample(np.array([start, end]), 0.5)
        paint_tube(image, grid, points, 6.0, cortical * 0.85)
        paint_tube(bone, grid, points, 6.0, True)
        paint_tube(image, grid, points, 3.5, CANCELLOUS_BONE)
    xs, ys, zs = grid.axis(0), grid.axis(1), grid.axis(2)
    x2, y2 = xs[None, :], ys[:, None]
    body_a, body_b = body_axes
    neck_a, neck_b = layout.neck_semi_axes
    rim = min(fat, 8.0)
    for k, z in enumerate(zs):
        w = float(np.clip((z - layout.inlet_z - 15.0) / 35.0, 0.0, 1.0))
        if w <= 0.0:
            continue
        a, b, cy = (1 - w) * body_a + w * neck_a, (1 - w) * body_b + w * neck_b, w * layout.neck_centre_y
        q = (x2 / a) ** 2 + ((y2 - cy) / b) ** 2
        outside = q > 1.0
        image[k][outside] = AIR
        bone[k][outside] = False
        image[k][~outside & ((x2 / (a - rim)) ** 2 + ((y2 - cy) / (b - rim)) ** 2 > 1.0) & ~bone[k]] = FAT
