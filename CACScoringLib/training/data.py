"""Training data: cases from a manifest or generated phantoms, patient-wise splits, MONAI transforms, sampling.

Cases are held in memory as HU arrays (z, y, x) with their uint8 label maps; the transforms window them
(ScaleIntensityRange) and crop/augment them on the fly. 2D training works on axial slices, 3D on patches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk
from monai.transforms import (
    Compose,
    DeleteItemsd,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotated,
    RandShiftIntensityd,
    ScaleIntensityRange,
    ScaleIntensityRanged,
    SpatialPadd,
)
from sklearn.model_selection import KFold

from ..errors import InputError
from ..labels import LABEL_ID, MAX_LABEL
from ..models.networks import context_padded

NUM_CLASSES = MAX_LABEL + 1  # background + arteries
SAMPLING_KEY = "sampling"  # item key of the crop-centre classes (hard-negative sampling only)


@dataclass
class Case:
    id: str
    patient_id: str
    image: np.ndarray  # (z, y, x) HU float32
    labels: np.ndarray | None  # (z, y, x) uint8, None for score-only cases
    spacing: tuple[float, float, float]  # (x, y, z) mm
    reference_scores: dict = field(default_factory=dict)
    heart_mask: np.ndarray | None = None  # (z, y, x) uint8 0/1, only for heart ROI training
    lookalikes: np.ndarray | None = None  # (z, y, x) uint8 0/1: calcium that is not coronary, for hard negatives


def manifest_cases(path) -> list[Case]:
    from ..data.manifest import load_manifest
    from ..io import read_ct, read_labels

    cases = []
    for entry in load_manifest(path).cases:
        ct = read_ct(entry.image)
        labels = None if entry.labels is None else read_labels(entry.labels, ct)
        cases.append(
            Case(
                id=entry.id,
                patient_id=entry.patient_id or entry.id,
                image=ct.array.astype(np.float32, copy=False),
                labels=labels,
                spacing=tuple(ct.spacing),
                reference_scores=entry.reference_scores,
            )
        )
    if not cases:
        raise InputError(f"manifest {path} lists no cases; import a dataset first")
    return cases


def phantom_heart_mask(phantom) -> np.ndarray:
    """The phantom's heart (myocardium ellipsoid, blood pool included) rebuilt from its sampled anatomy.

    make_thorax_phantom draws the heart as an ellipsoid with semi-axes (a, b, b) on its long axis, so the
    centre, semi-axes and long axis in `phantom.anatomy` define it exactly; epicardial fat is left out."""
    ct, anatomy = phantom.ct, phantom.anatomy
    centre = np.asarray(anatomy["heart_centre_mm"])
    long_semi, short_semi, _ = anatomy["heart_semi_axes_mm"]
    long_axis = np.asarray(anatomy["heart_long_axis"])
    # Voxel centres in world mm; the phantom's direction is the identity.
    axes = [ct.origin[i] + ct.spacing[i] * np.arange(n) for i, n in enumerate(ct.shape[::-1])]
    dz, dy, dx = np.meshgrid(axes[2] - centre[2], axes[1] - centre[1], axes[0] - centre[0], indexing="ij", sparse=True)
    along = dx * long_axis[0] + dy * long_axis[1] + dz * long_axis[2]
    across_sq = dx**2 + dy**2 + dz**2 - along**2
    return ((along / long_semi) ** 2 + across_sq / short_semi**2 <= 1.0).astype(np.uint8)


def phantom_case(seed: int, shape, options: dict, with_heart: bool = False) -> Case:
    """The generated thorax phantom of one seed; each phantom is its own patient."""
    from ..phantom import make_thorax_phantom
    from ..phantom.thorax import SCORING_THRESHOLD_HU

    # shape null: the options' acquisition sets the grid (make_thorax_phantom refuses both)
    grid = {} if shape is None else {"shape": tuple(shape)}
    phantom = make_thorax_phantom(seed=seed, compute_scores=True, **grid, **options)
    lookalikes = phantom.aortic_calcium_mask
    if phantom.distractor_map is not None:  # valve, nodes, costal, metal ... : calcium that is not coronary
        lookalikes = lookalikes | ((phantom.distractor_map > 0) & (phantom.ct.array >= SCORING_THRESHOLD_HU))
    return Case(
        id=f"phantom-{seed}",
        patient_id=f"phantom-{seed}",
        image=phantom.ct.array.astype(np.float32, copy=False),
        labels=np.asarray(phantom.labels, dtype=np.uint8),
        spacing=tuple(phantom.ct.spacing),
        reference_scores={key: {"agatston": float(v.agatston)} for key, v in phantom.scores.arteries.items()},
        heart_mask=phantom_heart_mask(phantom) if with_heart else None,
        lookalikes=lookalikes.astype(np.uint8),
    )


def phantom_cases(seeds: range, shape, options: dict, with_heart: bool = False) -> list[Case]:
    return [phantom_case(seed, shape, options, with_heart) for seed in seeds]


class LazyPhantomCases(Sequence):
    """Phantom cases generated when read, for tasks that read each case once (the lesion classifier): hundreds
    of phantoms would not fit in memory together."""

    def __init__(self, seeds: range, shape, options: dict):
        self.seeds, self.shape, self.options = seeds, shape, options

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return LazyPhantomCases(self.seeds[index], self.shape, self.options)
        return phantom_case(self.seeds[index], self.shape, self.options)

    @property
    def ids(self) -> list[str]:
        return [f"phantom-{seed}" for seed in self.seeds]


def case_ids(cases) -> list[str]:
    """Case ids without generating lazy phantoms."""
    return cases.ids if isinstance(cases, LazyPhantomCases) else [case.id for case in cases]


def resample_case(case: Case, inplane_mm: float | None, slice_mm: float | None) -> Case:
    """The case on the grid the network sees (linear for HU, nearest for labels); unchanged where None."""
    spacing = list(case.spacing)
    target = [inplane_mm or spacing[0], inplane_mm or spacing[1], slice_mm or spacing[2]]
    if np.allclose(target, spacing):
        return case
    size = [max(1, round(n * s / t)) for n, s, t in zip(case.image.shape[::-1], spacing, target, strict=True)]

    def resample(array: np.ndarray, interpolator, pixel_type) -> np.ndarray:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        return sitk.GetArrayFromImage(
            sitk.Resample(image, size, sitk.Transform(), interpolator, (0.0, 0.0, 0.0), target, image.GetDirection(), 0, pixel_type)
        )

    image = resample(case.image, sitk.sitkLinear, sitk.sitkFloat32)
    labels = None if case.labels is None else resample(case.labels, sitk.sitkNearestNeighbor, sitk.sitkUInt8)
    heart = None if case.heart_mask is None else resample(case.heart_mask, sitk.sitkNearestNeighbor, sitk.sitkUInt8)
    lookalikes = None if case.lookalikes is None else resample(case.lookalikes, sitk.sitkNearestNeighbor, sitk.sitkUInt8)
    return replace(case, image=image, labels=labels, spacing=tuple(target), heart_mask=heart, lookalikes=lookalikes)


def patient_split(patient_ids: list[str], folds: int, fold: int, seed: int, val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, validation) patient ids: fold `fold` of a seeded k-fold over patients, or a held-out fraction."""
    patients = sorted(set(patient_ids))
    if folds > 1:
        if len(patients) < folds:
            raise InputError(f"{len(patients)} patients cannot make {folds} folds; lower split.folds")
        train_index, val_index = list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(patients))[fold]
        return [patients[i] for i in train_index], [patients[i] for i in val_index]
    if len(patients) < 2:
        raise InputError("a train/validation split needs at least 2 patients; add cases")
    order = np.random.default_rng(seed).permutation(len(patients))
    n_val = min(len(patients) - 1, max(1, math.ceil(val_fraction * len(patients))))
    val = sorted(patients[i] for i in order[:n_val])
    return [p for p in patients if p not in set(val)], val


def load_cases(config: dict) -> tuple[list[Case], list[Case]]:
    """(train, validation) cases as the config's data source and split say, on the network's grid."""
    train, val = _split_cases(config)
    if config["task"] == "lesion_classifier":
        return train, val  # segmented as the pipeline segments a CT, on its own grid
    model = config["model"]
    grid = (model["inplane_spacing_mm"], model["slice_spacing_mm"] if int(model["spatial_dims"]) == 3 else None)
    return [resample_case(c, *grid) for c in train], [resample_case(c, *grid) for c in val]


def _split_cases(config: dict) -> tuple[list[Case], list[Case]]:
    data = config["data"]
    with_heart = config["task"] == "heart_roi"
    if data["source"] == "phantom":
        phantom = data["phantom"]
        train_seeds, val_seeds = range(*phantom["train_seeds"]), range(*phantom["val_seeds"])
        if not train_seeds or not val_seeds:
            raise InputError("data.phantom.train_seeds and val_seeds must each give at least one seed ([start, stop])")
        if set(train_seeds) & set(val_seeds):
            raise InputError("data.phantom train_seeds and val_seeds overlap; give disjoint ranges")
        if config["task"] == "lesion_classifier":
            return (
                LazyPhantomCases(train_seeds, phantom["shape"], phantom["options"]),
                LazyPhantomCases(val_seeds, phantom["shape"], phantom["options"]),
            )
        return (
            phantom_cases(train_seeds, phantom["shape"], phantom["options"], with_heart),
            phantom_cases(val_seeds, phantom["shape"], phantom["options"], with_heart),
        )
    cases = manifest_cases(data["manifest"])
    if with_heart:
        cases = [attach_heart_mask(case, data["heart_masks"]) for case in cases]
    split = config["split"]
    train_ids, val_ids = patient_split(
        [c.patient_id for c in cases], int(split["folds"]), int(split["fold"]), int(config["seed"]), float(split["val_fraction"])
    )
    train_set, val_set = set(train_ids), set(val_ids)
    return [c for c in cases if c.patient_id in train_set], [c for c in cases if c.patient_id in val_set]


def attach_heart_mask(case: Case, folder) -> Case:
    """The case with its heart mask from FOLDER/<case id>.nii.gz (any value > 0 is heart)."""
    from pathlib import Path

    from ..io import read_ct

    if not folder:
        raise InputError("heart_roi training from a manifest needs data.heart_masks=FOLDER of <case id>.nii.gz masks")
    path = Path(folder) / f"{case.id}.nii.gz"
    if not path.is_file():
        raise InputError(f"no heart mask {path} for case {case.id}; add it or drop the case from the manifest")
    mask = read_ct(path).array
    if mask.shape != case.image.shape:
        raise InputError(f"heart mask {path} has shape {mask.shape}, the image {case.image.shape}; resample it onto the image")
    return replace(case, heart_mask=(mask > 0).astype(np.uint8))


def balanced_indices(is_positive: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Item indices for one epoch with both classes equally often: every item of the larger class once, the
    smaller class drawn with replacement up to the same count (seed 003 replicated its positives)."""
    positives, negatives = np.flatnonzero(is_positive), np.flatnonzero(~is_positive)
    if len(positives) == 0 or len(negatives) == 0:
        return np.arange(len(is_positive))
    small, large = sorted((positives, negatives), key=len)
    extra = rng.choice(small, size=len(large) - len(small), replace=True)
    return np.sort(np.concatenate([large, small, extra]))


def window(config: dict):
    """The HU window as a MONAI transform: [low, high] HU -> [0, 1], clipped (same at training and inference)."""
    low, high = (float(v) for v in config["data"]["hu_window"])
    return ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)


def train_transforms(config: dict, spatial_dims: int, num_classes: int = NUM_CLASSES) -> Compose:
    data, aug = config["data"], config["augment"]
    low, high = (float(v) for v in data["hu_window"])
    patch = [int(p) for p in data["patch_size"]]
    if len(patch) != spatial_dims:
        raise InputError(f"data.patch_size {patch} needs {spatial_dims} values for a {spatial_dims}D model")
    keys = ["image", "label"]
    hard = float(data["hard_negative_fraction"])
    pos = float(data["pos_fraction"])
    if hard and (data["sampling"] != "posneg" or not 0.0 < hard <= 1.0 - pos):
        raise InputError(
            f"data.hard_negative_fraction={hard} needs data.sampling=posneg and at most 1 - pos_fraction ({1.0 - pos:g})"
        )
    if hard:
        # Centres on calcium (1), on look-alikes (2) or anywhere else (0); a class a slice lacks gets no crops.
        crop = RandCropByLabelClassesd(
            keys=keys,
            label_key=SAMPLING_KEY,
            spatial_size=patch,
            ratios=[1.0 - pos - hard, pos, hard],
            num_classes=3,
            num_samples=int(data["samples_per_image"]),
            warn=False,
        )
    elif data["sampling"] == "classes":
        crop = RandCropByLabelClassesd(
            keys=keys,
            label_key="label",
            spatial_size=patch,
            ratios=data["class_ratios"],
            num_classes=num_classes,
            num_samples=int(data["samples_per_image"]),
            warn=False,
        )
    else:
        crop = RandCropByPosNegLabeld(
            keys=keys, label_key="label", spatial_size=patch, pos=pos, neg=1.0 - pos, num_samples=int(data["samples_per_image"])
        )
    in_plane = (spatial_dims - 2, spatial_dims - 1)  # flips and rotation stay in the axial plane
    sigma = tuple(float(s) for s in aug["smooth_sigma"])
    radians = math.radians(float(aug["rotate_deg"]))
    return Compose(
        [
            ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
            SpatialPadd(keys=keys + ([SAMPLING_KEY] if hard else []), spatial_size=patch),
            crop,
            *([DeleteItemsd(keys=SAMPLING_KEY)] if hard else []),
            *[RandFlipd(keys=keys, prob=float(aug["flip_prob"]), spatial_axis=axis) for axis in in_plane],
            RandRotated(keys=keys, range_x=radians, prob=float(aug["rotate_prob"]), mode=("bilinear", "nearest")),
            RandShiftIntensityd(keys="image", offsets=float(aug["shift_offset"]), prob=float(aug["shift_prob"])),
            RandGaussianNoised(keys="image", std=float(aug["noise_std"]), prob=float(aug["noise_prob"])),
            RandGaussianSmoothd(keys="image", sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=float(aug["smooth_prob"])),
        ]
    )


def sampling_map(case: Case) -> np.ndarray:
    """Crop-centre classes for hard-negative sampling: 1 calcium, 2 look-alike, 0 anything else."""
    classes = (case.labels > 0).astype(np.uint8)
    if case.lookalikes is not None:
        classes[(case.lookalikes > 0) & (classes == 0)] = 2
    return classes


def slice_items(
    cases: list[Case],
    negative_ratio: float,
    rng: np.random.Generator,
    hard_negatives: bool = False,
    artery_repeats: dict[str, int] | None = None,
    context_slices: int = 1,
    every_lookalike_slice: bool = False,
) -> list[dict]:
    """2D items for one epoch: every slice with calcium plus `negative_ratio` times as many calcium-free slices;
    with `hard_negatives` each item also carries its sampling map. `artery_repeats` lists a slice holding an
    artery's calcium that many times (the most of its arteries), so a rare artery gets more crops. Each image
    holds `context_slices` channels: the slice amid its neighbours (models.networks.context_padded).
    `every_lookalike_slice` draws each calcium-free slice holding a look-alike (a case's lookalikes map) every
    epoch, on top of the random calcium-free ones: a look-alike high on the aorta is on few slices, which a
    random draw would often leave out."""
    repeats_by_id = np.ones(NUM_CLASSES, np.int64)
    for artery, repeats in (artery_repeats or {}).items():
        repeats_by_id[LABEL_ID[artery]] = int(repeats)
    positives, negatives, lookalike_negatives = [], [], []
    for case in cases:
        flat = case.labels.reshape(case.labels.shape[0], -1)
        # Per slice: the most repeats among the arteries it holds; 0 for a slice without calcium.
        copies = np.max([np.where((flat == i).any(axis=1), repeats_by_id[i], 0) for i in range(1, NUM_CLASSES)], axis=0)
        classes = sampling_map(case) if hard_negatives else None
        has_lookalike = np.zeros(case.image.shape[0], bool)
        if every_lookalike_slice and case.lookalikes is not None:
            has_lookalike = case.lookalikes.reshape(case.lookalikes.shape[0], -1).any(axis=1)
        padded = context_padded(case.image, context_slices)
        for z in range(case.image.shape[0]):
            item = {"image": padded[z : z + context_slices], "label": case.labels[z][None], "case": case.id, "slice": z}
            if classes is not None:
                item[SAMPLING_KEY] = classes[z][None]
            if copies[z]:
                positives += [item] * int(copies[z])
            elif has_lookalike[z]:
                lookalike_negatives.append(item)
            else:
                negatives.append(item)
    n_negative = min(len(negatives), round(negative_ratio * max(len(positives), 1)))
    chosen = rng.choice(len(negatives), size=n_negative, replace=False) if n_negative else []
    return positives + lookalike_negatives + [negatives[i] for i in sorted(chosen)]


def volume_items(cases: list[Case], hard_negatives: bool = False) -> list[dict]:
    items = [{"image": c.image[None], "label": c.labels[None], "case": c.id} for c in cases]
    if hard_negatives:
        for item, case in zip(items, cases, strict=True):
            item[SAMPLING_KEY] = sampling_map(case)[None]
    return items
