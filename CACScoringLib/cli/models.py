"""`cacscoring models`: the registered segmentation models (Resources/models.json)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from ..models.registry import Registry, list_models
from . import COMMANDS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help=COMMANDS["models"],
        description="List the models of the registry (Resources/models.json): id, title, 2D/3D, whether it is "
        "installed or downloadable, and which one is the default.",
    )
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    registry = Registry.load()
    rows = list_models(registry)
    if args.json:
        print(json.dumps({"default": registry.default, "models": rows}, indent=2))
        return 0
    console = Console()
    if not rows:
        console.print("No segmentation models are registered yet: score with --labels LABELMAP.")
        return 0
    console.print(models_table(rows))
    if registry.default is None:
        console.print("No default model: `cacscoring score` needs --labels or --model.")
    return 0


def models_table(rows: list[dict]) -> Table:
    """The registry's rows as a table. Ids and versions are what users type, so they are never cut or wrapped
    to fit the terminal; the other columns wrap, and fold rather than end in an ellipsis."""
    table = Table(title="Segmentation models")
    for column in ("default", "id", "title", "dims", "version", "status"):
        whole = column in ("id", "version")
        width = max(len(row[column]) for row in rows) if whole else None
        table.add_column(column, overflow="fold", no_wrap=whole, min_width=width)
    for row in rows:
        status = "installed" if row["installed"] else f"downloadable ({row['source']})"
        table.add_row("*" if row["default"] else "", row["id"], row["title"], f"{row['dims']}D", row["version"], status)
    return table
