"""Evaluate a trained calcium model on held-out thorax phantoms and, with --ship, install it as a shipped model.

    python scripts/evaluate_default_model.py runs/default_phantom/package                 # report only
    python scripts/evaluate_default_model.py runs/default_phantom/package --ship --register-default

Every held-out phantom (seeds 15000-15079 and 16000-16079 by default; training used 0-239, validation 1000-1005 and tuning
2000-2119, see configs/default_phantom.yaml; the lesion classifier 3000-3879) goes through the inference pipeline as a user's CT would (heuristic heart
ROI, 130 HU threshold, candidate lesions kept whole by majority) and is compared with its known labels by
CACScoringLib.evaluation (voxel Dice, orCaScore lesion detection, Agatston ICC, risk-category kappa). On
top, it counts how much of the phantom's aortic calcium and bone the model labelled as coronary.

Writes into OUTPUT (default: <package>/evaluation): evaluation.json, cases.csv and PNG plots
(CACScoringLib.evaluation.report), held_out.json (the headline figures, the targets and the calcium
look-alikes). --ship, only when every target is met (else exit 1; --accept-unmet-targets ships anyway and
the card says which are missed): re-saves the package into Resources/models/<id>/ with the held-out figures
in metadata.json, copies the report into its evaluation/, writes MODEL_CARD.md, lists every file in its
checksums.json (seal_package) and writes the model's entry (the SHA-256 of that checksums.json) in Resources/models.json; --register-default also makes it the
registry default.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from CACScoringLib.cli.phantom import add_clearance_arguments, clearance_options  # noqa: E402
from CACScoringLib.errors import InputError  # noqa: E402
from CACScoringLib.evaluation.lesions import ALL_ARTERIES  # noqa: E402
from CACScoringLib.evaluation.metrics import FOREGROUND  # noqa: E402
from CACScoringLib.evaluation.report import evaluate_case, summarize, write_report  # noqa: E402
from CACScoringLib.inference import segment  # noqa: E402
from CACScoringLib.labels import ARTERIES  # noqa: E402
from CACScoringLib.models import load_package, save_package, validate_config  # noqa: E402
from CACScoringLib.models.package import WEIGHTS_FILE, seal_package, sha256_file  # noqa: E402
from CACScoringLib.phantom import make_thorax_phantom  # noqa: E402
from CACScoringLib.phantom.distractors import labelled_voxels_per_kind  # noqa: E402
from CACScoringLib.phantom.thorax import (  # noqa: E402
    DEFAULT_BIFURCATION_CLEARANCE_MM,
    DEFAULT_DESCENDING_AORTA_CLEARANCE_MM,
    DEFAULT_N_PLAQUES,
)
from CACScoringLib.resources import resources_dir  # noqa: E402
from CACScoringLib.training import load_config  # noqa: E402

# range(start, stop) pairs, pooled; disjoint from the training, validation and tuning seeds. Each set is evaluated once and
# retired once it has informed a change: 5000-5039 (held out up to 1.0.0) compared 1.0.0 with its successor;
# 1.1.0's errors on 6000-6079 (aortic calcium high on the ascending aorta called LM) shaped 1.2.0's
# fine-tuning stage; 1.2.0's errors on 7000-7079 (aortic calcium at the ostia called LM, RCA plaques beside
# the spine missed) motivated 1.3.0's lesion classifier. 1.3.0's errors on 8000-8079 were LCX plaques at the
# bifurcation called LAD, whose reference artery the generator drew by chance; with such plaques no longer
# drawn (bifurcation_clearance_mm), the same weights are reported on fresh seeds 9000-9079 and 10000-10079 (the
# second set, evaluated right after the first, pooled with it: per-artery ICC on 80 phantoms turns on one lesion).
# 1.3.0 missed RCA plaques on 10000-10079; 1.4.0 (its network, the classifier retrained with the candidates the
# vote dropped repeated) was chosen over 1.3.0 on 7000-7079 and 2000-2119 and is reported on fresh seeds
# 11000-11079 and 12000-12079. Most of 1.4.0's errors on 9000-12079 were distal RCA plaques inside the descending
# aorta, which the generator drew overlapping the heart; with the aorta kept clear (descending_aorta_clearance_mm)
# 1.4.0 scored on fresh seeds 13000-13079 and 14000-14079 RCA ICC 0.974 (descending-aortic calcium, now beside the
# vertebra, called RCA). 1.5.0 (its classifier fine-tuned on phantoms drawn so) was chosen on 9000-10079 and
# 13000-14079 and is reported on fresh seeds 15000-15079 and 16000-16079.
HELD_OUT_SEEDS = ((15000, 15080), (16000, 16080))
TARGETS = {"risk_kappa_linear": 0.95, "agatston_icc_per_artery": 0.99, "lesion_f1": 0.95}
MAX_SHIPPED_MB = 25.0


def evaluate(package, seeds: list[range], shape: tuple[int, int, int], output: Path, phantom_options: dict) -> dict:
    """Segment each held-out phantom, compare with its labels, write the report; the headline figures."""
    cases, lookalikes, seconds = [], [], []
    for seed in (seed for block in seeds for seed in block):
        phantom = make_thorax_phantom(seed=seed, shape=shape, compute_scores=False, **phantom_options)
        started = time.perf_counter()
        predicted = segment(phantom.ct, package, device="cpu").labels
        seconds.append(time.perf_counter() - started)
        cases.append(evaluate_case(f"phantom-{seed}", phantom.ct, phantom.labels, predicted))
        labelled = predicted > 0
        lookalikes.append(
            {
                "case_id": f"phantom-{seed}",
                "aortic_calcium_voxels": int(phantom.aortic_calcium_mask.sum()),
                "aortic_calcium_voxels_labelled": int((labelled & phantom.aortic_calcium_mask).sum()),
                "bone_voxels_labelled": int((labelled & phantom.bone_mask).sum()),
                **_distractor_counts(phantom, predicted),
            }
        )
        print(
            f"phantom {seed}: reference {cases[-1].reference['total']['agatston']:.1f}, "
            f"predicted {cases[-1].predicted['total']['agatston']:.1f} ({seconds[-1]:.2f} s)",
            flush=True,
        )
    summary = summarize(cases)
    settings = {
        "seeds": [[block.start, block.stop] for block in seeds],
        "phantom_shape_zyx": list(shape),
        "phantom_options": phantom_options,
        "model": package.id,
        "pipeline": "CACScoringLib.inference.segment, heuristic heart ROI, device cpu, no TTA",
    }
    for path in write_report(cases, summary, output, settings=settings).values():
        if path.suffix == ".png":
            shrink_png(path)
    headline = headline_figures(summary, lookalikes, seconds, seeds, shape, phantom_options)
    (output / "held_out.json").write_text(json.dumps(headline, indent=2) + "\n", encoding="utf-8")
    return headline


def _distractor_counts(phantom, predicted: np.ndarray) -> dict:
    """Voxels >= 130 HU of each distractor kind the phantom holds, and how many of them the model labelled."""
    if phantom.distractor_map is None:
        return {}
    calcium = phantom.ct.array >= 130.0
    present = labelled_voxels_per_kind(phantom.distractor_map, calcium.astype(np.uint8))
    labelled = labelled_voxels_per_kind(phantom.distractor_map, (predicted > 0) & calcium)
    return {"distractor_voxels": present, "distractor_voxels_labelled": labelled}


def _distractor_totals(lookalikes: list[dict]) -> dict:
    """Per kind: [labelled, present] voxels over all phantoms (none without distractors)."""
    totals: dict[str, list[int]] = {}
    for row in lookalikes:
        for kind, present in row.get("distractor_voxels", {}).items():
            entry = totals.setdefault(kind, [0, 0])
            entry[0] += row["distractor_voxels_labelled"][kind]
            entry[1] += present
    return {kind: counts for kind, counts in totals.items() if counts[1]}


def shrink_png(path: Path) -> None:
    """A 64-colour palette keeps the committed plots small (flat colours, lines and text lose nothing visible)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)


def headline_figures(
    summary: dict, lookalikes: list[dict], seconds: list[float], seeds: list[range], shape, phantom_options: dict
) -> dict:
    agatston = summary["agreement"]["agatston"]
    icc = {key: agatston[key]["icc_a1"]["icc"] if key in agatston else None for key in (*ARTERIES, "total")}
    kappa = summary["risk_categories"]["kappa_linear"]
    lesion_f1 = summary["lesions"][ALL_ARTERIES]["f1"]
    measured = {
        "risk_kappa_linear": kappa,
        "agatston_icc_per_artery": min(v for k, v in icc.items() if k != "total" and v is not None),
        "lesion_f1": lesion_f1,
    }
    return {
        "n_cases": summary["n_cases"],
        "seeds": [[block.start, block.stop - 1] for block in seeds],
        "phantom_shape_zyx": list(shape),
        "phantom_options": phantom_options,
        "risk_kappa_linear": kappa,
        "risk_kappa_ci": summary["risk_categories"]["bootstrap_ci"],
        "risk_accuracy": summary["risk_categories"]["accuracy"],
        "risk_confusion_matrix": summary["risk_categories"]["confusion_matrix"],
        "agatston_icc": icc,
        "lesion_f1_artery_specific": lesion_f1,
        "lesion_sensitivity_artery_specific": summary["lesions"][ALL_ARTERIES]["sensitivity"],
        "lesion_ppv_artery_specific": summary["lesions"][ALL_ARTERIES]["ppv"],
        "lesion_f1_any_artery": summary["lesions"][FOREGROUND]["f1"],
        "dice_pooled": {key: summary["voxels"][key]["pooled"]["dice"] for key in (*ARTERIES, FOREGROUND)},
        "aortic_calcium_voxels": sum(row["aortic_calcium_voxels"] for row in lookalikes),
        "aortic_calcium_voxels_labelled": sum(row["aortic_calcium_voxels_labelled"] for row in lookalikes),
        "bone_voxels_labelled": sum(row["bone_voxels_labelled"] for row in lookalikes),
        "distractor_voxels_labelled_of_present": _distractor_totals(lookalikes),
        "lookalikes_per_case": lookalikes,
        "segment_seconds_mean": float(np.mean(seconds)),
        "targets": TARGETS,
        "targets_met": {
            name: bool(measured[name] is not None and measured[name] >= TARGETS[name]) for name in TARGETS
        },
    }


def _weights_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of a package folder's weights and its components' (sub-folders holding weights)."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob(WEIGHTS_FILE))
    }


def _earlier_evaluations(package, folder: Path) -> list[dict]:
    """The held-out evaluations already shipped in `folder` for these very weights (a re-evaluation keeps them,
    newest last), each with the version it was shipped as."""
    path = folder / "metadata.json"
    if not path.is_file() or _weights_digests(folder) != _weights_digests(package.folder):
        return []
    shipped = json.loads(path.read_text(encoding="utf-8"))
    earlier = list(shipped.get("earlier_held_out_evaluations", []))
    if "held_out_evaluation" in shipped:
        earlier.append({"version": shipped["version"], **shipped["held_out_evaluation"]})
    for evaluation in earlier:
        # Evaluations recorded before the generator had this option drew the aorta where it fell.
        evaluation["phantom_options"].setdefault("descending_aorta_clearance_mm", None)
    return earlier


def _same_figures(earlier: dict, evaluation: dict) -> bool:
    """The same evaluation again (a re-ship of unchanged weights and inference): only the timing may differ."""
    def figures(record: dict) -> dict:
        return {k: v for k, v in record.items() if k not in ("version", "segment_seconds_mean")}

    return figures(earlier) == figures(evaluation)


def ship(package, headline: dict, folder: Path, register_default: bool, version: str | None = None) -> Path:
    """Re-save the package with its held-out figures (and those of earlier evaluations of the same weights),
    check its size, register it; `version` replaces the package's."""
    metadata = {
        key: value
        for key, value in package.metadata.items()
        if key not in ("monai_version", "torch_version", "cacscoring_version", "created")
    }
    if version:
        metadata["version"] = version
    metadata["held_out_evaluation"] = {
        key: value for key, value in headline.items() if key != "lookalikes_per_case"
    }
    earlier = [e for e in _earlier_evaluations(package, folder) if not _same_figures(e, metadata["held_out_evaluation"])]
    if earlier:
        metadata["earlier_held_out_evaluations"] = earlier
    # Components (heart ROI, lesion classifier, ...) are saved with it; dropping them would ship another model.
    components = {name: (part.network, part.config) for name, part in package.components.items()}
    save_package(folder, package.network, package.config, metadata, components)
    size_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
    if size_mb > MAX_SHIPPED_MB:
        raise SystemExit(f"shipped package is {size_mb:.1f} MB, over the {MAX_SHIPPED_MB} MB limit")
    register(metadata, package.spatial_dims, folder, register_default)
    return folder


def register(metadata: dict, dims: int, folder: Path, register_default: bool) -> None:
    """Seal the shipped folder (every file, card and report included, in checksums.json) and write its registry
    entry, whose sha256 is that of checksums.json."""
    package_sha = seal_package(folder)
    registry_path = resources_dir() / "models.json"
    registry = json.loads(registry_path.read_text(encoding="utf-8"))
    entry = {
        "id": metadata["id"],
        "title": metadata["title"],
        "dims": dims,
        "path": folder.relative_to(registry_path.parent).as_posix(),
        "sha256": package_sha,
        "version": metadata["version"],
        "description": "trained on synthetic thorax phantoms only; not validated on patient CT (see MODEL_CARD.md)",
    }
    registry["models"] = [e for e in registry.get("models", []) if e.get("id") != entry["id"]] + [entry]
    if register_default:
        registry["default"] = entry["id"]
    registry_path.write_text(json.dumps(registry, indent=2) + "\n", encoding="utf-8")


def _targets_line(met: dict) -> str:
    missed = [name for name, ok in met.items() if not ok]
    if not missed:
        return "It meets every held-out target below."
    return f"**It misses held-out target(s): {', '.join(missed)}** (table below); treat its output as a draft."


def _schedule(scheduler: dict) -> str:
    if scheduler["name"] == "poly":
        return f"poly learning-rate decay (power {scheduler['power']})"
    if scheduler["name"] == "plateau":
        return "ReduceLROnPlateau on validation Dice"
    return "constant learning rate"


def _context(config: dict) -> str:
    channels = config.get("in_channels", 1)
    if channels == 1:
        return "one axial slice"
    spacing = config["preprocessing"].get("slice_spacing_mm")
    return (
        f"{channels} consecutive axial slices as channels, the middle one segmented (2.5D; trained on "
        f"{spacing:g} mm slices, so the network sees +/- {spacing * (channels // 2):g} mm)"
    )


def _context_limitation(config: dict) -> str:
    if config.get("in_channels", 1) == 1:
        return ""
    return (
        " Its input spans neighbouring slices, so it expects slices spaced as in training (Agatston's 3 mm);"
        " `segment()` warns when a CT's slice spacing is more than a quarter off."
    )


def _training(meta: dict, run_config: dict) -> str:
    """How the shipped weights were trained: the committed config's two stages, plus the fine-tuning stage
    when the shipped run started from their weights (train.init_from), plus the lesion classifier when the
    run trained one for the segmentation network."""
    if run_config["task"] == "lesion_classifier":
        return _segmenter_training(meta, run_config) + "\n\n" + _lesion_classifier_training(meta, run_config)
    finetuned = bool(run_config["train"].get("init_from"))
    base = load_config(ROOT / "configs" / "default_phantom.yaml") if finetuned else run_config
    data, loss, optim = base["data"], base["loss"], base["optim"]
    seeds = data["phantom"]["train_seeds"]
    text = f"""`cacscoring train configs/default_phantom.yaml` (`bash scripts/train_default_model.sh`), on CPU:
{data["patch_size"][0]} x {data["patch_size"][1]} patches (half centred on calcium), every calcium slice plus
as many calcium-free slices per epoch, phantom seeds {seeds[0]}-{seeds[1] - 1}; in two stages (20 epochs,
then resumed to {base["train"]["epochs"]} epochs with {data["hard_negative_fraction"]:.0%} of the crops centred
on aortic calcium, the look-alike the first stage still labelled LM or RCA); in-plane rotation, intensity shift,
noise and blur (no flips), loss {loss["name"]}{" (batch Dice)" if loss.get("batch") else ""}, {optim["name"]} lr
{optim["lr"]}, {_schedule(base["scheduler"])}, batch {base["train"]["batch_size"]}, seed {base["seed"]}."""
    if not finetuned:
        return text + f""" {meta["training"]["epochs_run"]} epochs run (best epoch {meta["training"]["best_epoch"]})."""
    data, seeds = run_config["data"], run_config["data"]["phantom"]["train_seeds"]
    every_slice = (
        ", and every calcium-free slice holding aortic calcium drawn each epoch (`data.hard_negative_slices`)"
        if data.get("hard_negative_slices")
        else ""
    )
    origin = meta["training"].get("init_from")
    started = f" ({origin['id']} {origin['version']}, weights SHA-256 {origin['weights_sha256'][:12]}...)" if origin else ""
    return text + f"""
Then a third stage fine-tuned those weights{started} (`train.init_from`): {run_config["train"]["epochs"]} epochs on
phantom seeds {seeds[0]}-{seeds[1] - 1}, lr {run_config["optim"]["lr"]} ({_schedule(run_config["scheduler"])}),
{data["hard_negative_fraction"]:.0%} of the crops centred on aortic calcium{every_slice}. The shipped weights
are its epoch {meta["training"]["best_epoch"]} (highest validation Dice)."""


def _segmenter_training(meta: dict, run_config: dict) -> str:
    """The segmentation network's training: from its own run's config where that run is at hand (its package
    folder inside the run), else from the training record its package carries."""
    segmenter = meta["segmenter"]
    run = Path(segmenter["package"]).parent / "config.json"
    if run.is_file():
        text = _training(meta, json.loads(run.read_text(encoding="utf-8")))
    else:
        record = meta["training"]
        origin = record.get("init_from")
        stage = (
            f" and fine-tuned from {origin['id']} {origin['version']} for {record['epochs_run']} epochs at lr "
            f"{record['optim']['lr']}"
            if origin
            else ""
        )
        text = (
            f"`configs/default_phantom.yaml` (`bash scripts/train_default_model.sh`, stages 1-3){stage}; training data: "
            f"{meta['training_data']}; loss {record['loss']['name']}, shipped epoch {record['best_epoch']} (highest "
            "validation Dice)."
        )
    return (
        f"Segmentation network: the weights of {segmenter['id']} {segmenter['version']} (SHA-256 "
        f"{segmenter['weights_sha256'][:12]}...), unchanged. {text}"
    )


def _lesion_classifier_training(meta: dict, run_config: dict) -> str:
    data, record = run_config["data"], meta["lesion_classifier"]
    phantom = data["phantom"]
    accuracy = record["accuracy"]
    recall = ", ".join(f"{name} {value:.3f}" for name, value in accuracy["val_recall_per_class"].items())
    return f"""Lesion classifier: `cacscoring train configs/default_lesion_classifier.yaml`, on CPU, on the candidates of
phantom seeds {phantom["train_seeds"][0]}-{phantom["train_seeds"][1] - 1} (validation {phantom["val_seeds"][0]}-{phantom["val_seeds"][1] - 1}),
which the segmentation network never saw, generator options `{json.dumps(phantom["options"])}` (others at the
generator's defaults); each
phantom segmented by the network as a user's CT is, every candidate in scope one patch, its class the
majority reference label of its voxels{_missed_positives(data)}{_classifier_start(record["training"])}; loss {run_config["loss"]["name"]}, {run_config["optim"]["name"]} lr
{run_config["optim"]["lr"]}, {_schedule(run_config["scheduler"])}, {record["training"]["epochs_run"]} epochs,
in-plane rotations up to {run_config["augment"]["rotate_deg"]:g} degrees (no flips). Shipped epoch
{record["training"]["best_epoch"]} (highest balanced accuracy on the validation candidates: {accuracy["val_balanced_accuracy"]:.3f};
recall {recall})."""


def _classifier_start(record: dict) -> str:
    origin = record.get("init_from")
    if not origin:
        return ""
    return (
        f"; fine-tuned (`train.init_from`), not trained from scratch, from earlier lesion classifier weights (SHA-256"
        f" {origin['weights_sha256'][:12]}..., then at `{origin['package']}`)"
    )


def _missed_positives(data: dict) -> str:
    repeats = int(data.get("missed_positive_repeats", 1))
    if repeats == 1:
        return ""
    return f"; coronary candidates the network's vote dropped listed {repeats} times per epoch"


def _lesion_classifier_architecture(config: dict) -> str:
    component = config["components"].get("lesion_classifier")
    if component is None:
        return ""
    return (
        " Each calcium candidate is then decided whole by a lesion classifier (MONAI `Classifier`, 3D; see "
        "Preprocessing and inference)."
    )


def _lesion_classifier_inference(package) -> str:
    classifier = package.components.get("lesion_classifier")
    if classifier is None:
        return ""
    pre = classifier.config["preprocessing"]
    z, y, x = pre["patch_size"]
    kwargs = classifier.config["network"]["kwargs"]
    n_params = sum(p.numel() for p in classifier.network.parameters())
    return f"""
Then the lesion classifier (`lesion_classifier` component; MONAI `Classifier`, channels {kwargs.get("channels")},
{n_params:,} parameters) re-decides each candidate that touches the heart ROI and is at most
{classifier.config["max_candidate_mm3"]:g} mm³, from a patch of {z} slices x {y} x {x} pixels of
{pre["inplane_spacing_mm"]} mm around its centre: the CT (same HU window), the candidate's voxels and the
network's four artery probabilities. It decides whether the candidate is coronary (P(not coronary) < 0.5),
overruling the vote either way; a coronary candidate keeps the network's majority artery where the vote kept
it, else takes the classifier's likeliest artery. Larger candidates and specks of fewer than
{classifier.config["min_candidate_voxels"]} voxels keep the vote."""


def _generator_notes(training: dict, held_out: dict) -> str:
    """What the held-out phantoms draw differently from the training ones, and why."""
    notes = ""
    trained, evaluated = (float(o.get("bifurcation_clearance_mm", DEFAULT_BIFURCATION_CLEARANCE_MM)) for o in (training, held_out))
    if trained < evaluated:
        notes += (
            f" The training phantoms place LAD and LCX plaques as close as {trained:g} mm to the other branch, right at"
            " the bifurcation where the two centrelines coincide: such a plaque is the same object whichever branch it"
            " was drawn on, so its reference artery is a coin toss. The held-out phantoms keep LAD/LCX plaques at least"
            f" {evaluated:g} mm from the other branch, so that every reference label can be decided from the image."
        )
    trained, evaluated = (o.get("descending_aorta_clearance_mm", DEFAULT_DESCENDING_AORTA_CLEARANCE_MM) for o in (training, held_out))
    if trained is None and evaluated is not None:
        notes += (
            " In the training phantoms the descending aorta was drawn where it fell, overlapping the heart's posterior"
            " wall in many of them, with some distal RCA plaques inside its lumen, indistinguishable from aortic calcium."
            f" In the held-out phantoms its wall keeps {evaluated:g} mm outside the heart's epicardial fat, beside the"
            " vertebra and outlined by fat, as on CT."
        )
    return notes


def _earlier_evaluations_section(meta: dict) -> str:
    earlier = meta.get("earlier_held_out_evaluations", [])
    if not earlier:
        return ""
    rows = []
    for evaluation in earlier:
        icc = evaluation["agatston_icc"]
        arteries = ", ".join(f"{key} {_fmt(icc[key])}" for key in ARTERIES)
        missed = [name for name, ok in evaluation["targets_met"].items() if not ok]
        rows.append(
            f"| {evaluation['version']} | {', '.join(f'{a}-{b}' for a, b in evaluation['seeds'])} |"
            f" `{json.dumps(evaluation['phantom_options'])}` | {_fmt(evaluation['risk_kappa_linear'])} |"
            f" {_fmt(evaluation['lesion_f1_artery_specific'])} | {arteries} | {', '.join(missed) or 'none'} |"
        )
    table = "\n".join(rows)
    return f"""
## Earlier held-out evaluations of these weights
Each held-out set is evaluated once. Where an evaluation's errors came from the phantom generator rather than
the model (a reference label no reader could decide from the image), the generator was corrected and the same
weights evaluated on fresh seeds; the earlier figures stay here. `descending_aorta_clearance_mm: null` drew the
descending aorta where it fell, overlapping the heart's posterior wall in many phantoms, with some distal RCA
plaques inside its lumen.

| shipped as | seeds | generator options | kappa | lesion F1 | Agatston ICC | targets missed |
|---|---|---|---|---|---|---|
{table}
"""


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def realct_figures(package, output: Path) -> dict:
    """The real development scans through the pipeline (scripts/realct_report.py): figures and overlays."""
    import tempfile

    from CACScoringLib.evaluation.realct import qrm_lesions_on_inserts, report_scan
    from CACScoringLib.io import read_ct
    from CACScoringLib.phantom.qrm import extract_scan

    figures = {}
    lung1 = ROOT / ".cache" / "realct" / "lung1_image.nrrd"
    if not lung1.exists():
        raise InputError(f"{lung1} is missing: run bash scripts/fetch_realct.sh first")
    figures["lung1"], _ = report_scan("lung1", read_ct(lung1), package, output)
    with tempfile.TemporaryDirectory() as workdir:
        ct = read_ct(extract_scan(ROOT.parent / "shared" / "realct" / "qrm_canon_large_rep1.tar.xz", Path(workdir)))
        figures["qrm"], labels = report_scan("qrm", ct, package, output)
        figures["qrm"].update(qrm_lesions_on_inserts(ct, labels, figures["qrm"]["lesion_list"]))
    for name in output.glob("*.png"):
        shrink_png(name)
    (output / "realct.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return figures


def _distractor_section(headline: dict) -> str:
    totals = headline.get("distractor_voxels_labelled_of_present") or {}
    if not totals:
        return ""
    rows = "\n".join(f"| {kind} | {labelled} | {present} |" for kind, (labelled, present) in sorted(totals.items()))
    return f"""
Look-alikes drawn by the realistic generator (`{json.dumps(headline["phantom_options"])}`), all labelled 0
in the reference: voxels >= 130 HU labelled as coronary, of those present.

| distractor | labelled | present |
|---|---|---|
{rows}
"""


def _realct_section(realct: dict | None, notes: str) -> str:
    if not realct:
        return ""
    rows = []
    for name, scan in realct.items():
        arteries = ", ".join(f"{k} {scan['agatston'][k]:g} ({scan['lesions'][k]})" for k in ARTERIES)
        extra = ""
        if "labelled_voxels_off_inserts" in scan:
            extra = (f"; on the calcium inserts {scan['labelled_voxels_on_inserts']}, off them "
                     f"{scan['labelled_voxels_off_inserts']}; lesions outside the cardiac insert "
                     f"{scan['lesions_outside_cardiac_insert']}")
        rows.append(
            f"| {name} | {scan['heart_region_slices']} | {scan['blood_pool_hu']} | {scan['lesions']['total']} | "
            f"{scan['agatston']['total']:g} | {arteries} | {scan['labelled_voxels_outside_heart_region']}{extra} |"
        )
    images = " ".join(f"`evaluation/realct/{scan[key]}`" for scan in realct.values() for key in ("region_png", "lesions_png"))
    return f"""
## Real CT
Run by `scripts/realct_report.py` through the full pipeline on the real development scans
(`../shared/realct/README.md`): lung1, a non-gated non-contrast chest CT (5 mm slices), and the QRM calcium
phantom on a Canon scanner. No reference labels exist: judged by anatomy on the overlays ({images}).

| scan | heart region slices | blood pool HU | lesions | Agatston | per artery: Agatston (lesions) | labelled voxels outside the region |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{notes.strip()}
"""


def model_card(package, headline: dict, training_config: dict, realct: dict | None = None, realct_notes: str = "") -> str:
    """MODEL_CARD.md from the shipped metadata, the training config and the measured held-out figures."""
    meta, config = package.metadata, package.config
    kwargs = config["network"]["kwargs"]
    n_params = sum(p.numel() for p in package.network.parameters())
    pre = config["preprocessing"]
    segmenter_run = training_config
    if training_config["task"] == "lesion_classifier":  # the segmentation network's phantoms are described here
        segmenter_run = load_config(ROOT / "configs" / "default_phantom.yaml")
    data = segmenter_run["data"]
    met = headline["targets_met"]
    icc = headline["agatston_icc"]
    dice = headline["dice_pooled"]
    ci = headline["risk_kappa_ci"]
    rows = "\n".join(f"| {key} | {_fmt(icc[key])} | {_fmt(dice.get(key))} |" for key in ARTERIES)
    return f"""# Model card: {meta["id"]} {meta["version"]}

{meta["title"]}.

**Synthetic training data only. This model has NOT been validated on patient CT and must not be used
clinically.** It exists so that `cacscoring score` and the Slicer module work out of the box and as a
reference for training on real data (e.g. COCA, `configs/unet2d_tversky.yaml`).
{_targets_line(met)}

## Training data
{meta["training_data"]}. Phantoms: `CACScoringLib.phantom.make_thorax_phantom` (non-contrast cardiac CT,
0.8 x 0.8 x 3 mm; body, lungs, liver, spine, ribs, sternum, heart, ascending and descending aorta, LM/LAD/LCX/RCA;
calcified plaques of 150-1000 HU peak, 0-5 aortic calcifications, noise 8-22 HU). Generator options for the
training and validation phantoms: `{json.dumps(data["phantom"]["options"])}` (plaque counts per artery as
[min, max]); the held-out phantoms use the generator defaults (plaques per artery
`{json.dumps(DEFAULT_N_PLAQUES)}`, 20% of cases without coronary calcium) and
`{json.dumps(headline["phantom_options"])}`.{_generator_notes(data["phantom"]["options"], headline["phantom_options"])} Labels are the phantom's truth, as a reader's click gives
it: the whole 26-connected region >= 130 HU holding a coronary plaque carries its artery; aortic calcium and bone
stay background.

## Architecture
MONAI `{config["network"]["name"]}`, {config["spatial_dims"]}D, channels {kwargs.get("channels")}, strides
{kwargs.get("strides")}, {kwargs.get("num_res_units")} residual unit(s) per level, {kwargs.get("norm")} norm;
{n_params:,} parameters; input {_context(config)}; 5 output classes (background, LM, LAD, LCX, RCA).{_lesion_classifier_architecture(config)}

## Preprocessing and inference
HU window {pre["hu_window"]} scaled to [0, 1]; axial slices at {pre["inplane_spacing_mm"]} mm in-plane.
Inference (`CACScoringLib.inference.segment`): the anatomical heart region (`CACScoringLib.anatomy.find_heart`;
candidates mostly outside it are dropped and nothing outside it is labelled; a candidate with over a third of its
5 mm in-plane surroundings aerated lung is dropped too, `CACScoringLib.anatomy.aerated_share`), its box resampled to
{pre["inplane_spacing_mm"]} mm, softmax back on the CT grid, calcium where P(background) < 0.5; each 26-connected
candidate >= 130 HU is kept whole with its majority artery when the network called at least
{config.get("lesion_call_fraction", 0.5)} of its voxels calcium, else dropped. That share was chosen on separate
tuning phantoms (seeds 2000-2119, `scripts/tune_lesion_call_fraction.py`: the fraction whose lowest target
metric is highest), never on the held-out phantoms below.{_lesion_classifier_inference(package)}

## Training
{_training(meta, training_config)}

## Evaluation on {headline["n_cases"]} held-out phantoms (seeds {", ".join(f"{a}-{b}" for a, b in headline["seeds"])})
Measured by `scripts/evaluate_default_model.py` through the full inference pipeline; details in
`evaluation/` (evaluation.json, cases.csv, plots, held_out.json).

| metric | measured | target | met |
|---|---|---|---|
| risk category, linearly weighted kappa | {_fmt(headline["risk_kappa_linear"])} (95% CI {_fmt(ci.get("low"))}-{_fmt(ci.get("high"))}) | >= 0.95 | {"yes" if met["risk_kappa_linear"] else "NO"} |
| Agatston ICC(A,1), lowest artery | {_fmt(min(v for k, v in icc.items() if k != "total" and v is not None))} | >= 0.99 | {"yes" if met["agatston_icc_per_artery"] else "NO"} |
| lesion F1, artery-specific (orCaScore matching) | {_fmt(headline["lesion_f1_artery_specific"])} | >= 0.95 | {"yes" if met["lesion_f1"] else "NO"} |

| artery | Agatston ICC(A,1) | Dice (calcium voxels, pooled) |
|---|---|---|
{rows}
| total / any artery | {_fmt(icc["total"])} | {_fmt(dice.get("coronary"))} |

Risk-category accuracy {_fmt(headline["risk_accuracy"])}; lesion sensitivity {_fmt(headline["lesion_sensitivity_artery_specific"])},
PPV {_fmt(headline["lesion_ppv_artery_specific"])} (artery-specific), lesion F1 with the artery ignored
{_fmt(headline["lesion_f1_any_artery"])}. Calcium look-alikes: {headline["aortic_calcium_voxels_labelled"]} of
{headline["aortic_calcium_voxels"]} aortic calcium voxels and {headline["bone_voxels_labelled"]} bone voxels were
labelled as coronary. Mean segmentation time {headline["segment_seconds_mean"]:.2f} s per phantom on CPU.
{_distractor_section(headline)}{_realct_section(realct, realct_notes)}{_earlier_evaluations_section(meta)}
## Release history
{(ROOT / "configs" / "default_model_history.md").read_text(encoding="utf-8").strip()}

## Limitations
Phantoms are far simpler than patients: idealised anatomy and noise, and (for the network) one field of view
and slice spacing. Expect much lower accuracy on real scans; validate on your own data
(`cacscoring evaluate`) before relying on it for research.{_context_limitation(config)}

## Versions
MONAI {meta["monai_version"]}, torch {meta["torch_version"]}, CACScoring {meta["cacscoring_version"]}; package
created {meta["created"]}; card written {datetime.now(timezone.utc).date().isoformat()}.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, help="trained model package folder (output_dir/package)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[seed for block in HELD_OUT_SEEDS for seed in block],
        metavar="START STOP",
        help="one or more START STOP ranges (STOP excluded), pooled",
    )
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--output", type=Path, help="report folder (default: see the module docstring)")
    add_clearance_arguments(parser)
    parser.add_argument(
        "--phantom-options",
        type=yaml.safe_load,
        default={},
        metavar="YAML",
        help="more make_thorax_phantom keywords, e.g. '{distractors: all}' (counts labelled distractor voxels per kind)",
    )
    parser.add_argument(
        "--realct-notes",
        type=Path,
        metavar="MD",
        help="with --ship: also run scripts/realct_report.py's scans and put their figures, overlays and these "
        "notes (a person's reading of the overlays) into the model card",
    )
    parser.add_argument(
        "--lesion-call-fraction",
        type=float,
        help="set the package's lesion_call_fraction first (choose it with scripts/tune_lesion_call_fraction.py)",
    )
    parser.add_argument(
        "--ship",
        action="store_true",
        help="if every target is met: install into Resources/models/<id>, register it",
    )
    parser.add_argument(
        "--register-default", action="store_true", help="with --ship: make it the registry default"
    )
    parser.add_argument("--version", help="with --ship: ship under this version (default: the package's)")
    parser.add_argument(
        "--card-only",
        action="store_true",
        help="with --ship: evaluate nothing on phantoms; rewrite the shipped package's card (and real-CT section) "
        "from the held-out evaluation it records, e.g. after editing --realct-notes",
    )
    parser.add_argument(
        "--accept-unmet-targets",
        action="store_true",
        help="with --ship: ship even if a target is missed (the model card and metadata say which)",
    )
    args = parser.parse_args(argv)

    package = load_package(args.package, "cpu")
    if args.lesion_call_fraction is not None:
        package.config["lesion_call_fraction"] = args.lesion_call_fraction
        validate_config(package.config)
    output = args.output or args.package / "evaluation"
    if not isinstance(args.phantom_options, dict):
        parser.error("--phantom-options takes a YAML mapping of make_thorax_phantom keywords")
    phantom_options = {**clearance_options(args), **args.phantom_options}
    if len(args.seeds) % 2:
        parser.error("--seeds takes START STOP pairs")
    blocks = [range(start, stop) for start, stop in zip(args.seeds[::2], args.seeds[1::2], strict=True)]
    shipped = resources_dir() / "models" / package.id
    if args.card_only:
        if not args.ship or _weights_digests(shipped) != _weights_digests(package.folder):
            parser.error("--card-only rewrites the card of these very weights as shipped: give --ship and the "
                         "package shipped in Resources/models")
        headline = json.loads((shipped / "metadata.json").read_text(encoding="utf-8"))["held_out_evaluation"]
    else:
        headline = evaluate(package, blocks, tuple(args.shape), output, phantom_options)
        print(json.dumps({k: v for k, v in headline.items() if k != "lookalikes_per_case"}, indent=2))
    if args.ship:
        if not all(headline["targets_met"].values()) and not args.accept_unmet_targets:
            print(f"not shipped: held-out targets not met (see {output / 'held_out.json'})", file=sys.stderr)
            return 1
        if not args.card_only:
            ship(package, headline, shipped, args.register_default, args.version)
            shutil.copytree(output, shipped / "evaluation", dirs_exist_ok=True)
        seal_package(shipped)  # the copied report replaced files that ship() had already listed
        shipped_package = load_package(shipped, "cpu")
        training_config = json.loads((args.package.parent / "config.json").read_text(encoding="utf-8"))
        realct, notes = None, ""
        if args.realct_notes is not None:
            realct = realct_figures(shipped_package, shipped / "evaluation" / "realct")
            notes = args.realct_notes.read_text(encoding="utf-8")
        (shipped / "MODEL_CARD.md").write_text(
            model_card(shipped_package, headline, training_config, realct, notes), encoding="utf-8"
        )
        # The report and card join the package: list them too (the registry SHA-256 changes with them).
        register(shipped_package.metadata, shipped_package.spatial_dims, shipped, args.register_default)
        print(f"shipped {shipped}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
