"""The `cacscoring` command line. Each subcommand lives in its own module with a `register(subparsers)`.

Only the module of the command being run is imported: `cacscoring --help` lists the others by their one-line
help from COMMANDS, so no subcommand's dependencies (torch, monai, matplotlib) load before they are needed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import InputError

# Subcommand -> one-line help, in the order `cacscoring --help` lists them; the module is the name with "_".
COMMANDS = {
    "score": "score a CT (with a label map, or segmented by a model)",
    "batch": "score every CT in a folder (summary CSV)",
    "phantom": "write synthetic phantoms (thorax with labelled coronary calcium, or QRM-like calibration)",
    "train": "train a model (segmentation, cascade stage, slice classifier, vessel regression) from a YAML config",
    "evaluate": "compare predicted with reference label maps (voxels, lesions, scores, risk)",
    "import-coca": "import the Stanford COCA dataset into a training folder",
    "import-folder": "import a folder of image/label pairs into a training folder",
    "models": "list the registered segmentation models",
    "export-onnx": "export a segmentation model to ONNX",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with the options of `command` (a COMMANDS key); the other commands are only named."""
    parser = argparse.ArgumentParser(
        prog="cacscoring",
        description="Coronary artery calcium scoring on cardiac CT (per-artery Agatston, volume, mass).",
    )
    parser.add_argument("--version", action="version", version=f"cacscoring {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        if name == command:
            importlib.import_module(f"{__name__}.{name.replace('-', '_')}").register(subparsers)
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top-level options take no values, so the first other word is the command.
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as error:
        print(f"cacscoring: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cacscoring: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
