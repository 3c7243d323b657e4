"""End to end: `cacscoring train` on a tiny NIfTI dataset -> checkpoints, logs, package -> inference; resume."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from CACScoringLib.cli import main
from CACScoringLib.data.manifest import ManifestCase, write_manifest
from CACScoringLib.errors import InputError
from CACScoringLib.io import read_ct, write_image, write_labels
from CACScoringLib.training import load_config, train
from CACScoringLib.volume import CTVolume

torch.set_num_threads(1)
SHAPE = (6, 48, 48)
SPACING = (0.8, 0.8, 3.0)  # already the network's in-plane spacing: no resampling in these tests


def synthetic_case(seed: int) -> tuple[CTVolume, np.ndarray]:
    """Soft tissue with noise, an unlabelled bright 'bone' bar, and one calcified blob per artery."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40.0, 15.0, SHAPE).astype(np.float32)
    image[:, 40:46, 4:44] = 900.0
    labels = np.zeros(SHAPE, np.uint8)
    for artery, (y, x) in enumerate([(8, 8), (8, 30), (24, 12), (24, 34)], start=1):
        z = int(rng.integers(0, SHAPE[0]))
        dy, dx = rng.integers(0, 6, size=2)
        image[z, y + dy : y + dy + 3, x + dx : x + dx + 3] = rng.uniform(300, 600)
        labels[z, y + dy : y + dy + 3, x + dx : x + dx + 3] = artery
    return CTVolume(array=image, spacing=SPACING), labels


def write_dataset(folder: Path, n_patients: int = 4) -> Path:
    cases = []
    for seed in range(n_patients):
        ct, labels = synthetic_case(seed)
        image = write_image(ct, folder / "images" / f"p{seed}.nii.gz")
        label = write_labels(labels, ct, folder / "labels" / f"p{seed}.nii.gz")
        cases.append(ManifestCase(id=f"p{seed}", image=image, labels=label, spacing=SPACING, shape=SHAPE, patient_id=f"p{seed}"))
    return write_manifest(folder / "manifest.json", "synthetic", cases)


TINY = {
    "model": {"network": "UNet", "spatial_dims": 2, "kwargs": {"channels": [4, 8], "strides": [2], "num_res_units": 0}},
    "data": {"source": "manifest", "patch_size": [32, 32], "samples_per_image": 1, "negative_slice_ratio": 0.5},
    "split": {"folds": 4, "fold": 1},
    "train": {"epochs": 3, "batch_size": 4, "progress": False},
    "optim": {"lr": 0.01},
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("dataset"))


def write_config(folder: Path, manifest: Path, **changes) -> Path:
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["data"]["manifest"] = str(manifest)
    config["output_dir"] = str(folder / "run")
    for key, value in changes.items():
        config.setdefault(key, {}).update(value)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_train_writes_checkpoints_logs_and_a_loadable_package(tmp_path, manifest, capsys):
    from CACScoringLib.inference import segment
    from CACScoringLib.models.package import load_package

    config = write_config(tmp_path, manifest)
    assert main(["train", str(config), "loss.name=tversky", "loss.alpha=0.9", "loss.beta=0.1"]) == 0
    run = tmp_path / "run"
    assert "package: " in capsys.readouterr().out
    for name in ("last.pt", "best.pt"):
        state = torch.load(run / "checkpoints" / name, weights_only=True)  # no map_location: as saved
        assert set(state["model"]) == set(load_package(run / "package").network.state_dict())
        # Saved device-independently (a GPU run's checkpoint resumes on CPU): every tensor, optimizer state too.
        tensors = list(tensors_in(state))
        assert len(tensors) > len(state["model"]) if name == "last.pt" else len(tensors) == len(state["model"])
        assert {tensor.device.type for tensor in tensors} == {"cpu"}
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and [row["epoch"] for row in last["history"]] == [1, 2, 3]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    package = load_package(run / "package")
    best = next(row for row in last["history"] if row["epoch"] == last["best_epoch"])
    assert package.metadata["accuracy"]["val_dice"] == pytest.approx(best["val_dice"])
    assert "fold 1 of 4" in package.metadata["training_data"]
    assert package.config["preprocessing"]["patch_size"] == [32, 32]
    best_weights = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]
    for key, value in package.network.state_dict().items():
        assert torch.equal(value.cpu(), best_weights[key])

    ct = read_ct(Path(manifest).parent / "images" / "p0.nii.gz")
    result = segment(ct, model=package, device="cpu", roi="whole")
    assert result.labels.shape == ct.shape and result.labels.max() <= 4
    assert np.all(ct.array[result.labels > 0] >= 130)  # inference keeps only calcium-range voxels


def test_resume_repeats_the_uninterrupted_run(tmp_path, manifest):
    straight = load_config(write_config(tmp_path / "a", manifest))
    straight["export"]["package"] = False
    full = train(straight)

    interrupted = load_config(write_config(tmp_path / "b", manifest))
    interrupted["export"]["package"] = False
    interrupted["train"]["epochs"] = 2
    assert train(interrupted).epochs_run == 2
    interrupted["train"]["epochs"] = 3
    resumed = train(interrupted, resume=True)

    assert resumed.epochs_run == 3 and [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert resumed.history[2]["train_loss"] == full.history[2]["train_loss"]
    assert resumed.history[2]["val_loss"] == full.history[2]["val_loss"]
    assert full.history[2]["train_loss"] < full.history[0]["train_loss"]  # it learns
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key])


def test_resume_with_more_epochs_continues_the_poly_decay_to_the_new_end(tmp_path, manifest):
    config = load_config(write_config(tmp_path, manifest, scheduler={"name": "poly", "power": 0.9}))
    config["export"]["package"] = False
    config["train"]["epochs"] = 2
    first = train(config)
    lr = float(config["optim"]["lr"])
    assert [row["lr"] for row in first.history] == pytest.approx([lr, lr * 0.5**0.9])
    config["train"]["epochs"] = 4
    resumed = train(config, resume=True)
    # Epoch 3 of 4 (index 2), not the 0 the finished 2-epoch schedule left in the optimizer.
    assert [row["lr"] for row in resumed.history[2:]] == pytest.approx([lr * 0.5**0.9, lr * 0.25**0.9])


def tensors_in(state):
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, dict):
        for value in state.values():
            yield from tensors_in(value)
    elif isinstance(state, list | tuple):
        for value in state:
            yield from tensors_in(value)


class Payload:
    """Pickled, it would create a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_from_a_truncated_or_pickled_checkpoint_is_a_one_line_error(tmp_path, manifest):
    config = load_config(write_config(tmp_path, manifest))
    config["export"]["package"] = False
    config["train"]["epochs"] = 1
    result = train(config)
    assert next(result.model.parameters()).device.type == "cpu"
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    whole = last.read_bytes()
    last.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(InputError, match="not a readable weights-only checkpoint") as caught:
        train(config, resume=True)
    assert "\n" not in str(caught.value)

    marker = tmp_path / "payload-ran"
    torch.save({"model": Payload(marker)}, last)
    assert main(["train", str(tmp_path / "train.yaml"), "--resume"]) == 2
    assert not marker.exists()  # the payload never ran

    torch.save({"model": {}}, last)  # weights only, but not this trainer's checkpoint
    with pytest.raises(InputError, match="lacks optimizer"):
        train(config, resume=True)


def test_the_amp_loss_scale_resumes_across_devices():
    from CACScoringLib.training.engine import restore_scaler

    # A GPU run (AMP on) resumed on CPU (AMP off), and a CPU run's empty scaler state resumed on a GPU.
    gpu_run = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True)
    on_cpu = torch.amp.GradScaler("cuda", enabled=False)
    restore_scaler(on_cpu, gpu_run.state_dict())
    assert not on_cpu.is_enabled()
    on_gpu = torch.amp.GradScaler("cpu", init_scale=8.0, enabled=True)  # "cpu": the scaler logic, no GPU needed
    restore_scaler(on_gpu, torch.amp.GradScaler("cuda", enabled=False).state_dict())
    assert on_gpu.get_scale() == 8.0  # kept its own start
    restore_scaler(on_gpu, gpu_run.state_dict())
    assert on_gpu.get_scale() == 1024.0


def test_resume_without_a_checkpoint_is_an_input_error(tmp_path, manifest):
    config = load_config(write_config(tmp_path, manifest))
    with pytest.raises(InputError, match="no checkpoint"):
        train(config, resume=True)


def test_init_from_starts_at_the_package_weights(tmp_path, manifest):
    from CACScoringLib.models.package import load_package

    assert main(["train", str(write_config(tmp_path / "base", manifest, train={"epochs": 1}))]) == 0
    base = load_package(tmp_path / "base" / "run" / "package")
    # With lr 0 nothing moves: the fine-tuned package is the base package, not a fresh initialisation.
    tuned_config = write_config(
        tmp_path / "tuned",
        manifest,
        train={"epochs": 1, "init_from": str(base.folder)},
        optim={"lr": 0.0},
        scheduler={"name": "none"},
        export={"model_id": "tuned"},  # both runs' output folders are called "run"
    )
    assert main(["train", str(tuned_config)]) == 0
    tuned = load_package(tmp_path / "tuned" / "run" / "package")
    assert tuned.id == "tuned"
    assert json.loads((tmp_path / "tuned" / "run" / "config.json").read_text())["train"]["init_from"] == str(base.folder)
    for key, value in base.network.state_dict().items():
        assert torch.equal(tuned.network.state_dict()[key], value)
    origin = tuned.metadata["training"]["init_from"]
    assert origin["id"] == base.id and origin["version"] == base.version
    assert origin["weights_sha256"] == hashlib.sha256((base.folder / "model.safetensors").read_bytes()).hexdigest()
    # A resumed fine-tuning run still names its origin.
    assert main(["train", str(tuned_config), "train.epochs=2", "--resume"]) == 0
    assert load_package(tmp_path / "tuned" / "run" / "package").metadata["training"]["init_from"] == origin
    assert "init_from" not in base.metadata["training"]

    fresh = load_config(write_config(tmp_path / "fresh", manifest, train={"epochs": 1}, optim={"lr": 0.0}))
    fresh["export"]["package"] = False
    fresh["seed"] = 1
    weights = train(fresh).model.state_dict()
    assert any(not torch.equal(weights[key].cpu(), value) for key, value in base.network.state_dict().items())


def test_fine_tuning_names_the_package_after_the_run_and_says_what_it_did_not_carry_over(tmp_path, manifest, capsys):
    from CACScoringLib.models import build_network, make_config, save_package
    from CACScoringLib.models.package import load_package

    assert main(["train", str(write_config(tmp_path / "base", manifest, train={"epochs": 1}))]) == 0
    base = load_package(tmp_path / "base" / "run" / "package")
    # A stand-in for the shipped model: the same network with a lesion classifier and a tuned call fraction.
    lesion = make_config("Classifier", 3, (3, 8, 8), task="lesion_classifier", channels=(4,), strides=(2,))
    shipped = save_package(
        tmp_path / "shipped", base.network, {**base.config, "lesion_call_fraction": 0.4},
        {"id": "cac-shipped", "version": "1.5.0"}, {"lesion_classifier": (build_network(lesion), lesion)},
    )  # fmt: skip
    capsys.readouterr()

    mine = write_config(tmp_path / "mine", manifest, train={"epochs": 1, "init_from": str(shipped)})
    assert main(["train", str(mine)]) == 0
    printed = capsys.readouterr().out
    tuned = load_package(tmp_path / "mine" / "run" / "package")
    assert (tuned.id, tuned.version) == ("run", "0.1.0")  # output_dir's name and the export default
    assert tuned.components == {} and "lesion_call_fraction" not in tuned.config
    origin = tuned.metadata["training"]["init_from"]
    assert (origin["id"], origin["version"], origin["kept"]) == ("cac-shipped", "1.5.0", "network weights")
    assert origin["not_carried_over"] == {
        "components": ["lesion_classifier"],
        "settings": {"lesion_call_fraction": {"from": 0.4, "to": None}},
    }
    assert (
        "train.init_from: starting from cac-shipped 1.5.0's network weights; not carried over: its lesion_classifier "
        "component, lesion_call_fraction 0.4 (now the default)"
    ) in printed

    # A run that would call itself the model it starts from is refused before it trains.
    run = tmp_path / "mine" / "run"
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    same = load_config(mine, ["export.model_id=cac-shipped", "export.version='1.2.0'"])
    with pytest.raises(InputError, match="would be called 'cac-shipped', as the package it starts from"):
        train(same)
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before  # nothing written


def test_init_from_a_package_of_another_network_is_an_input_error(tmp_path, manifest):
    assert main(["train", str(write_config(tmp_path / "base", manifest, train={"epochs": 1}))]) == 0
    config = load_config(
        write_config(
            tmp_path / "tuned",
            manifest,
            model={"context_slices": 3},
            train={"init_from": str(tmp_path / "base" / "run" / "package")},
            export={"model_id": "tuned"},
        )
    )
    with pytest.raises(InputError, match=r"train.init_from: .* has in_channels=1, this run 3"):
        train(config)
    config["model"]["context_slices"] = 1
    config["data"]["hu_window"] = [-100.0, 1000.0]
    with pytest.raises(InputError, match="trained with hu_window"):
        train(config)


def test_cli_rejects_unknown_keys_with_exit_code_2(tmp_path, manifest, capsys):
    config = write_config(tmp_path, manifest)
    assert main(["train", str(config), "train.epoch=3"]) == 2
    assert "unknown config key(s): train.epoch" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_context_model_trains_on_neighbouring_slices_and_segments(tmp_path, manifest):
    from CACScoringLib.inference import segment
    from CACScoringLib.models.package import load_package

    config = write_config(tmp_path, manifest, model={"context_slices": 3}, train={"epochs": 1})
    assert main(["train", str(config)]) == 0
    package = load_package(tmp_path / "run" / "package")
    assert package.config["in_channels"] == 3
    assert package.config["preprocessing"]["slice_spacing_mm"] == SPACING[2]  # what the context spans
    first_conv = next(w for name, w in package.network.state_dict().items() if name.endswith("conv.weight"))
    assert first_conv.shape[1] == 3
    ct = read_ct(Path(manifest).parent / "images" / "p0.nii.gz")
    result = segment(ct, model=package, device="cpu", roi="whole")
    assert result.labels.shape == ct.shape and np.all(ct.array[result.labels > 0] >= 130)


def test_training_on_generated_phantoms(tmp_path):
    from CACScoringLib.models.package import load_package

    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'phantom-run'}",
            "data.source=phantom",
            "data.phantom={train_seeds: [0, 2], val_seeds: [100, 101], shape: [8, 96, 96], options: {spacing: [1.6, 1.6, 3.0]}}",
            "model.inplane_spacing_mm=1.6",
            "data.patch_size=[32, 32]",
            "model.kwargs={channels: [4, 8], strides: [2], num_res_units: 0}",
            "train={epochs: 1, batch_size: 4, progress: false}",
        ],
    )
    result = train(config)
    assert result.epochs_run == 1 and np.isfinite(result.history[0]["val_dice"])
    card = load_package(result.package_dir).metadata
    assert card["training_data"].startswith("synthetic thorax phantoms") and "seeds 0..1 for training (2)" in card["training_data"]
