"""The `cacscoring` command line. Each subcommand lives in its own module with a `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import InputError

# Subcommand modules, in the order `cacscoring --help` lists them.
COMMANDS = ("score", "batch", "phantom", "train", "evaluate", "import_coca", "import_folder", "models", "export_onnx")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cacscoring",
        description="Coronary artery calcium scoring on cardiac CT (per-artery Agatston, volume, mass).",
    )
    parser.add_argument("--version", action="version", version=f"cacscoring {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
