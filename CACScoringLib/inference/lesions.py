"""Calcium candidates and the decisions taken on each of them as a whole.

A candidate is a 26-connected component of voxels >= the calcium threshold on the whole CT, as a reader's
click in scoring software selects a lesion. The pipeline decides per candidate, in a table indexed by
component number (0: not coronary, else the artery id) that is looked up once at the end:

- the vote: kept with its majority artery when the network called at least a share of its voxels calcium;
- the lesion classifier (a package's optional `lesion_classifier` component), which decides again whether each
  candidate inside the heart ROI, between a few voxels and a volume limit, is coronary calcium, from a 3D patch
  around it: the CT, the candidate's own voxels and the segmentation network's four artery probabilities
  (INPUT_CHANNELS). The per-voxel network sees a few slices around each pixel and hedges where a plaque and a
  look-alike differ in 3D shape (calcium on the aortic wall at the level of the coronary ostia); the classifier
  judges the whole object in its surroundings, as the false-positive reduction stages of two-stage calcium
  scoring methods do, and may also restore a candidate the vote dropped. The artery stays the network's
  majority where the network called the candidate (it sees the whole heart region, the classifier a few
  centimetres), else it is the classifier's likeliest artery. Noise specks of one or two voxels have no shape
  to judge and keep the vote;
- the cascade's false-positive classifier (seed 001), which only rejects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..labels import ARTERIES, votes_per_region
from ..models.networks import LESION_CLASSIFIER_INPUTS as INPUT_CHANNELS

DEFAULT_MAX_CANDIDATE_MM3 = 1500.0  # larger components (bone, long calcified walls) are left to the vote
DEFAULT_MIN_CANDIDATE_VOXELS = 3  # smaller ones (noise specks) too
PROBABILITY_LEVELS = 255  # artery probabilities kept as uint8 for the classifier: 1/255 steps


@dataclass
class Candidates:
    components: np.ndarray  # int32 (z, y, x): candidate number, 0 where below the threshold
    count: int
    sizes: np.ndarray  # (count + 1,) voxels per candidate (index 0: voxels below the threshold)

    def centres(self, ids: np.ndarray) -> np.ndarray:
        """(n, 3) voxel (z, y, x) centres of mass of the given candidates."""
        boxes = ndimage.find_objects(self.components, max_label=int(ids.max()) if len(ids) else 0)
        centres = np.empty((len(ids), 3))
        for row, number in enumerate(ids):
            box = boxes[number - 1]
            offset = [s.start for s in box]
            centres[row] = np.argwhere(self.components[box] == number).mean(axis=0) + offset
        return centres


def find_candidates(hu: np.ndarray, threshold_hu: float) -> Candidates:
    components, count = ndimage.label(hu >= threshold_hu, structure=np.ones((3, 3, 3), bool))
    sizes = sum(np.bincount(slab.ravel(), minlength=count + 1) for slab in slabs(components))
    return Candidates(components, int(count), np.asarray(sizes))


def vote_table(candidates: Candidates, calls: np.ndarray, fraction: float) -> np.ndarray:
    """(count + 1,) uint8: the majority artery of each candidate the network called calcium for at least
    `fraction` of its voxels (lowest id on a tie), else 0."""
    votes = votes_per_region(candidates.components, candidates.count, calls)
    kept = votes[:, 1:].sum(axis=1) >= fraction * candidates.sizes
    kept[0] = False
    return np.where(kept, votes[:, 1:].argmax(axis=1) + 1, 0).astype(np.uint8)


def slabs(volume: np.ndarray, depth: int = 16) -> Iterator[np.ndarray]:
    """Views of a few slices at a time: numpy widens int32 label indices to int64 copies of what it is given,
    which for a whole 512 x 512 x 300 volume would cost 630 MB."""
    return (volume[z : z + depth] for z in range(0, volume.shape[0], depth))


def look_up(table: np.ndarray, components: np.ndarray) -> np.ndarray:
    """table[components], slab by slab."""
    result = np.empty(components.shape, table.dtype)
    for out, slab in zip(slabs(result), slabs(components), strict=True):
        out[...] = table[slab]
    return result


def quantize_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(probabilities, 0.0, 1.0) * PROBABILITY_LEVELS).astype(np.uint8)


def classifier_scope(candidates: Candidates, roi_slices: tuple[slice, ...], spacing_xyz, config: dict) -> np.ndarray:
    """Sorted numbers of the candidates the lesion classifier (its config) decides: touching the ROI, of at
    least min_candidate_voxels voxels and at most max_candidate_mm3."""
    inside = np.unique(candidates.components[roi_slices])
    inside = inside[inside > 0]
    sizes = candidates.sizes[inside]
    largest = float(config.get("max_candidate_mm3", DEFAULT_MAX_CANDIDATE_MM3)) / float(np.prod(spacing_xyz))
    return inside[(sizes >= int(config.get("min_candidate_voxels", DEFAULT_MIN_CANDIDATE_VOXELS))) & (sizes <= largest)]


def classifier_decisions(probabilities: np.ndarray, vote: np.ndarray) -> np.ndarray:
    """Label per candidate: coronary where P(not coronary) < 0.5, with the vote's artery where the vote kept
    the candidate, else the classifier's likeliest artery; 0 otherwise."""
    artery = np.where(vote > 0, vote, probabilities[:, 1:].argmax(axis=1) + 1)
    return np.where(probabilities[:, 0] < 0.5, artery, 0).astype(np.uint8)


def classifier_inputs(
    hu: np.ndarray,
    artery_u8: np.ndarray,
    artery_origin_zyx: tuple[int, int, int],
    candidates: Candidates,
    ids: np.ndarray,
    config: dict,
    spacing_xyz,
) -> np.ndarray:
    """(n, 6, pz, py, px) float32 patches around each candidate's centre, channels as INPUT_CHANNELS.

    hu: the CT (z, y, x); artery_u8: (4, z, y, x) quantized artery probabilities on a crop of the CT grid that
    starts at artery_origin_zyx (zero outside it). The patch spans pz native slices and, in-plane, py x px
    pixels of the classifier's spacing (resampled bilinearly when the CT's differs). Beyond the CT: the low end
    of the HU window, no candidate, zero probability."""
    pre = config["preprocessing"]
    lo, hi = pre["hu_window"]
    pz, py, px = pre["patch_size"]
    target = pre.get("inplane_spacing_mm")
    native = (
        pz,
        max(1, round(py * (target or spacing_xyz[1]) / spacing_xyz[1])),
        max(1, round(px * (target or spacing_xyz[0]) / spacing_xyz[0])),
    )
    patches = np.zeros((len(ids), len(INPUT_CHANNELS), *native), np.float32)
    for row, (number, centre) in enumerate(zip(ids, candidates.centres(ids), strict=True)):
        start = [int(round(c)) - n // 2 for c, n in zip(centre, native, strict=True)]
        ct = _cut(hu, start, native, lo)
        patches[row, 0] = np.clip((ct - lo) / (hi - lo), 0.0, 1.0)
        patches[row, 1] = _cut(candidates.components, start, native, 0) == number
        crop_start = [s - o for s, o in zip(start, artery_origin_zyx, strict=True)]
        for channel in range(len(ARTERIES)):
            patches[row, 2 + channel] = _cut(artery_u8[channel], crop_start, native, 0) / PROBABILITY_LEVELS
    if native[1:] != (py, px) and len(ids):
        resized = F.interpolate(torch.from_numpy(patches), size=(pz, py, px), mode="trilinear", align_corners=False)
        patches = resized.numpy()
    return patches


def _cut(volume: np.ndarray, start, size, fill) -> np.ndarray:
    """volume[start : start + size] along each axis, `fill` where the box leaves the volume."""
    out = np.full(size, fill, np.float32)
    source, target = [], []
    for s, n, extent in zip(start, size, volume.shape, strict=True):
        lo, hi = max(s, 0), min(s + n, extent)
        if lo >= hi:
            return out
        source.append(slice(lo, hi))
        target.append(slice(lo - s, hi - s))
    out[tuple(target)] = volume[tuple(source)]
    return out


@torch.no_grad()
def classify_candidates(network: torch.nn.Module, inputs: np.ndarray, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """(n, 5) softmax of the lesion classifier over its input patches."""
    out = [
        torch.softmax(network(torch.from_numpy(inputs[i : i + batch_size]).to(device)).float(), dim=1).cpu()
        for i in range(0, len(inputs), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, len(ARTERIES) + 1), np.float32)
