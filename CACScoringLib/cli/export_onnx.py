"""`cacscoring export-onnx MODEL [--output FILE]`: a model package's network as ONNX."""

from __future__ import annotations

from pathlib import Path

from . import COMMANDS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help=COMMANDS["export-onnx"],
        description="Export the network of a model (registry id or package folder) to ONNX with dynamic batch "
        "and spatial axes; inputs are HU-windowed images scaled to [0, 1] as in the package config.",
    )
    parser.add_argument("model", help="registry id or model package folder")
    parser.add_argument("--output", type=Path, help="ONNX file to write (default: <model id>.onnx)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..inference.onnx import export_onnx
    from ..models.package import load_package

    package = load_package(args.model, "cpu")
    output = args.output or Path(f"{package.id}.onnx")
    export_onnx(package, output)
    print(f"wrote {output} ({package.id} {package.version}, {package.spatial_dims}D)")
    return 0
