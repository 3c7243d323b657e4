"""Training the lesion classifier (inference/lesions.py) for a trained calcium segmentation model.

Items are what the pipeline hands the classifier: each case is segmented by `data.segmenter` as a user's CT
is (its heart ROI, its network's artery probabilities), and each candidate in the classifier's scope gives
one patch (INPUT_CHANNELS) with its reference class, the majority label of its voxels (0: aortic calcium,
bone, noise). Train on cases the segmenter was not trained on: on its own training cases its probabilities
are more certain than on new CTs, and the classifier would learn to trust them too much.

Segmenting every case is the slow part, so each case's items are cached in OUTPUT_DIR/candidates/ under a key
of the segmenter's weights, the patch settings and what the cases are drawn from (phantom shape and options,
manifest); a resumed or repeated run reads them back. The exported package is the segmenter's (its weights,
config and components) with this classifier added as its `lesion_classifier` component, ready for
`cacscoring score --model`.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
from monai.transforms import CastToTyped, Compose, RandRotated
from sklearn.metrics import confusion_matrix
from torch import nn
from tqdm.auto import tqdm

from ..errors import InputError
from ..labels import ARTERY_BY_ID, MAX_LABEL, votes_per_region
from ..models.networks import DEFAULT_LESION_CALL_FRACTION
from .classification import ClassificationLoss
from .data import Case, case_ids

CACHE_DIR = "candidates"
CACHE_FORMAT = 1  # bump when what a cached item holds changes
SEGMENTER_KEYS = ("description", "training_data", "accuracy", "training")
CLASS_NAMES = {0: "not coronary", **ARTERY_BY_ID}


def reference_classes(candidates, ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each candidate's majority reference label, background voxels counted (lowest id on a tie)."""
    votes = votes_per_region(candidates.components, candidates.count, labels)
    votes[:, 0] = candidates.sizes - votes[:, 1:].sum(axis=1)
    return votes[ids].argmax(axis=1).astype(np.int64)


def case_items(case: Case, segmenter, model_config: dict, data: dict, device: torch.device) -> dict[str, np.ndarray]:
    """The classifier's inputs (float16), reference classes and sizes of one case's candidates."""
    from ..inference import segment
    from ..inference.lesions import (
        classifier_inputs,
        classifier_scope,
        find_candidates,
        quantize_probabilities,
    )
    from ..volume import CTVolume

    if case.labels is None:
        raise InputError(f"case {case.id} has no label map; candidates are judged against the labels")
    ct = CTVolume(array=case.image, spacing=case.spacing)
    seg = segment(ct, segmenter, device=device, return_probabilities=True, threshold_hu=float(data["candidate_threshold_hu"]))
    candidates = find_candidates(ct.array, float(data["candidate_threshold_hu"]))
    ids = classifier_scope(candidates, seg.roi.slices, ct.spacing, model_config)
    artery_u8 = quantize_probabilities(seg.probabilities[(slice(1, None), *seg.roi.slices)].astype(np.float32))
    origin = tuple(lo for lo, _ in seg.roi.bounds)
    inputs = classifier_inputs(ct.array, artery_u8, origin, candidates, ids, model_config, ct.spacing)
    return {
        "inputs": inputs.astype(np.float16),
        "targets": reference_classes(candidates, ids, case.labels),
        "voxels": candidates.sizes[ids].astype(np.int64),
    }


def vote_missed(patch: np.ndarray, fraction: float) -> bool:
    """Whether the segmenter's vote dropped a candidate, read off its patch (INPUT_CHANNELS): the network
    called under `fraction` of the candidate's voxels calcium (its artery probabilities summing to >= 0.5)."""
    patch = np.asarray(patch, np.float32)
    inside = patch[1] > 0.5
    if not inside.any():
        return False
    called = patch[2:, inside].sum(axis=0) >= 0.5
    return bool(called.mean() < fraction)


def _mean_recall(matrix: np.ndarray) -> float:
    """Balanced accuracy: the mean recall over the classes present in the truth (rows of the confusion matrix)."""
    present = matrix.sum(axis=1) > 0
    return float(np.mean(np.diag(matrix)[present] / matrix.sum(axis=1)[present]))


class LesionClassifierTask:
    """Candidates of the segmenter's output, classified as not coronary or one artery (5 logits)."""

    # What the pipeline takes from the classifier is mainly coronary or not (lesions.classifier_decisions).
    metric_name = "val_coronary_balanced_accuracy"

    def __init__(self, config: dict, train_cases, val_cases):
        from ..models import load_package
        from ..models.networks import make_config
        from ..models.package import resolve_device

        model, data = config["model"], config["data"]
        if model["network"] != "Classifier" or int(model["spatial_dims"]) != 3:
            raise InputError("lesion_classifier: model.network must be Classifier with model.spatial_dims 3 (3D patches)")
        patch = [int(p) for p in data["patch_size"]]
        if len(patch) != 3:
            raise InputError(f"lesion_classifier: data.patch_size {patch} must be [z, y, x]")
        self.config = config
        self.model_config = make_config(
            network="Classifier",
            spatial_dims=3,
            patch_size=tuple(patch),
            hu_window=tuple(float(v) for v in data["hu_window"]),
            inplane_spacing_mm=model["inplane_spacing_mm"],
            task="lesion_classifier",
            **model["kwargs"],
        )
        self.model_config["max_candidate_mm3"] = float(data["max_candidate_mm3"])
        self.model_config["min_candidate_voxels"] = int(data["min_candidate_voxels"])
        self.device = resolve_device(config["train"]["device"])
        self.segmenter = load_package(data["segmenter"], self.device)
        if self.segmenter.config["task"] != "calcium":
            raise InputError(f"data.segmenter {data['segmenter']} is a {self.segmenter.config['task']} model, not a calcium segmentation")
        self.train_items = self._items(train_cases, "training")
        self.val_items = self._items(val_cases, "validation")
        if not self.train_items or not self.val_items:
            raise InputError("lesion_classifier found no candidates in the training or validation cases; add cases with calcium")
        aug = config["augment"]
        self.transforms = Compose(
            [
                CastToTyped(keys="image", dtype=np.float32),
                # In-plane only: the first spatial axis is z, so range_x turns the (y, x) plane.
                RandRotated(keys="image", range_x=math.radians(float(aug["rotate_deg"])), prob=float(aug["rotate_prob"])),
            ]
        )

    def _cache_key(self) -> str:
        from ..models.package import sha256_file

        settings = {
            "format": CACHE_FORMAT,
            "segmenter_weights": sha256_file(self.segmenter.weights_path),
            "segmenter_config": self.segmenter.config,
            "classifier_preprocessing": self.model_config["preprocessing"],
            **{key: self.model_config[key] for key in ("max_candidate_mm3", "min_candidate_voxels")},
            "candidate_threshold_hu": self.config["data"]["candidate_threshold_hu"],
            "cases": self._cases_drawn(),
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def _cases_drawn(self) -> dict:
        """What a case id stands for: a phantom seed means nothing without the generator's shape and options,
        a manifest's patient id nothing without its manifest."""
        from ..models.package import sha256_file

        data = self.config["data"]
        if data["source"] == "phantom":
            return {"phantom": {key: data["phantom"][key] for key in ("shape", "options")}}
        return {"manifest": sha256_file(Path(data["manifest"]))}

    def _items(self, cases, role: str) -> list[dict]:
        folder = Path(self.config["output_dir"]) / CACHE_DIR / self._cache_key()
        folder.mkdir(parents=True, exist_ok=True)
        items = []
        fraction = float(self.segmenter.config.get("lesion_call_fraction", DEFAULT_LESION_CALL_FRACTION))
        ids = case_ids(cases)
        bar = tqdm(ids, desc=f"{role} candidates", disable=not self.config["train"]["progress"])
        for index, case_id in enumerate(bar):
            path = folder / f"{case_id}.npz"
            if not path.is_file():  # a phantom is only generated when its items are not cached yet
                arrays = case_items(cases[index], self.segmenter, self.model_config, self.config["data"], self.device)
                np.savez(path, **arrays)
            with np.load(path) as cached:
                for number, (image, target, voxels) in enumerate(
                    zip(cached["inputs"], cached["targets"], cached["voxels"], strict=True)
                ):
                    items.append({"image": image, "target": int(target), "voxels": int(voxels), "case": path.stem,
                                  "candidate": number, "vote_missed": vote_missed(image, fraction)})  # fmt: skip
        return items

    def build_model(self) -> nn.Module:
        from ..models.networks import build_network

        return build_network(self.model_config)

    def build_loss(self) -> nn.Module:
        return ClassificationLoss(self.config["loss"])

    def epoch_items(self, rng: np.random.Generator) -> list[dict]:
        """Every training candidate once, and the coronary ones the segmenter's vote dropped
        data.missed_positive_repeats times: they are what the classifier exists to restore, yet they are few
        beside the look-alikes the network also called background."""
        extra = int(self.config["data"]["missed_positive_repeats"]) - 1
        missed = [item for item in self.train_items if item["target"] > 0 and item["vote_missed"]]
        return self.train_items + missed * extra

    @staticmethod
    def batch(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["image"].to(device).float(), torch.as_tensor(batch["target"]).to(device).long()

    @torch.no_grad()
    def validate(self, model: nn.Module, loss_fn: nn.Module, device: torch.device) -> dict:
        from ..inference.lesions import classify_candidates

        inputs = np.stack([item["image"] for item in self.val_items]).astype(np.float32)
        truth = np.array([item["target"] for item in self.val_items])
        probabilities = classify_candidates(model, inputs, device)
        logits = torch.log(torch.from_numpy(probabilities).clamp_min(1e-7)).to(device)
        loss = float(loss_fn(logits, torch.as_tensor(truth, device=device).long()))
        predicted = probabilities.argmax(axis=1)
        matrix = confusion_matrix(truth, predicted, labels=list(range(MAX_LABEL + 1)))
        recall = {CLASS_NAMES[k]: float(matrix[k, k] / matrix[k].sum()) for k in range(MAX_LABEL + 1) if matrix[k].sum()}
        coronary = confusion_matrix(truth > 0, probabilities[:, 0] < 0.5, labels=[False, True])
        return {
            "val_loss": loss,
            "val_coronary_balanced_accuracy": _mean_recall(coronary),
            "val_balanced_accuracy": _mean_recall(matrix),
            "val_accuracy": float((predicted == truth).mean()),
            "val_recall_per_class": recall,
            "val_confusion_matrix": matrix.tolist(),
        }

    def save(self, folder: Path, model: nn.Module, metadata: dict) -> Path:
        """The segmenter's package with this classifier as its lesion_classifier component."""
        from ..models.package import save_package, sha256_file

        base = self.segmenter
        # The segmenter's own training record stays; its held-out figures do not describe the new package.
        combined = {key: base.metadata[key] for key in SEGMENTER_KEYS if key in base.metadata}
        combined.update(
            id=metadata["id"],
            version=metadata["version"],
            title=self.config["export"]["title"] or base.metadata.get("title"),
            lesion_classifier={key: metadata[key] for key in ("training_data", "accuracy", "training")},
            segmenter={"package": str(self.config["data"]["segmenter"]), "id": base.id, "version": base.version,
                       "weights_sha256": sha256_file(base.weights_path)},
        )
        components = {name: (part.network, part.config) for name, part in base.components.items() if name != "lesion_classifier"}
        components["lesion_classifier"] = (model, self.model_config)
        return save_package(folder, base.network, base.config, combined, components)
