"""`cacscoring train CONFIG.yaml [key=value ...] [--resume]`: train a model and export its package.

Several processes or GPUs: `torchrun --nproc_per_node N -m CACScoringLib train CONFIG.yaml ...`.
"""

from __future__ import annotations

from pathlib import Path

from . import COMMANDS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help=COMMANDS["train"],
        description="Train a model as CONFIG.yaml says (presets in configs/), laid over the defaults; "
        "key.sub=value arguments override single settings, e.g. train.epochs=5 loss.alpha=0.9. "
        "Writes checkpoints, TensorBoard logs and a model package under output_dir.",
    )
    parser.add_argument("config", type=Path, help="YAML training config, e.g. configs/unet2d_tversky.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (values read as YAML)")
    parser.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoints/last.pt")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..training import load_config, train

    config = load_config(args.config, args.overrides)
    result = train(config, resume=args.resume)
    if result.package_dir is not None:
        print(
            f"trained {result.epochs_run} epochs; best {result.best_metric:.4f} at epoch {result.best_epoch}; "
            f"package: {result.package_dir}"
        )
    return 0
