"""ONNX export of a model package and an onnxruntime CPU runner with the network's call signature."""

from __future__ import annotations

import io
import os
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..extras import require
from ..models.package import ModelPackage

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def require_onnx(runtime: bool) -> None:
    """The onnx extra's packages (onnx for export, onnxruntime too for running), or a one-line InputError."""
    require("onnx", "onnx", "ONNX export")
    if runtime:
        require("onnxruntime", "onnx", "the onnx backend")


def _export(package: ModelPackage, target) -> None:
    dims = package.spatial_dims
    patch = package.config["preprocessing"]["patch_size"]
    example = torch.zeros(1, int(package.config.get("in_channels", 1)), *patch, device=package.device)
    axes = {0: "batch", **{axis + 2: f"spatial{axis}" for axis in range(dims)}}
    # The TorchScript exporter: dynamic axes without the onnxscript dependency of the dynamo exporter;
    # its deprecation and tracer warnings say nothing a user can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            package.network,
            (example,),
            target,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            opset_version=OPSET,
        )


def export_onnx(package: ModelPackage, path: str | Path) -> Path:
    """Write the package's network as ONNX (dynamic batch and spatial axes) and return the path."""
    path = Path(path)
    require_onnx(runtime=False)
    if package.config["task"] != "calcium" and package.config["network"]["name"] == "Classifier":
        raise InputError("the false-positive classifier has a fixed input size; export the segmentation model")
    path.parent.mkdir(parents=True, exist_ok=True)
    _export(package, str(path))
    return path


class OnnxRunner:
    """Callable like the torch network (tensor in, logits tensor out), run by onnxruntime on CPU."""

    def __init__(self, package: ModelPackage, threads: int | None = None):
        require_onnx(runtime=True)
        import onnxruntime

        buffer = io.BytesIO()
        _export(package, buffer)
        options = onnxruntime.SessionOptions()
        self.threads = threads or torch.get_num_threads() or os.cpu_count() or 1
        options.intra_op_num_threads = self.threads
        self.session = onnxruntime.InferenceSession(
            buffer.getvalue(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])


_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def runner_for(package: ModelPackage) -> OnnxRunner:
    """One exported session per loaded network: export costs about as much as segmenting a small CT."""
    runner = _RUNNERS.get(package.network)
    if runner is None or runner.threads != torch.get_num_threads():
        runner = _RUNNERS[package.network] = OnnxRunner(package)
    return runner
