"""CT -> per-artery calcium label map.

HU window -> heart ROI (package component or anatomical heuristic) -> crop resampled in-plane to the model
spacing -> network (2D: batched slices; 3D: gaussian sliding window), mean softmax over ensemble members and
flips -> probabilities back on the CT grid -> calcium where P(background) < 0.5, most likely artery -> voxels
>= threshold_hu only -> each 3D connected candidate (found on the whole CT) kept whole if mostly called
calcium, one artery per lesion -> optional lesion classifier deciding again whether each candidate is coronary (lesions.py) ->
optional false-positive classifier -> candidates mostly outside the heart region dropped -> label map on the CT grid.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..anatomy import MAX_AERATED_SHARE, aerated_share
from ..errors import InputError
from ..labels import ARTERY_BY_ID
from ..models.networks import DEFAULT_LESION_CALL_FRACTION, context_batch, size_divisor
from ..models.package import ModelPackage, load_package, resolve_device
from ..volume import CTVolume
from .ensemble import ENSEMBLE_RULES, multiplicative_scores
from .lesions import (
    Candidates,
    classifier_decisions,
    classifier_inputs,
    classifier_scope,
    classify_candidates,
    find_candidates,
    look_up,
    quantize_probabilities,
    vote_table,
)
from .roi import ROI_MODES, RegionOfInterest, bounds_from_mask, heart_roi_heuristic, whole_image

BACKENDS = ("torch", "onnx")
SLIDING_WINDOW_OVERLAP = 0.25
CPU_MEMORY_BUDGET = 1 << 29  # activations budget: keeps 512x512x300 under the 2 GB peak target
BYTES_PER_VOXEL_PER_CHANNEL = 4 * 12  # float32 activations kept across a UNet level (measured order)
MAX_BATCH = 32
FP_DECISION_THRESHOLD = 0.5
MIN_SHARE_IN_HEART = 0.5  # a candidate mostly outside the heart region is not coronary, whatever was called

Progress = Callable[[float, str], None]


class Cancelled(Exception):
    """The caller's cancel event was set; no result."""


@dataclass
class Segmentation:
    labels: np.ndarray  # uint8 (z, y, x) on the CT grid
    probabilities: np.ndarray | None  # float16 (5, z, y, x) or None
    model_id: str
    model_version: str
    roi: RegionOfInterest
    timings: dict[str, float]
    device: str
    backend: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Model facts for the scores JSON."""
        return {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "device": self.device,
            "backend": self.backend,
            "roi": {"method": self.roi.method, "bounds_zyx": [list(b) for b in self.roi.bounds]},
            "blood_pool_hu": None if self.roi.heart is None else self.roi.heart.blood_pool_hu,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
        }


def load_models(model, device: torch.device) -> list[ModelPackage]:
    """One package per ensemble member; None means the registry's default model."""
    if model is None:
        from ..models.registry import Registry

        model = Registry.load().default_id()
    specs = list(model) if isinstance(model, (list, tuple)) else [model]
    if not specs:
        raise InputError("empty model list; give at least one model id or folder")
    packages = []
    for spec in specs:
        # A package loaded earlier may sit elsewhere ("cuda:0" vs "cuda", or CPU): move it with its components.
        package = load_package(spec, device).to(device)
        if package.config["task"] != "calcium":
            raise InputError(f"model '{package.id}' is a {package.config['task']} model, not a calcium segmentation")
        packages.append(package)
    first = packages[0]
    for other in packages[1:]:
        if other.spatial_dims != first.spatial_dims or _shared_preprocessing(other) != _shared_preprocessing(first):
            raise InputError(
                f"ensemble members '{first.id}' and '{other.id}' differ in dimensions or preprocessing; "
                "ensemble only models trained with the same settings"
            )
    return packages


def _shared_preprocessing(package: ModelPackage) -> tuple:
    pre = package.config["preprocessing"]
    patch = tuple(pre["patch_size"]) if package.spatial_dims == 3 else None
    return tuple(pre["hu_window"]), pre.get("inplane_spacing_mm"), patch, package.config.get("in_channels", 1)


class _Predictor:
    """Softmax averaged over (with TTA) flips, then combined over ensemble members by `rule`, on padded inputs."""

    def __init__(self, packages: list[ModelPackage], backend: str, tta: bool, device: torch.device, rule: str):
        self.device = device
        self.rule = rule
        if backend == "onnx":
            from .onnx import runner_for

            self.runners = [runner_for(p) for p in packages]
        else:
            self.runners = [p.network for p in packages]
        dims = packages[0].spatial_dims
        self.divisor = [math.lcm(*axis) for axis in zip(*(size_divisor(p.config) for p in packages), strict=True)]
        spatial_axes = tuple(range(2, 2 + dims))
        # Identity plus each single-axis flip: 3 passes in 2D, 4 in 3D (all 2^d combinations cost 2x more).
        self.flips = [()] + ([(axis,) for axis in spatial_axes] if tta else [])

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        source_device = x.device
        x = x.to(self.device)
        spatial = x.shape[2:]
        pad = []
        for size, div in zip(reversed(spatial), reversed(self.divisor), strict=True):
            pad += [0, (-size) % div]
        padded = F.pad(x, pad) if any(pad) else x
        members = []
        for runner in self.runners:
            total = 0.0
            for flip in self.flips:
                inputs = torch.flip(padded, flip) if flip else padded
                probs = torch.softmax(runner(inputs).float(), dim=1)
                total = total + (torch.flip(probs, flip) if flip else probs)
            members.append(total / len(self.flips))
        if self.rule == "multiplicative":
            centre = padded.shape[1] // 2  # the segmented slice among a context model's channels
            combined = multiplicative_scores(members[0], members[1], padded[:, centre : centre + 1])
        elif len(members) == 1:
            combined = members[0]
        else:
            combined = torch.stack(members).mean(dim=0)
        crop = (slice(None), slice(None), *(slice(0, s) for s in spatial))
        return combined[crop].to(source_device)


def segment(
    ct: CTVolume,
    model=None,
    device: str | torch.device = "auto",
    tta: bool = False,
    threshold_hu: float = 130.0,
    return_probabilities: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    backend: str = "torch",
    roi: str = "auto",
    batch_size: int | None = None,
    ensemble: str = "mean",
) -> Segmentation:
    """Segment calcium per artery. model: registry id, package folder, ModelPackage or a list (ensemble);
    None = the registry default. ensemble: "mean" of the members' softmax, or seed 000's "multiplicative"
    rule for two members (Tversky model first, BCE baseline second). backend "onnx" runs onnxruntime on CPU.
    Raises InputError, Cancelled."""
    started = time.perf_counter()
    _check_inputs(ct, threshold_hu, backend, roi, batch_size, ensemble)
    report = _reporter(progress, cancel)
    resolved = resolve_device(device)
    if backend == "onnx":
        from .onnx import require_onnx

        require_onnx(runtime=True)  # before any work is done
        if resolved.type == "cuda" and str(device) != "auto":
            raise InputError("backend 'onnx' runs on CPU only; use --device cpu or the torch backend on CUDA")
        resolved = torch.device("cpu")
    report(0.0, "loading model")
    packages = load_models(model, resolved)
    if ensemble == "multiplicative" and len(packages) != 2:
        raise InputError(
            f"the multiplicative ensemble combines 2 models (Tversky, then BCE baseline), got {len(packages)}; "
            "give two models or use the mean ensemble"
        )
    timings = {"load_s": time.perf_counter() - started}

    tick = time.perf_counter()
    report(0.02, "finding the heart region")
    region = _region_of_interest(ct, packages[0], roi, backend, batch_size, report)
    timings["roi_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    context = int(packages[0].config.get("in_channels", 1))
    warnings = list(region.warnings) + _context_spacing_warnings(packages[0].config, ct.spacing[2])
    crop_hu = _crop_with_context(ct.array, region, context)
    if not np.isfinite(crop_hu).all():
        raise InputError("the CT contains NaN or infinite values; check the image file")
    predictor = _Predictor(packages, backend, tta, resolved, ensemble)
    n_classes = len(packages[0].config["labels"])
    probabilities = None
    if return_probabilities:
        probabilities = np.zeros((n_classes, *ct.shape), np.float16)
        probabilities[0] = 1.0  # outside the ROI: background
    calls = np.zeros(ct.shape, np.uint8)  # the network's per-voxel calls; none outside the ROI
    calls_crop = calls[region.slices]
    lesion_model = packages[0].components.get("lesion_classifier")
    # What the lesion classifier sees of the network: its artery probabilities on the ROI crop.
    artery_u8 = np.zeros((n_classes - 1, *region.shape), np.uint8) if lesion_model is not None else None
    for zs, ze, probs in _predict_crop(
        packages[0].config, predictor, crop_hu, ct.spacing, batch_size, report, (0.1, 0.9)
    ):
        calls_crop[zs:ze] = calcium_labels(probs, dim=1).numpy().astype(np.uint8)
        if artery_u8 is not None:
            artery_u8[:, zs:ze] = quantize_probabilities(probs[:, 1:].permute(1, 0, 2, 3).numpy())
        if probabilities is not None:
            (z0, _), (y0, y1), (x0, x1) = region.bounds
            probabilities[:, z0 + zs : z0 + ze, y0:y1, x0:x1] = probs.permute(1, 0, 2, 3).numpy()
    timings["segmentation_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    report(0.9, "calcium candidates")
    fraction = float(packages[0].config.get("lesion_call_fraction", DEFAULT_LESION_CALL_FRACTION))
    candidates = find_candidates(ct.array, threshold_hu)
    table = vote_table(candidates, calls, fraction)
    del calls
    if lesion_model is not None:
        report(0.93, "lesion classifier")
        _classify_lesions(lesion_model, ct, region, candidates, artery_u8, table)
    fp = packages[0].components.get("fp_classifier")
    if fp is not None:
        report(0.95, "false-positive removal")
        _remove_false_positives(fp, ct.array, candidates, table, ct.spacing)
    if region.heart is not None:
        table[region.heart.share_inside(candidates.components, candidates.count) < MIN_SHARE_IN_HEART] = 0
    kept = np.flatnonzero(table[1:]) + 1
    table[kept[aerated_share(ct.array, ct.spacing, candidates.components, kept) > MAX_AERATED_SHARE]] = 0
    labels = look_up(table, candidates.components)
    if region.heart is not None:
        # What is left of a kept candidate past the region's edge is not scored either: nothing outside is labelled.
        region.heart.clear_outside(labels)
    timings["postprocess_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - started
    report(1.0, "done")
    return Segmentation(
        labels=labels,
        probabilities=probabilities,
        model_id="+".join(p.id for p in packages),
        model_version="+".join(p.version for p in packages),
        roi=region,
        timings=timings,
        device=str(resolved),
        backend=backend,
        warnings=warnings,
    )


def _context_spacing_warnings(config: dict, slice_spacing_mm: float) -> list[str]:
    trained = config["preprocessing"].get("slice_spacing_mm")
    if config.get("in_channels", 1) == 1 or not trained or abs(slice_spacing_mm - trained) <= 0.25 * trained:
        return []
    return [
        f"the model sees {config['in_channels']} neighbouring slices and was trained on {trained:g} mm slices; this "
        f"CT's slices are {slice_spacing_mm:g} mm apart, so its view of the neighbours differs from training"
    ]


def _crop_with_context(hu: np.ndarray, region: RegionOfInterest, context_slices: int) -> np.ndarray:
    """The ROI crop, with context_slices // 2 slices more at each end for a 2D context model: the CT's own
    slices beyond the ROI where it has them, the end slice repeated beyond the CT (models.networks.context_padded)."""
    half = context_slices // 2
    (z0, z1), (y0, y1), (x0, x1) = region.bounds
    below, above = min(half, z0), min(half, hu.shape[0] - z1)
    crop = hu[z0 - below : z1 + above, y0:y1, x0:x1]
    return np.pad(crop, ((half - below, half - above), (0, 0), (0, 0)), mode="edge") if half else crop


def calcium_labels(probabilities: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Label per voxel: calcium where the arteries together outweigh background (P(bg) < 0.5), then the most
    likely artery. A plain argmax would call background where calcium is certain but the artery is not."""
    background = probabilities.select(dim, 0)
    # max().indices, not argmax(): on CPU torch's argmax over a non-last dim is about 20x slower (same first-index ties).
    artery = probabilities.narrow(dim, 1, probabilities.shape[dim] - 1).max(dim).indices + 1
    return torch.where(background < 0.5, artery, torch.zeros_like(artery))


def _check_inputs(ct, threshold_hu, backend, roi, batch_size, ensemble) -> None:
    if ensemble not in ENSEMBLE_RULES:
        raise InputError(f"ensemble rule {ensemble!r} is unknown; use one of {', '.join(ENSEMBLE_RULES)}")
    if not isinstance(ct, CTVolume):
        raise InputError("segment() needs a CTVolume; read the image with CACScoringLib.io.read_ct")
    if ct.array.ndim != 3 or min(ct.array.shape) < 1:
        raise InputError(f"the CT array has shape {ct.array.shape}; a 3D (z, y, x) volume is needed")
    if not np.issubdtype(ct.array.dtype, np.number):
        raise InputError(f"the CT array has dtype {ct.array.dtype}; HU numbers are needed")
    if min(ct.spacing) <= 0:
        raise InputError(f"the CT spacing {ct.spacing} has a non-positive value; fix the image header")
    if not math.isfinite(float(threshold_hu)):
        raise InputError(f"threshold_hu {threshold_hu} is not a number; use e.g. 130")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}'; use {' or '.join(BACKENDS)}")
    if roi not in ROI_MODES:
        raise InputError(f"unknown roi mode '{roi}'; use one of {', '.join(ROI_MODES)}")
    if batch_size is not None and int(batch_size) < 1:
        raise InputError(f"batch size {batch_size} must be at least 1")


def _reporter(progress: Progress | None, cancel: threading.Event | None) -> Progress:
    def report(fraction: float, message: str) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("segmentation cancelled")
        if progress is not None:
            progress(float(fraction), message)

    return report


def _region_of_interest(ct, package, roi, backend, batch_size, report) -> RegionOfInterest:
    if roi == "whole":
        return whole_image(ct)
    heart_model = package.components.get("heart_roi")
    if roi == "auto" and heart_model is not None:
        predictor = _Predictor([heart_model], backend, False, package.device, "mean")
        mask = np.zeros(ct.shape, bool)
        for zs, ze, probs in _predict_crop(
            heart_model.config, predictor, ct.array, ct.spacing, batch_size, report, (0.02, 0.1)
        ):
            mask[zs:ze] = probs.max(dim=1).indices.numpy() == 1
        # As in the cascade paper: opening removes specks before the bounding box.
        mask = ndimage.binary_opening(mask, iterations=2)
        if mask.any():
            return RegionOfInterest(bounds_from_mask(mask, (1, 1, 1), ct, 10.0), "model")
        region = heart_roi_heuristic(ct)
        region.warnings.insert(0, "heart ROI model found no heart; used the anatomical heuristic")
        return region
    return heart_roi_heuristic(ct)


def _predict_crop(
    config: dict,
    predictor: _Predictor,
    hu: np.ndarray,
    spacing_xyz: tuple[float, float, float],
    batch_size: int | None,
    report: Progress,
    span: tuple[float, float],
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (z_start, z_end, probabilities (slices, C, y, x) float32 on the crop's native grid). For a 2D model
    with k = in_channels > 1 context slices, `hu` holds k // 2 context slices more at each end (not yielded)."""
    pre = config["preprocessing"]
    lo, hi = pre["hu_window"]
    context = int(config.get("in_channels", 1))
    nz, ny, nx = hu.shape
    nz -= context - 1
    target = pre.get("inplane_spacing_mm")
    net_yx = (ny, nx)
    if target:
        net_yx = (max(1, round(ny * spacing_xyz[1] / target)), max(1, round(nx * spacing_xyz[0] / target)))

    def window(block: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.clip((block.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0))

    def to_native(probs: torch.Tensor) -> torch.Tensor:
        probs = probs.float().cpu()
        if probs.shape[-2:] != (ny, nx):
            probs = F.interpolate(probs, size=(ny, nx), mode="bilinear", align_corners=False)
        return probs

    def resize_in_plane(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == net_yx:
            return x
        if x.dim() == 4:
            return F.interpolate(x, size=net_yx, mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(x, size=(x.shape[2], *net_yx), mode="trilinear", align_corners=False)

    start, stop = span
    if config["spatial_dims"] == 2:
        batch = batch_size or auto_batch_size(config, net_yx, predictor.device)
        for zs in range(0, nz, batch):
            report(start + (stop - start) * zs / nz, f"segmenting slices {zs + 1}-{min(nz, zs + batch)} of {nz}")
            ze = min(nz, zs + batch)
            x = resize_in_plane(window(context_batch(hu, zs, ze, context)))
            yield zs, ze, to_native(predictor(x))
        return

    from monai.inferers.utils import sliding_window_inference

    patch = tuple(pre["patch_size"])
    x = resize_in_plane(window(hu)[None, None])
    windows = math.prod(
        max(1, math.ceil((size - p) / max(1, round(p * (1 - SLIDING_WINDOW_OVERLAP))))) + 1
        for size, p in zip(x.shape[2:], patch, strict=True)
    )
    calls = itertools.count()

    def window_predictor(patches: torch.Tensor) -> torch.Tensor:
        report(start + (stop - start) * min(1.0, next(calls) * patches.shape[0] / windows), "segmenting (3D)")
        return predictor(patches)

    probs = sliding_window_inference(
        x,
        roi_size=patch,
        sw_batch_size=batch_size or auto_batch_size(config, patch, predictor.device),
        predictor=window_predictor,
        overlap=SLIDING_WINDOW_OVERLAP,
        mode="gaussian",
        sw_device=predictor.device,
        device=torch.device("cpu"),
    )[0]
    chunk = 16
    for zs in range(0, nz, chunk):
        ze = min(nz, zs + chunk)
        yield zs, ze, to_native(probs[:, zs:ze].permute(1, 0, 2, 3))


def auto_batch_size(config: dict, item_shape: Sequence[int], device: torch.device) -> int:
    """Items per forward pass that fit a quarter of free GPU memory, or the CPU budget."""
    kwargs = config["network"].get("kwargs", {})
    width = (kwargs.get("channels") or kwargs.get("filters") or [32])[0]
    per_item = math.prod(item_shape) * width * BYTES_PER_VOXEL_PER_CHANNEL
    if device.type == "cuda":
        budget = torch.cuda.mem_get_info(device)[0] // 4
    else:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        budget = min(CPU_MEMORY_BUDGET, available // 4)
    return int(max(1, min(MAX_BATCH, budget // max(1, per_item))))


def lesion_labels(hu: np.ndarray, calls: np.ndarray, threshold_hu: float, fraction: float = DEFAULT_LESION_CALL_FRACTION) -> np.ndarray:
    """Whole lesions, decided by vote, from the network's per-voxel calls on the CT grid (0 outside the ROI).
    Each 3D connected candidate (voxels >= threshold_hu) that the network called calcium for at least
    `fraction` of its voxels is labelled whole, as a reader's click labels it in scoring software, with its
    majority artery (lowest id on a tie); any other candidate is dropped, so specks called inside a rib or the
    aortic wall do not become lesions. Candidates are found on the whole CT, not the ROI crop: a rib or the
    sternum cut by the crop's edge would otherwise leave a small piece inside, judged by its few voxels alone."""
    candidates = find_candidates(hu, threshold_hu)
    return look_up(vote_table(candidates, calls, fraction), candidates.components)


def _classify_lesions(
    classifier: ModelPackage,
    ct: CTVolume,
    region: RegionOfInterest,
    candidates: Candidates,
    artery_u8: np.ndarray,
    table: np.ndarray,
) -> None:
    """The lesion classifier's decision replaces the vote for each candidate in its scope (lesions.py)."""
    ids = classifier_scope(candidates, region.slices, ct.spacing, classifier.config)
    if not len(ids):
        return
    origin = tuple(lo for lo, _ in region.bounds)
    inputs = classifier_inputs(ct.array, artery_u8, origin, candidates, ids, classifier.config, ct.spacing)
    probabilities = classify_candidates(classifier.network, inputs, classifier.device)
    table[ids] = classifier_decisions(probabilities, table[ids])


def _remove_false_positives(
    classifier: ModelPackage, hu: np.ndarray, candidates: Candidates, table: np.ndarray, spacing_xyz
) -> None:
    """Cascade step 3: a 2D patch around each kept candidate's centre slice; drop those judged not calcium."""
    kept = np.flatnonzero(table)
    if not len(kept):
        return
    pre = classifier.config["preprocessing"]
    lo, hi = pre["hu_window"]
    size_y, size_x = pre["patch_size"]
    target = pre.get("inplane_spacing_mm")
    half_y = max(1, round(size_y * (target or spacing_xyz[1]) / spacing_xyz[1] / 2))
    half_x = max(1, round(size_x * (target or spacing_xyz[0]) / spacing_xyz[0] / 2))
    padded = np.pad(hu, ((0, 0), (half_y, half_y), (half_x, half_x)), constant_values=lo)
    patches = []
    for cz, cy, cx in candidates.centres(kept):
        z, y, x = round(cz), round(cy) + half_y, round(cx) + half_x
        patches.append(padded[z, y - half_y : y + half_y, x - half_x : x + half_x])
    x = torch.from_numpy(np.clip((np.stack(patches).astype(np.float32) - lo) / (hi - lo), 0, 1))[:, None]
    x = F.interpolate(x, size=(size_y, size_x), mode="bilinear", align_corners=False)
    threshold = float(classifier.config.get("decision_threshold", FP_DECISION_THRESHOLD))
    with torch.no_grad():
        keep = torch.softmax(classifier.network(x.to(classifier.device)).float(), dim=1)[:, 1].cpu().numpy()
    table[kept[keep < threshold]] = 0


def write_segmentation_outputs(
    segmentation: Segmentation, ct: CTVolume, folder: str | Path, label_name: str = "labels.nii.gz"
) -> dict[str, Path]:
    """Write the label map (CT geometry), optional per-class probability maps and segmentation.json."""
    from ..io import write_image, write_labels

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {"labels": folder / label_name}
    write_labels(segmentation.labels, ct, written["labels"])
    if segmentation.probabilities is not None:
        names = {0: "background", **ARTERY_BY_ID}
        for index, channel in enumerate(segmentation.probabilities):
            path = folder / f"probability_{names[index]}.nii.gz"
            write_image(ct.with_array(channel.astype(np.float32)), path)
            written[f"probability_{names[index]}"] = path
    written["json"] = folder / "segmentation.json"
    with open(written["json"], "w", encoding="utf-8") as f:
        json.dump(segmentation.to_dict(), f, indent=2)
    return written
