"""The training loop: seeded epochs, validation, best/last checkpoints, resume, early stopping, export.

Determinism: every epoch reseeds torch/numpy/python (monai.utils.set_determinism), the transforms and the
sampler from (seed, epoch), so a run resumed from `last.pt` repeats the uninterrupted run's losses exactly
without storing random states in the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from monai.data import DataLoader, Dataset
from monai.utils import set_determinism
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from ..errors import InputError
from ..extras import require
from . import distributed
from .data import load_cases
from .tasks import build_task

CHECKPOINT_DIR = "checkpoints"


@dataclass
class TrainResult:
    output_dir: Path
    epochs_run: int  # epochs completed, counting those before a resume
    best_epoch: int  # 1-based; 0 when no validation improved
    best_metric: float
    history: list[dict]  # one row per epoch: epoch, train_loss, lr and, when validated, the val_* values
    package_dir: Path | None
    model: nn.Module  # the unwrapped network on CPU, holding the best weights


def build_optimizer(params, optim_config: dict) -> torch.optim.Optimizer:
    lr, decay = float(optim_config["lr"]), float(optim_config["weight_decay"])
    if optim_config["name"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(optim_config["momentum"]), weight_decay=decay, nesterov=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=decay)


def build_scheduler(optimizer, scheduler_config: dict, epochs: int):
    """ReduceLROnPlateau on the validation metric, or nnU-Net's poly decay per epoch (None: constant)."""
    name = scheduler_config["name"]
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=float(scheduler_config["factor"]), patience=int(scheduler_config["patience"])
        )
    if name == "poly":
        power = float(scheduler_config["power"])
        # A lambda (not PolynomialLR) so that a resumed run with more epochs decays to its new end.
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: max(0.0, 1.0 - epoch / epochs) ** power)
    return None


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + rank) % (2**32)


def _mean_across_ranks(value: float, info: distributed.DistInfo) -> float:
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return float(tensor.item() / info.world_size)


_CHECKPOINT_KEYS = ("model", "optimizer", "scaler", "epoch", "best_metric", "best_epoch", "stale", "history")


def _on_cpu(state):
    """A checkpoint's nested dicts/lists with every tensor moved to CPU, so a GPU run resumes anywhere."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {key: _on_cpu(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_on_cpu(value) for value in state)
    return state


def save_checkpoint(state: dict, path: Path) -> None:
    torch.save(_on_cpu(state), path)


def restore_scaler(scaler: torch.amp.GradScaler, saved: dict) -> None:
    """Resume the AMP loss scale where there is one: a CPU run saves none (AMP is off there), a GPU run's
    does not apply when resuming on CPU."""
    if saved and scaler.is_enabled():
        scaler.load_state_dict(saved)


def _load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"--resume: no checkpoint at {path}; train without --resume first")
    try:
        # weights_only: a checkpoint holding pickled objects is refused, its payload never runs.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise InputError(
            f"--resume: {path} is not a readable weights-only checkpoint ({type(error).__name__}); "
            "it is truncated or holds pickled objects: train without --resume"
        ) from error
    missing = [key for key in _CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise InputError(f"--resume: {path} lacks {', '.join(missing)}; it is not a checkpoint of this trainer")
    return state


# What must match for a package's weights to mean the same thing in the new run's network.
_INIT_KEYS = ("task", "network", "spatial_dims", "in_channels", "labels")


def exported_id(config: dict) -> str:
    """The id of the package a run exports: export.model_id, else output_dir's name."""
    return config["export"]["model_id"] or Path(config["output_dir"]).name


def _starting_package(config: dict):
    """The package train.init_from names (checksums verified), refused before anything is written when the
    run would export it under its own id."""
    from ..models import load_package

    package = load_package(config["train"]["init_from"], device="cpu")
    if exported_id(config) == package.id:
        raise InputError(
            f"train.init_from: the fine-tuned package would be called '{package.id}', as the package it starts from "
            f"({package.id} {package.version}); name it with export.model_id=NAME (and export.version)"
        )
    return package


def _init_from_package(model: nn.Module, package, package_ref: str, model_config: dict | None) -> dict:
    """Start from a package's weights (safetensors): fine-tuning a shipped model. Returns the provenance the
    exported package's metadata records: what it started from and what of it the exported package does not
    carry over."""
    from ..models.package import sha256_file

    if model_config is None:
        raise InputError("train.init_from: this task exports no model package to start from; remove train.init_from")
    for key in _INIT_KEYS:
        if package.config.get(key) != model_config.get(key):
            raise InputError(
                f"train.init_from: {package.folder} has {key}={package.config.get(key)!r}, this run "
                f"{model_config.get(key)!r}; use the package's model settings"
            )
    window = package.config["preprocessing"]["hu_window"]
    if window != model_config["preprocessing"]["hu_window"]:
        raise InputError(f"train.init_from: {package.folder} was trained with hu_window {window}; set data.hu_window to it")
    model.load_state_dict(package.network.state_dict())
    return {
        "package": str(package_ref),
        "id": package.id,
        "version": package.version,
        "weights_sha256": sha256_file(package.weights_path),
        "kept": "network weights",
        "not_carried_over": _not_carried_over(package, model_config),
    }


def _not_carried_over(package, model_config: dict) -> dict:
    """The starting package's components, and its settings the run's model config sets otherwise (None: absent,
    the default applies)."""
    settings = {}
    old, new = package.config, model_config
    for key in sorted((set(old) | set(new)) - {"components", "format", "preprocessing", *_INIT_KEYS}):
        if old.get(key) != new.get(key):
            settings[key] = {"from": old.get(key), "to": new.get(key)}
    old_pre, new_pre = old["preprocessing"], new["preprocessing"]
    for key in sorted(set(old_pre) | set(new_pre)):
        if old_pre.get(key) != new_pre.get(key):
            settings[f"preprocessing.{key}"] = {"from": old_pre.get(key), "to": new_pre.get(key)}
    return {"components": sorted(package.components), "settings": settings}


def describe_origin(origin: dict) -> str:
    """One line: what a fine-tuning run kept of its starting package and what it did not carry over."""
    dropped = origin["not_carried_over"]
    parts = [f"its {name} component" for name in dropped["components"]]
    parts += [
        f"{key} {change['from']!r} (now {'the default' if change['to'] is None else repr(change['to'])})"
        for key, change in dropped["settings"].items()
    ]
    return (
        f"train.init_from: starting from {origin['id']} {origin['version']}'s {origin['kept']}; "
        f"not carried over: {', '.join(parts) if parts else 'nothing'}"
    )


def train(config: dict, resume: bool = False) -> TrainResult:
    """Train as `config` (from config.load_config) says; under torchrun each process calls this."""
    require("tensorboard", "train", "training (its TensorBoard logs)")
    info = distributed.setup(config["train"]["device"])
    try:
        with warnings.catch_warnings():
            # Calcium-free slices are drawn on purpose (class balance); MONAI warns for each of them.
            warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
            return _train(config, resume, info)
    finally:
        distributed.cleanup(info)


def _train(config: dict, resume: bool, info: distributed.DistInfo) -> TrainResult:
    seed, tcfg = int(config["seed"]), config["train"]
    epochs = int(tcfg["epochs"])
    set_determinism(seed=seed)
    output_dir = Path(config["output_dir"])
    checkpoint_dir = output_dir / CHECKPOINT_DIR
    start = _starting_package(config) if tcfg["init_from"] and not resume else None
    if info.is_main:
        try:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            raise InputError(f"cannot write into output_dir {output_dir}: {error.strerror}; give a writable folder") from error

    train_cases, val_cases = load_cases(config)
    task = build_task(config, train_cases, val_cases)
    model = task.build_model()
    origin = None  # the package a fine-tuning run started from; kept in the checkpoints across resumes
    if start is not None:
        origin = _init_from_package(model, start, tcfg["init_from"], getattr(task, "model_config", None))
        if info.is_main:
            tqdm.write(describe_origin(origin))
    model = model.to(info.device)
    loss_fn = task.build_loss()
    optimizer = build_optimizer(model.parameters(), config["optim"])
    scheduler = build_scheduler(optimizer, config["scheduler"], epochs)
    use_amp = bool(tcfg["amp"]) and info.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best_metric, best_epoch, stale, history = 0, -math.inf, 0, 0, []
    if resume:
        state = _load_checkpoint(checkpoint_dir / "last.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
            if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                # The optimizer state holds the lr of the old schedule (0 at the end of a finished poly run);
                # this epoch's lr follows the schedule for the new epoch count.
                for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
                    group["lr"] = base * factor(scheduler.last_epoch)
        restore_scaler(scaler, state["scaler"])
        start_epoch, best_metric, best_epoch = int(state["epoch"]), float(state["best_metric"]), int(state["best_epoch"])
        stale, history = int(state["stale"]), list(state["history"])
        origin = state.get("init_from")
    net = distributed.wrap(model, info)

    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))
    patience = int(tcfg["early_stopping_patience"])
    max_steps = tcfg["max_steps_per_epoch"]
    batch_size = int(tcfg["batch_size"])

    for epoch in range(start_epoch, epochs):
        set_determinism(seed=_epoch_seed(seed, epoch))
        task.transforms.set_random_state(seed=_epoch_seed(seed, epoch, info.rank))
        items = task.epoch_items(np.random.default_rng([seed, epoch]))
        dataset = Dataset(items, transform=task.transforms)
        # The same item list on every rank, so the sampler gives each rank a disjoint share of it.
        sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=int(config["data"]["num_workers"]))

        net.train()
        total, steps = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not (info.is_main and tcfg["progress"]))
        for batch in bar:
            inputs, targets = task.batch(batch, info.device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext():
                loss = loss_fn(net(inputs), targets)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach())
            steps += 1
            bar.set_postfix(loss=f"{total / steps:.4f}")
            if max_steps and steps >= int(max_steps):
                break
        row = {"epoch": epoch + 1, "train_loss": _mean_across_ranks(total / max(steps, 1), info), "lr": optimizer.param_groups[0]["lr"]}

        validated = (epoch + 1) % int(tcfg["val_every"]) == 0 or epoch + 1 == epochs
        improved = False
        if validated:
            # Every rank validates the same cases with the same weights, so all take the same
            # scheduler and early-stopping decisions without exchanging them.
            net.eval()
            row.update(task.validate(model, loss_fn, info.device))
            metric = row[task.metric_name]
            improved = metric > best_metric
            if improved:
                best_metric, best_epoch, stale = metric, epoch + 1, 0
            else:
                stale += 1
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(metric)
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            scheduler.step()
        history.append(row)

        if info.is_main:
            for key, value in row.items():
                if isinstance(value, float):
                    writer.add_scalar(key.replace("_", "/", 1), value, epoch + 1)
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict(),
                "epoch": epoch + 1,
                "best_metric": best_metric,
                "best_epoch": best_epoch,
                "stale": stale,
                "history": history,
                "init_from": origin,
            }
            save_checkpoint(state, checkpoint_dir / "last.pt")
            if improved:
                save_checkpoint({"model": model.state_dict(), "epoch": epoch + 1, "metric": best_metric}, checkpoint_dir / "best.pt")
            summary = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float))
            tqdm.write(f"epoch {epoch + 1}/{epochs}: {summary}")
        if patience and stale >= patience:
            if info.is_main:
                tqdm.write(f"early stopping: {task.metric_name} did not improve for {stale} validations")
            break

    distributed.barrier(info)
    best_path = checkpoint_dir / "best.pt"
    if best_path.is_file():
        model.load_state_dict(torch.load(best_path, map_location=info.device, weights_only=True)["model"])
    package_dir = None
    if info.is_main:
        writer.close()
        if config["export"]["package"]:
            from .export import export_package

            package_dir = export_package(config, model, task, history, best_epoch, train_cases, val_cases, origin)
    distributed.barrier(info)
    return TrainResult(
        output_dir=output_dir,
        epochs_run=len(history),
        best_epoch=best_epoch,
        best_metric=best_metric,
        history=history,
        package_dir=package_dir,
        model=model.cpu(),
    )
