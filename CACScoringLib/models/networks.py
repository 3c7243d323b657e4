"""Network factory: a model config (the `config.json` of a model package) -> a MONAI network.

Supported `config["network"]["name"]`: "UNet" (monai.networks.nets.UNet), "DynUNet" (nnU-Net-like; kernels
and strides derived from patch size and spacing unless given), "FlexibleUNet" (EfficientNet-B0 encoder,
never pretrained so nothing is downloaded) and "Classifier" (small CNN for the false-positive and lesion
classifier components).
Array axis order everywhere: 2D (y, x), 3D (z, y, x).
"""

from __future__ import annotations

import copy
import math

import numpy as np
from torch import nn

from ..errors import InputError
from ..labels import ARTERIES, ARTERY_BY_ID

CONFIG_FORMAT = "cacscoring-model/1"
NETWORK_NAMES = ("UNet", "DynUNet", "FlexibleUNet", "Classifier")
TASKS = ("calcium", "heart_roi", "fp_classifier", "lesion_classifier")
# Default CT window: keeps fat/soft tissue contrast and calcium up to dense plaques.
DEFAULT_HU_WINDOW = (-200.0, 1300.0)
DEFAULT_LESION_CALL_FRACTION = 0.5  # share of a candidate lesion the network must call calcium to keep it
# Default in-plane inference spacing (mm). Coarser than most cardiac CT (0.3-0.7 mm) for CPU speed;
# 0.8 mm still gives a 1 mm² lesion >1 pixel, and the final mask is thresholded at native resolution.
DEFAULT_INPLANE_SPACING_MM = 0.8
# The lesion classifier's input channels (inference/lesions.py): CT, the candidate's voxels, artery probabilities.
LESION_CLASSIFIER_INPUTS = ("ct", "candidate", *ARTERIES)
EFFICIENTNET_DIVISOR = 32  # five stride-2 stages in EfficientNet-B0
# Bounds far beyond any real model, so that a malformed config fails here and not in a huge allocation.
MAX_PATCH_SIZE = 2048
MAX_CONTEXT_SLICES = 99


def contract_labels() -> dict[str, str]:
    """The label set a calcium model must have: {"0": "background", "1": "LM", ...}."""
    return {"0": "background", **{str(i): key for i, key in sorted(ARTERY_BY_ID.items())}}


TASK_LABELS = {
    "heart_roi": {"0": "background", "1": "heart"},
    "fp_classifier": {"0": "false_positive", "1": "calcium"},
    "lesion_classifier": contract_labels(),  # a candidate's class: not coronary, or its artery
}


def make_config(
    network: str = "UNet",
    spatial_dims: int = 2,
    patch_size: tuple[int, ...] | None = None,
    hu_window: tuple[float, float] = DEFAULT_HU_WINDOW,
    inplane_spacing_mm: float | None = DEFAULT_INPLANE_SPACING_MM,
    slice_spacing_mm: float | None = None,
    task: str = "calcium",
    context_slices: int = 1,
    **network_kwargs,
) -> dict:
    """A complete, validated model config; `network_kwargs` go to the MONAI constructor.

    patch_size is in array order ((y, x) for 2D, (z, y, x) for 3D); slice_spacing_mm is the typical
    slice increment of the training data (used by the DynUNet heuristic for 3D). A 2D model with
    `context_slices` k > 1 (odd) sees k consecutive slices as channels and segments the middle one."""
    if patch_size is None:
        patch_size = (256, 256) if spatial_dims == 2 else (32, 128, 128)
    labels = contract_labels() if task == "calcium" else TASK_LABELS.get(task)
    in_channels = len(LESION_CLASSIFIER_INPUTS) if task == "lesion_classifier" else int(context_slices)
    config = {
        "format": CONFIG_FORMAT,
        "task": task,
        "network": {"name": network, "kwargs": dict(network_kwargs)},
        "spatial_dims": int(spatial_dims),
        "in_channels": in_channels,
        "labels": labels,
        "preprocessing": {
            "hu_window": [float(hu_window[0]), float(hu_window[1])],
            "inplane_spacing_mm": None if inplane_spacing_mm is None else float(inplane_spacing_mm),
            "slice_spacing_mm": None if slice_spacing_mm is None else float(slice_spacing_mm),
            "patch_size": [int(p) for p in patch_size],
        },
        "components": {},
    }
    validate_config(config)
    return config


def validate_config(config: dict) -> None:
    """Raise InputError naming the first problem in a model config."""
    if not isinstance(config, dict):
        raise InputError("model config is not a JSON object; recreate it with models.make_config()")
    for key in ("task", "network", "spatial_dims", "labels", "preprocessing"):
        if key not in config:
            raise InputError(f"model config lacks '{key}'; recreate it with models.make_config()")
    for key in ("network", "labels", "preprocessing"):
        if not isinstance(config[key], dict):
            raise InputError(f"model config '{key}' is a {type(config[key]).__name__}, not an object; recreate it with models.make_config()")
    task = config["task"]
    if not isinstance(task, str) or task not in TASKS:
        raise InputError(f"model config task {task!r} is unknown; use one of {', '.join(TASKS)}")
    name = config["network"].get("name")
    if not isinstance(name, str) or name not in NETWORK_NAMES:
        raise InputError(f"model config network {name!r} is unknown; use one of {', '.join(NETWORK_NAMES)}")
    if not isinstance(config["network"].get("kwargs", {}), dict):
        raise InputError("model config network kwargs must be an object of the network's arguments")
    dims = config["spatial_dims"]
    if not is_whole_number(dims) or dims not in (2, 3):
        raise InputError(f"model config spatial_dims is {dims!r}; use 2 or 3")
    expected = contract_labels() if task == "calcium" else TASK_LABELS[task]
    labels = {str(k): v for k, v in config["labels"].items()}
    if labels != expected:
        raise InputError(
            f"model labels {labels} differ from the label contract {expected}; retrain or export the model "
            "with the contract's labels (Resources/labels.json)"
        )
    channels = config.get("in_channels", 1)
    if task == "lesion_classifier":
        if channels != len(LESION_CLASSIFIER_INPUTS) or dims != 3:
            raise InputError(
                f"lesion classifier config has in_channels {channels!r} and spatial_dims {dims}; it takes 3D patches "
                f"of {len(LESION_CLASSIFIER_INPUTS)} channels ({', '.join(LESION_CLASSIFIER_INPUTS)})"
            )
        limit = config.get("max_candidate_mm3", 1.0)
        if not is_finite_number(limit) or limit <= 0:
            raise InputError(f"lesion classifier max_candidate_mm3 {limit!r} must be a positive volume in mm³")
        smallest = config.get("min_candidate_voxels", 1)
        if not is_whole_number(smallest) or smallest < 1:
            raise InputError(f"lesion classifier min_candidate_voxels {smallest!r} must be a whole number >= 1")
    elif (
        not is_whole_number(channels)
        or not 1 <= channels <= MAX_CONTEXT_SLICES
        or (dims == 3 and channels != 1)
        or channels % 2 == 0
    ):
        raise InputError(
            f"model config in_channels {channels!r} must be an odd number of slices (at most {MAX_CONTEXT_SLICES}) "
            "around the segmented one (2D) or 1 (3D)"
        )
    pre = config["preprocessing"]
    window = pre.get("hu_window")
    if not isinstance(window, list | tuple) or len(window) != 2 or not all(map(is_finite_number, window)) or not window[0] < window[1]:
        raise InputError(f"model config hu_window {window!r} is invalid; give [low, high] numbers with low < high")
    patch = pre.get("patch_size")
    if (
        not isinstance(patch, list | tuple)
        or len(patch) != dims
        or not all(is_whole_number(size) and 1 <= size <= MAX_PATCH_SIZE for size in patch)
    ):
        raise InputError(f"model config patch_size {patch!r} does not have {dims} whole sizes from 1 to {MAX_PATCH_SIZE}")
    for key in ("inplane_spacing_mm", "slice_spacing_mm"):
        spacing = pre.get(key)
        if spacing is not None and not (is_finite_number(spacing) and spacing > 0):
            raise InputError(f"model config {key} {spacing!r} must be a positive number or null")
    fraction = config.get("lesion_call_fraction", DEFAULT_LESION_CALL_FRACTION)
    if not is_finite_number(fraction) or not 0.0 < fraction <= 1.0:
        raise InputError(f"model config lesion_call_fraction {fraction} must lie in (0, 1]; 0.5 is a majority vote")


def is_whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def network_spacing(config: dict) -> list[float]:
    """Voxel spacing in array order that the network sees (1 mm where the config does not say)."""
    pre = config["preprocessing"]
    inplane = pre.get("inplane_spacing_mm") or 1.0
    if config["spatial_dims"] == 2:
        return [inplane, inplane]
    return [pre.get("slice_spacing_mm") or inplane, inplane, inplane]


def dynunet_kernels_strides(
    patch_size: list[int], spacing: list[float], max_levels: int = 5, min_feature_size: int = 4
) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net heuristic: halve an axis only while it is at most twice as coarse as the finest axis and
    stays >= min_feature_size; anisotropic axes get kernel 1 until the others catch up."""
    sizes = [float(s) for s in patch_size]
    current = [float(s) for s in spacing]
    kernels = [[3] * len(sizes)]
    strides = [[1] * len(sizes)]
    for _ in range(max_levels):
        finest = min(current)
        stride = [
            2 if sp <= 2 * finest and size / 2 >= min_feature_size else 1
            for sp, size in zip(current, sizes, strict=True)
        ]
        if max(stride) == 1:
            break
        kernels.append([3 if sp <= 2 * finest else 1 for sp in current])
        strides.append(stride)
        sizes = [size / st for size, st in zip(sizes, stride, strict=True)]
        current = [sp * st for sp, st in zip(current, stride, strict=True)]
    return kernels, strides


def context_padded(volume: np.ndarray, context_slices: int) -> np.ndarray:
    """A (z, y, x) volume with its end slices repeated context_slices // 2 times beyond each end, so that
    padded[z : z + context_slices] is slice z amid its neighbours, as a 2D context model's channels."""
    half = context_slices // 2
    return np.pad(volume, ((half, half), (0, 0), (0, 0)), mode="edge") if half else volume


def context_batch(padded: np.ndarray, z_start: int, z_stop: int, context_slices: int) -> np.ndarray:
    """(n, context_slices, y, x): slices z_start..z_stop-1 with their neighbours, from context_padded's volume."""
    return np.stack([padded[z : z + context_slices] for z in range(z_start, z_stop)])


def size_divisor(config: dict) -> list[int]:
    """Per-axis factor every network input size must be a multiple of."""
    name = config["network"]["name"]
    kwargs = config["network"].get("kwargs", {})
    dims = config["spatial_dims"]
    if name == "UNet":
        strides = kwargs.get("strides", _UNET_DEFAULTS["strides"])
        return [math.prod(strides)] * dims
    if name == "DynUNet":
        strides = _dynunet_args(config)["strides"]
        return [math.prod(s[axis] for s in strides) for axis in range(dims)]
    if name == "FlexibleUNet":
        return [EFFICIENTNET_DIVISOR] * dims
    return [1] * dims


_UNET_DEFAULTS = {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2}


def _dynunet_args(config: dict) -> dict:
    kwargs = dict(config["network"].get("kwargs", {}))
    if "kernel_size" not in kwargs or "strides" not in kwargs:
        kernels, strides = dynunet_kernels_strides(config["preprocessing"]["patch_size"], network_spacing(config))
        kwargs.setdefault("kernel_size", kernels)
        kwargs.setdefault("strides", strides)
    kwargs.setdefault("upsample_kernel_size", kwargs["strides"][1:])
    if "filters" not in kwargs:
        cap = 320 if config["spatial_dims"] == 3 else 512  # nnU-Net's feature caps
        kwargs["filters"] = [min(32 * 2**level, cap) for level in range(len(kwargs["strides"]))]
    return kwargs


def build_network(config: dict) -> nn.Module:
    """The (untrained) network a model config describes; out_channels = number of labels."""
    validate_config(config)
    # the modules used; the first monai import still runs monai/__init__, which loads all of monai
    from monai.networks.nets.classifier import Classifier
    from monai.networks.nets.dynunet import DynUNet
    from monai.networks.nets.flexible_unet import FlexibleUNet
    from monai.networks.nets.unet import UNet

    config = copy.deepcopy(config)
    name = config["network"]["name"]
    kwargs = dict(config["network"].get("kwargs", {}))
    dims = config["spatial_dims"]
    in_channels = int(config.get("in_channels", 1))
    out_channels = len(config["labels"])
    try:
        if name == "UNet":
            return UNet(
                spatial_dims=dims, in_channels=in_channels, out_channels=out_channels, **{**_UNET_DEFAULTS, **kwargs}
            )
        if name == "DynUNet":
            return DynUNet(
                spatial_dims=dims, in_channels=in_channels, out_channels=out_channels, **_dynunet_args(config)
            )
        if name == "FlexibleUNet":
            if kwargs.pop("pretrained", False):
                raise InputError("FlexibleUNet pretrained=True would download weights; train from scratch instead")
            kwargs.setdefault("backbone", "efficientnet-b0")
            return FlexibleUNet(
                in_channels=in_channels, out_channels=out_channels, spatial_dims=dims, pretrained=False, **kwargs
            )
        kwargs.setdefault("channels", (16, 32, 64))
        kwargs.setdefault("strides", (2, 2, 2))
        in_shape = (in_channels, *config["preprocessing"]["patch_size"])
        return Classifier(in_shape=in_shape, classes=out_channels, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"cannot build {name} from the model config: {error}") from error
