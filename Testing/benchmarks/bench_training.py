"""Training throughput on CPU (slices/s) for a 2D config (default: the preset configs/unet2d_tversky.yaml) on generated phantoms.

Times data loading + MONAI transforms + forward + backward + optimizer step, as the engine runs them.
Run: .venv/bin/python Testing/benchmarks/bench_training.py [--config configs/default_phantom.yaml] [--threads 2]
[--steps 10] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, Dataset

from CACScoringLib.training.config import load_config
from CACScoringLib.training.data import load_cases
from CACScoringLib.training.engine import build_optimizer
from CACScoringLib.training.losses import build_loss
from CACScoringLib.training.tasks import build_task

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "unet2d_tversky.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Num foregrounds 0")  # blank slices are drawn on purpose
    config = load_config(
        args.config,
        [
            "data.source=phantom",
            "data.phantom={train_seeds: [0, 4], val_seeds: [100, 101], shape: [32, 320, 320]}",
            f"train.batch_size={args.batch_size}",
        ],
    )
    task = build_task(config, *load_cases(config))
    model = task.build_model()
    loss_fn, optimizer = build_loss(config["loss"]), build_optimizer(model.parameters(), config["optim"])
    items = task.epoch_items(np.random.default_rng(0))
    loader = DataLoader(Dataset(items, task.transforms), batch_size=args.batch_size, shuffle=True)
    model.train()
    slices, started, steps = 0, None, 0
    while steps <= args.steps:
        for batch in loader:
            inputs, targets = task.batch(batch, torch.device("cpu"))
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs), targets).backward()
            optimizer.step()
            if started is None:  # the first step warms up allocators; not timed
                started = time.perf_counter()
            else:
                slices += inputs.shape[0]
            steps += 1
            if steps > args.steps:
                break
    elapsed = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    print(f"config: {args.config.name} ({config['model']['network']} 2D, {params / 1e6:.1f} M parameters, patch {config['data']['patch_size']})")
    print(f"CPU threads: {args.threads}; batch {args.batch_size}; {args.steps} timed steps")
    print(f"training throughput: {slices / elapsed:.1f} slices/s ({elapsed / args.steps:.2f} s/step)")


if __name__ == "__main__":
    main()
