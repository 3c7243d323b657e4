"""DistributedDataParallel on CPU: two gloo processes train together and end with identical weights."""

import socket

import numpy as np
import torch
import torch.multiprocessing as mp
import yaml
from monai.utils import set_determinism

from CACScoringLib.data.manifest import ManifestCase, write_manifest
from CACScoringLib.io import write_image, write_labels
from CACScoringLib.models import build_network
from CACScoringLib.training import load_config, train
from CACScoringLib.training.tasks import segmentation_model_config
from CACScoringLib.volume import CTVolume

SHAPE, SPACING = (4, 32, 32), (0.8, 0.8, 3.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, config_path: str, out: str) -> None:
    import os

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    result = train(load_config(config_path))
    torch.save({"state": result.model.state_dict(), "history": result.history}, f"{out}/rank{rank}.pt")


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    cases = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        image = rng.normal(40.0, 15.0, SHAPE).astype(np.float32)
        labels = np.zeros(SHAPE, np.uint8)
        image[seed, 10:13, 10 + seed : 13 + seed] = 500.0
        labels[seed, 10:13, 10 + seed : 13 + seed] = seed + 1
        ct = CTVolume(array=image, spacing=SPACING)
        cases.append(
            ManifestCase(
                id=f"p{seed}",
                image=write_image(ct, tmp_path / f"p{seed}.nii.gz"),
                labels=write_labels(labels, ct, tmp_path / f"p{seed}_labels.nii.gz"),
                spacing=SPACING,
                shape=SHAPE,
            )
        )
    config = {
        "output_dir": str(tmp_path / "run"),
        "model": {"kwargs": {"channels": [4, 8], "strides": [2], "num_res_units": 0}},
        "data": {"source": "manifest", "manifest": str(write_manifest(tmp_path, "synthetic", cases)), "patch_size": [16, 16]},
        "split": {"folds": 3, "fold": 0},
        "train": {"epochs": 2, "batch_size": 2, "progress": False, "device": "cpu"},
        "export": {"package": False},
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "train.yaml"), str(tmp_path)), nprocs=2, join=True)

    # Each rank trained on its own half of the slices: equal weights mean the gradients were all-reduced.
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["history"] == ranks[1]["history"]  # losses averaged across ranks, same validation
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    set_determinism(seed=0)  # as the engine does before building the network
    initial = build_network(segmentation_model_config(load_config(tmp_path / "train.yaml"))).state_dict()
    assert any(not torch.equal(initial[key], value) for key, value in ranks[0]["state"].items())
