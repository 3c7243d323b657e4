"""Realistic thorax phantoms: the default unchanged bit for bit, full-chest anatomy, distractors drawn where
their anatomy puts them and labelled 0, coronary labels still right beside them, random acquisitions."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import CACScoringLib.phantom.thorax as thorax
from CACScoringLib.errors import InputError
from CACScoringLib.labels import LABEL_ID
from CACScoringLib.phantom import make_thorax_phantom
from CACScoringLib.phantom.acquisition import draw_acquisition, psf_sigma_mm
from CACScoringLib.phantom.distractors import KIND_ID, METAL_KINDS

SEEDS = (1, 2, 3)
ALL_KINDS = {kind: 3 for kind in KIND_ID} | {"sternal_wire": 4, "pacemaker_lead": 1, "stent": 1}
# 5 mm slices of 0.9 mm pixels over the chest: a few seconds per phantom.
CHEST_SCAN = {"fov_mm": 340.0, "pixel_mm": 0.9, "thickness_mm": 5.0, "increment_mm": 5.0, "noise_hu": 12.0,
              "kernel": "smooth", "offset_hu": 0.0, "gated": True, "motion_mm": 0.0, "coverage_mm": 330.0}  # fmt: skip


def digest(phantom) -> tuple[str, str]:
    """Image and labels, and the truth without its scores (the scoring engine's report format is its own)."""
    image = hashlib.sha256(np.ascontiguousarray(phantom.ct.array).tobytes() + phantom.labels.tobytes()).hexdigest()
    truth = {key: value for key, value in phantom.truth().items() if key != "scores"}
    return image, hashlib.sha256(json.dumps(truth, sort_keys=True).encode()).hexdigest()


def test_the_default_phantom_is_unchanged_bit_for_bit():
    """Regression guard of a deterministic generator: these digests were computed from the generator at
    commit 487cb60, before the realistic options existed (the shipped model's recipe and the tests rely on
    its phantoms). A change here means the default phantoms changed."""
    small = {"seed": 7, "shape": (16, 96, 96), "spacing": (2.4, 2.4, 3.0), "p_no_calcium": 0.0}
    assert digest(make_thorax_phantom(**small)) == (
        "6719763402019c7e5fcaaa10b2a39546bc91d3cdbde0c97b25fcf6bc1ef09fb9",
        "58a518d78ca1e07a1e9899e6736c9ca6b90688d500f217b7e86c9a0c09a3a90a",
    )
    legacy = make_thorax_phantom(**small, bifurcation_clearance_mm=0, descending_aorta_clearance_mm=None)
    assert digest(legacy) == (
        "ef8f01e3d35e83395ab114de867d7f30c42cd649103914afdda191091d40424b",
        "aad93464f4930f852782ce9541ec04ed689c5f3170f06b6a7e86759d66a55dfc",
    )
    default = make_thorax_phantom(seed=1, compute_scores=False)
    assert default.realism is None and default.distractor_map is None and not default.distractors


@pytest.fixture(scope="module")
def chests():
    """Full-chest phantoms with every distractor kind, and the coronary centrelines the generator drew."""
    trees, build = [], thorax._coronary_tree
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(thorax, "_coronary_tree", lambda *a, **k: trees.append(build(*a, **k)) or trees[-1])
        phantoms = [
            make_thorax_phantom(seed=seed, field_of_view="chest", distractors=ALL_KINDS, acquisition=CHEST_SCAN, p_no_calcium=0.0)
            for seed in SEEDS
        ]
    return list(zip(phantoms, trees, strict=True))


def world(ct, mask) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    return np.stack([i, j, k], axis=1) * np.array(ct.spacing) + np.array(ct.origin)


def heart_q(anatomy, point, grow_mm=0.0) -> float:
    """The heart ellipsoid's quadratic form at a point (<= 1 inside), semi-axes grown by grow_mm."""
    centre, long_axis = np.array(anatomy["heart_centre_mm"]), np.array(anatomy["heart_long_axis"])
    a, b, _ = anatomy["heart_semi_axes_mm"]
    offset = np.asarray(point) - centre
    along = offset @ long_axis
    across = np.linalg.norm(offset - along * long_axis)
    return (along / (a + grow_mm)) ** 2 + (across / (b + grow_mm)) ** 2


def coronary_wall_distance(tree, points) -> np.ndarray:
    points = np.atleast_2d(points)
    return np.min(
        [(np.linalg.norm(points[:, None] - c[None], axis=2) - r[None]).min(axis=1) for c, r in tree.values()], axis=0
    )


def of_kind(phantom, kind):
    return [d for d in phantom.distractors if d.kind == kind]


def test_every_distractor_kind_is_drawn_recorded_and_labelled_zero(chests):
    seen = {kind: 0 for kind in KIND_ID}
    for phantom, _ in chests:
        labels, kinds = phantom.labels, phantom.distractor_map
        assert not labels[kinds > 0].any()
        truth = phantom.truth()
        assert truth["distractor_kinds"] == KIND_ID
        assert len(truth["distractors"]) == len(phantom.distractors)
        for item in phantom.distractors:
            seen[item.kind] += item.n_voxels > 0
            assert (kinds == KIND_ID[item.kind]).any()
        assert set(truth["distractor_counts"]) == set(ALL_KINDS)
    assert all(count >= 2 for count in seen.values()), seen


def test_coronary_labels_stay_on_their_plaques_beside_the_distractors(chests):
    labelled = 0
    for phantom, _ in chests:
        labels, hu = phantom.labels, phantom.ct.array
        assert (hu[labels > 0] >= 130).all()
        points = world(phantom.ct, labels > 0)
        values = labels[labels > 0]
        owner = np.zeros(len(points), bool)
        for plaque in phantom.plaques:
            near = np.linalg.norm(points - plaque.centre_mm, axis=1) <= max(plaque.semi_axes_mm) + 2.0 + 2 * max(phantom.ct.spacing)
            owner |= near & (values == LABEL_ID[plaque.artery])
        assert owner.all()
        labelled += int((labels > 0).sum())
        # Plaques still carry labels in every phantom, distractors notwithstanding.
        assert {p.artery for p in phantom.plaques if p.n_voxels} <= {a for a, i in LABEL_ID.items() if (labels == i).any()}
    assert labelled > 0


def test_aortic_valve_calcium_sits_at_the_root_below_the_ostia(chests):
    for phantom, tree in chests:
        anatomy = phantom.anatomy
        root, ostium_z = np.array(anatomy["aortic_root_mm"]), min(o[2] for o in anatomy["coronary_ostia_mm"])
        direction, radius = np.array(anatomy["ascending_aorta"]["direction"]), anatomy["ascending_aorta"]["radius_mm"]
        for item in of_kind(phantom, "aortic_valve"):
            centre = np.array(item.centre_mm)
            assert centre[2] < ostium_z - 1.9 and np.linalg.norm(centre - root) <= 25.0
            axis = root + direction * (centre[2] - root[2]) / direction[2]
            assert np.linalg.norm((centre - axis)[:2]) <= radius  # within the annulus
            assert coronary_wall_distance(tree, centre) >= 4.0 + max(item.semi_axes_mm) - 1e-6


def test_mitral_annulus_ring_lies_inside_the_heart_at_the_atrioventricular_junction(chests):
    for phantom, tree in chests:
        anatomy = phantom.anatomy
        centre, long_axis = np.array(anatomy["heart_centre_mm"]), np.array(anatomy["heart_long_axis"])
        junction = (np.array(anatomy["coronary_bifurcation_mm"]) - centre) @ long_axis
        beads = of_kind(phantom, "mitral_annulus")
        assert beads
        for bead in beads:
            assert heart_q(anatomy, bead.centre_mm) < 1.0
            level = (np.array(bead.centre_mm) - centre) @ long_axis
            assert -0.5 <= level - junction <= 0.08 * anatomy["heart_semi_axes_mm"][0] + 0.5
            assert coronary_wall_distance(tree, bead.centre_mm) >= 4.0


def test_lymph_nodes_lie_beside_the_airways_outside_the_heart(chests):
    sites = set()
    for phantom, _ in chests:
        chest, anatomy = phantom.anatomy["chest"], phantom.anatomy
        carina = np.array(chest["carina_mm"])
        for node in of_kind(phantom, "lymph_node"):
            sites.add(node.site)
            centre = np.array(node.centre_mm)
            assert heart_q(anatomy, centre, anatomy["epicardial_fat_mm"]) > 1.0
            reach = max(node.semi_axes_mm)
            if node.site == "hilar":
                bronchus_distance = min(
                    np.linalg.norm(np.cross(centre - np.array(b["start_mm"]), np.array(b["end_mm"]) - b["start_mm"]))
                    / np.linalg.norm(np.array(b["end_mm"]) - b["start_mm"]) - b["radius_mm"]
                    for name, b in chest["airways"].items() if name != "trachea"
                )  # fmt: skip
                assert bronchus_distance <= 8.0 + reach
            elif node.site == "subcarinal":
                assert carina[2] - 18.5 <= centre[2] <= carina[2] - 9.5
                assert np.linalg.norm((centre - carina)[:2]) <= 8.0
            else:
                assert centre[2] >= carina[2] and centre[0] < chest["trachea_xy_mm"][0]  # right paratracheal
                assert np.linalg.norm(centre[:2] - chest["trachea_xy_mm"]) <= chest["airways"]["trachea"]["radius_mm"] + 10.0
    assert sites == {"hilar", "subcarinal", "paratracheal"}


def test_costal_cartilage_calcium_is_anterior_and_lateral_to_the_sternum(chests):
    for phantom, _ in chests:
        sternum_y = phantom.anatomy["sternum_y_mm"]
        items = of_kind(phantom, "costal_cartilage")
        assert items
        for item in items:
            x, y, _ = item.centre_mm
            assert 14.0 + 5.0 < abs(x) < 75.0  # beside the sternum (14 mm half-width), not out at the ribs' sides
            assert y < sternum_y + 25.0 < phantom.anatomy["heart_centre_mm"][1]
            # On a rib's course beyond its anterior end (the ribs end at 0.78 of the way round from the back),
            # at that rib's height: the ribs slope down by `drop` mm from back to front, one every `period` mm.
            ribs = phantom.anatomy["ribs"]
            from_posterior = abs(np.angle(np.exp(1j * (np.arctan2(y, x) - np.pi / 2)))) / np.pi
            assert 0.78 < from_posterior < 0.95
            height = item.centre_mm[2] - (ribs["phase"] - ribs["drop"] * from_posterior)
            assert abs(height - ribs["period"] * round(height / ribs["period"])) < 0.5


def test_arch_and_neck_vessel_calcium_sit_on_their_vessels_above_the_ascending_aorta(chests):
    for phantom, _ in chests:
        chest = phantom.anatomy["chest"]
        arch = chest["vessels"]["aortic_arch"]
        for item in of_kind(phantom, "neck_vessel"):  # above the arch's ends, off its upper side
            assert item.site in chest["vessels"] and item.site != "aortic_arch"
            assert item.centre_mm[2] >= chest["ascending_top_z_mm"] - 1.0
        for item in of_kind(phantom, "aortic_arch"):  # on the wall of the arch, which rises from its ends
            assert chest["ascending_top_z_mm"] - arch["radius_mm"] <= item.centre_mm[2] <= chest["arch_apex_z_mm"] + arch["radius_mm"]


def test_pericardial_calcium_lies_outside_the_epicardial_fat_and_off_the_coronaries(chests):
    for phantom, tree in chests:
        anatomy = phantom.anatomy
        fat = anatomy["epicardial_fat_mm"]
        for item in of_kind(phantom, "pericardial"):
            assert heart_q(anatomy, item.centre_mm, fat) > 1.0 > heart_q(anatomy, item.centre_mm, fat + 3.5)
            assert coronary_wall_distance(tree, item.centre_mm) >= 4.0 + max(item.semi_axes_mm) - 1e-6


def test_osteophytes_sit_on_vertebral_body_rims_at_the_endplates(chests):
    for phantom, _ in chests:
        anatomy = phantom.anatomy
        spine, radius, discs = np.array(anatomy["spine_centre_mm"]), anatomy["vertebral_body_radius_mm"], anatomy["discs"]
        items = of_kind(phantom, "osteophyte")
        assert items
        for item in items:
            x, y, z = item.centre_mm
            assert radius < np.linalg.norm([x - spine[0], y - spine[1]]) <= radius + 2.0
            assert y < spine[1] + 0.15 * radius  # anterior and lateral rims
            phase = (z - discs["phase"]) % discs["period"]
            edge = min(phase, abs(phase - discs["width"]), discs["period"] - phase)
            assert edge <= 1.5 + 1e-6
            assert phantom.bone_mask[phantom.distractor_map == KIND_ID["osteophyte"]].all()


def test_metal_saturates_and_a_stent_lies_on_a_coronary_with_its_voxels_unlabelled(chests):
    for phantom, tree in chests:
        for item in (d for d in phantom.distractors if d.kind in METAL_KINDS):
            assert item.peak_hu is not None and item.peak_hu > 1500.0, item
        stent = phantom.distractor_map == KIND_ID["stent"]
        if stent.any():
            bright = stent & (phantom.ct.array > 1500)
            assert coronary_wall_distance(tree, world(phantom.ct, bright)).max() <= 2.0 * max(phantom.ct.spacing[:2])
            assert not phantom.labels[stent].any()


def test_sternal_wires_loop_round_the_sternum_and_the_lead_runs_into_the_right_heart(chests):
    for phantom, _ in chests:
        anatomy = phantom.anatomy
        for wire in of_kind(phantom, "sternal_wire"):
            assert abs(wire.centre_mm[0]) < 1.0 and abs(wire.centre_mm[1] - anatomy["sternum_y_mm"]) < 12.0
        lead = phantom.distractor_map == KIND_ID["pacemaker_lead"]
        if lead.any():
            points = world(phantom.ct, lead & (phantom.ct.array > 1500))
            assert (np.array([heart_q(anatomy, p) for p in points[::10]]) < 0.8).any()  # its tip in the ventricle
            svc = anatomy["chest"]["vessels"]["svc"]
            assert (np.linalg.norm(points - svc["middle_mm"], axis=1) <= svc["radius_mm"] + 2.0).any()


def test_metal_streaks_radiate_from_the_metal_and_change_nothing_else():
    options = {"seed": 2, "field_of_view": "chest", "distractors": {"sternal_wire": 3}, "acquisition": CHEST_SCAN}
    with_streaks, without = make_thorax_phantom(**options), make_thorax_phantom(**options, metal_streaks=False)
    difference = with_streaks.ct.array - without.ct.array
    metal_slices = np.nonzero((with_streaks.distractor_map == KIND_ID["sternal_wire"]).any(axis=(1, 2)))[0]
    streaks = with_streaks.realism["metal_streaks"]
    streak_slices = sorted({s["slice"] for s in streaks})
    assert len(streak_slices) >= 3 and set(streak_slices) <= set(metal_slices.tolist())
    assert not difference[np.setdiff1d(np.arange(difference.shape[0]), streak_slices)].any()
    for streak in streaks:
        k, (cx, cy) = streak["slice"], streak["centre_xy_mm"]
        angle, amplitude = streak["angles_rad"][0], streak["amplitudes_hu"][0]
        # 30 mm from the wire along its first streak (inward, into the body) the HU moved by a good part of
        # its amplitude; the streaks cross there so the check allows for the others.
        for sign in (1, -1):
            x, y = cx + sign * 30 * np.cos(angle), cy + sign * 30 * np.sin(angle)
            j = int(round((y - with_streaks.ct.origin[1]) / with_streaks.ct.spacing[1]))
            i = int(round((x - with_streaks.ct.origin[0]) / with_streaks.ct.spacing[0]))
            if without.ct.array[k, j, i] > -500:
                assert abs(difference[k, j, i]) > 0.2 * abs(amplitude) * np.exp(-30 / 50) - 60


def test_chest_field_of_view_reaches_neck_and_upper_abdomen(chests):
    for phantom, _ in chests:
        ct, chest = phantom.ct, phantom.anatomy["chest"]
        z = ct.origin[2] + ct.spacing[2] * np.arange(ct.shape[0])
        assert 300.0 <= z[-1] - z[0] <= 350.0
        assert z[-1] > chest["inlet_z_mm"] + 20.0 and z[0] < phantom.anatomy["heart_centre_mm"][2] - 100.0
        hu = ct.array
        # Air in the trachea above the carina; above the lung apices the body narrows to the neck.
        tx, ty = chest["trachea_xy_mm"]
        k = int(np.searchsorted(z, chest["carina_mm"][2] + 30.0))
        j, i = (int(round((c - o) / s)) for c, o, s in ((ty, ct.origin[1], ct.spacing[1]), (tx, ct.origin[0], ct.spacing[0])))
        assert hu[k, j - 1 : j + 2, i - 1 : i + 2].mean() < -800
        top = int(np.searchsorted(z, chest["inlet_z_mm"] + 55.0))
        if top < len(z):
            body = hu[top] > -500
            assert body.sum() * ct.spacing[0] ** 2 < np.pi * 70.0 * 70.0  # the neck, not the chest's width
        assert chest["descending_top_z_mm"] < chest["arch_apex_z_mm"] < chest["inlet_z_mm"]


def test_acquisition_draws_cover_the_requested_ranges():
    rng = np.random.default_rng(0)
    draws = [draw_acquisition(rng, fov) for fov in ("cardiac", "chest") for _ in range(300)]
    pixel = np.array([d["pixel_mm"] for d in draws])
    fov = np.array([d["fov_mm"] for d in draws])
    thickness = np.array([d["thickness_mm"] for d in draws])
    increment = np.array([d["increment_mm"] for d in draws])
    assert 0.35 <= pixel.min() < 0.45 and 0.9 < pixel.max() <= 0.98
    assert 180 <= fov.min() < 200 and 380 < fov.max() <= 400 and (fov / pixel <= 512 + 1e-6).all()
    assert 0.5 <= thickness.min() < 0.7 and 4.8 < thickness.max() <= 5.0
    assert (increment <= thickness + 1e-9).all() and (increment < thickness - 0.1).mean() > 0.25  # overlapping
    noise = np.array([d["noise_hu"] for d in draws])
    offset = np.array([d["offset_hu"] for d in draws])
    assert 5 <= noise.min() < 7 and 38 < noise.max() <= 40 and -20 <= offset.min() < -18 and 18 < offset.max() <= 20
    assert {d["kernel"] for d in draws} == {"smooth", "sharp"}
    assert all((d["motion_mm"] > 0) == (not d["gated"]) for d in draws)
    chest_coverage = [d["coverage_mm"] for d in draws if d["coverage_mm"] > 200]
    assert max(chest_coverage) <= 350.0 and len(chest_coverage) == 300
    # Thick slices at a smaller increment blur more in z than slices at their own thickness.
    assert psf_sigma_mm({"kernel": "smooth", "thickness_mm": 3.0, "increment_mm": 1.5})[2] > psf_sigma_mm(
        {"kernel": "smooth", "thickness_mm": 3.0, "increment_mm": 3.0}
    )[2]


def small_scan(**settings):
    base = {"fov_mm": 220.0, "pixel_mm": 0.86, "thickness_mm": 3.0, "increment_mm": 3.0, "noise_hu": 0.0,
            "kernel": "smooth", "offset_hu": 0.0, "gated": True, "motion_mm": 0.0, "coverage_mm": 120.0}  # fmt: skip
    return make_thorax_phantom(seed=5, acquisition=base | settings, compute_scores=False)


def test_acquisition_noise_texture_offset_and_motion():
    quiet = small_scan()
    assert quiet.ct.shape == (41, 256, 256) and quiet.ct.spacing == pytest.approx((0.86, 0.86, 3.0))
    for kernel, correlated in (("smooth", True), ("sharp", False)):
        base = small_scan(kernel=kernel)
        noise = small_scan(kernel=kernel, noise_hu=30.0).ct.array - base.ct.array
        inside = (np.abs(noise) < 500) & (base.ct.array > -900) & (base.ct.array < 1000)  # unclipped voxels
        assert noise[inside].std() == pytest.approx(30.0, rel=0.1)
        neighbour = np.corrcoef(noise[:, :, :-1][inside[:, :, :-1]], noise[:, :, 1:][inside[:, :, :-1]])[0, 1]
        assert (neighbour > 0.3) if correlated else (abs(neighbour) < 0.1)
    shifted = small_scan(offset_hu=20.0).ct.array - quiet.ct.array
    mid = (quiet.ct.array > -900) & (quiet.ct.array < 2000)
    assert np.all(np.abs(shifted[mid] - 20.0) <= 1.0)
    moving = small_scan(gated=False, motion_mm=6.0)
    changed = np.abs(moving.ct.array - quiet.ct.array) > 1
    heart = np.array(quiet.anatomy["heart_centre_mm"])
    points = world(quiet.ct, changed)
    assert changed.sum() > 1000 and np.linalg.norm(points - heart, axis=1).max() < 130.0  # the heart only
    assert small_scan(thickness_mm=3.0, increment_mm=1.5).ct.info.slice_thickness_mm == 3.0


def test_realchest_preset_varies_the_field_of_view_and_the_scan():
    fields, grids = set(), set()
    for seed in range(4):
        phantom = make_thorax_phantom(seed=seed, preset="realchest", acquisition={"max_slices": 40}, compute_scores=False)
        fields.add(phantom.realism["field_of_view"])
        grids.add(phantom.ct.shape[1:])
        acq = phantom.realism["acquisition"]
        assert phantom.ct.spacing[0] == pytest.approx(acq["pixel_mm"]) and phantom.ct.spacing[2] == pytest.approx(acq["increment_mm"])
        assert phantom.ct.info.slice_thickness_mm == pytest.approx(acq["thickness_mm"])
        assert not phantom.labels[phantom.distractor_map > 0].any()
    assert fields == {"cardiac", "chest"} and len(grids) == 4


@pytest.mark.parametrize(
    "options, message",
    [
        ({"preset": "nope"}, "unknown phantom preset"),
        ({"field_of_view": "abdomen"}, "unknown field of view"),
        ({"distractors": {"kidney_stone": 1}}, "unknown distractor kind"),
        ({"acquisition": {"pixel": 0.5}}, "unknown acquisition setting"),
        ({"acquisition": "random", "shape": (8, 64, 64)}, "not both"),
        ({"acquisition": {"thickness_mm": 1.0, "increment_mm": 2.0}}, "exceeds thickness"),
    ],
)
def test_bad_realism_options_are_named(options, message):
    with pytest.raises(InputError, match=message):
        make_thorax_phantom(seed=0, compute_scores=False, **options)


def test_cli_writes_a_realistic_phantom_with_its_distractor_map(tmp_path, capsys):
    from CACScoringLib.cli import main
    from CACScoringLib.io import read_ct

    out = tmp_path / "chest"
    args = ["phantom", str(out), "--seed", "4", "--field-of-view", "chest", "--distractors", "aortic_valve=2,sternal_wire=2",
            "--acquisition", "fov_mm=300,pixel_mm=0.9,thickness_mm=5,increment_mm=5,kernel=sharp,gated=true"]  # fmt: skip
    assert main(args) == 0
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    assert truth["field_of_view"] == "chest" and truth["distractor_counts"] == {"aortic_valve": 2, "sternal_wire": 2}
    assert truth["acquisition"]["kernel"] == "sharp" and truth["acquisition"]["gated"] is True
    assert {d["kind"] for d in truth["distractors"]} == {"aortic_valve", "sternal_wire"}
    kinds = read_ct(out / "thorax_distractors.nii.gz").array
    assert set(np.unique(kinds)) == {0, KIND_ID["aortic_valve"], KIND_ID["sternal_wire"]}
    assert main(["phantom", str(tmp_path / "bad"), "--distractors", "aortic_valve"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["phantom", str(tmp_path / "bad"), "--kind", "calibration", "--preset", "realchest"]) == 2


def test_training_phantoms_take_the_options_and_mark_distractors_as_lookalikes():
    from CACScoringLib.training.data import phantom_case

    options = {"distractors": {"aortic_valve": 3, "costal_cartilage": 3}, "acquisition": {"max_slices": 30, "fov_mm": 240.0}}
    case = phantom_case(11, None, options)
    phantom = make_thorax_phantom(seed=11, **options)
    np.testing.assert_array_equal(case.image, phantom.ct.array)
    distractor_calcium = (phantom.distractor_map > 0) & (phantom.ct.array >= 130)
    assert distractor_calcium.any() and (case.lookalikes[distractor_calcium] == 1).all()
    assert not case.labels[case.lookalikes > 0].any()


def test_dicom_export_keeps_the_slice_thickness_of_overlapping_slices(tmp_path):
    from CACScoringLib.io import read_ct
    from CACScoringLib.phantom import write_thorax_case

    scan = {"fov_mm": 200.0, "pixel_mm": 0.98, "thickness_mm": 3.0, "increment_mm": 1.5, "coverage_mm": 30.0}
    phantom = make_thorax_phantom(seed=1, acquisition=scan, compute_scores=False)
    write_thorax_case(phantom, tmp_path, "dicom")
    ct = read_ct(tmp_path / "thorax_dicom")
    assert ct.info.slice_thickness_mm == pytest.approx(3.0) and ct.spacing[2] == pytest.approx(1.5)


def test_labelled_voxels_are_counted_per_distractor_kind(chests):
    from CACScoringLib.phantom.distractors import labelled_voxels_per_kind

    phantom, _ = chests[0]
    assert set(labelled_voxels_per_kind(phantom.distractor_map, phantom.labels).values()) == {0}
    # A segmentation that labels every voxel >= 130 HU: each kind's count is its bright voxels.
    everything = (phantom.ct.array >= 130).astype(np.uint8)
    counts = labelled_voxels_per_kind(phantom.distractor_map, everything)
    for kind, kind_id in KIND_ID.items():
        assert counts[kind] == int(((phantom.distractor_map == kind_id) & (phantom.ct.array >= 130)).sum())
    assert counts["aortic_valve"] > 0 and counts["sternal_wire"] > 0
