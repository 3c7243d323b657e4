"""Montage of a realistic full-chest phantom: axial slices and a coronal reformat (lung and soft-tissue
windows), coronary calcium in red and each distractor kind outlined in its own colour.

    python scripts/phantom_montage.py OUT.png [--seed N] [--preset realchest]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from CACScoringLib.phantom import make_thorax_phantom  # noqa: E402
from CACScoringLib.phantom.distractors import KIND_ID  # noqa: E402

COLOURS = plt.get_cmap("tab20").colors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    phantom = make_thorax_phantom(
        seed=args.seed,
        field_of_view="chest",
        distractors={kind: 3 for kind in KIND_ID} | {"pacemaker_lead": 1, "sternal_wire": 5, "stent": 1},
        acquisition={"fov_mm": 360.0, "pixel_mm": 0.7, "thickness_mm": 5.0, "increment_mm": 5.0, "gated": False},
        p_no_calcium=0.0,
    )
    hu, kinds, labels = phantom.ct.array, phantom.distractor_map, phantom.labels
    anatomy, z0, dz = phantom.anatomy, phantom.ct.origin[2], phantom.ct.spacing[2]

    def index(z_mm):
        return int(np.clip(round((z_mm - z0) / dz), 0, hu.shape[0] - 1))

    chest = anatomy["chest"]
    picks = {
        "neck": chest["inlet_z_mm"] + 40.0,
        "arch": chest["arch_apex_z_mm"] - 5.0,
        "carina": chest["carina_mm"][2] - 10.0,
        "aortic root": anatomy["aortic_root_mm"][2] - 6.0,
        "heart": anatomy["heart_centre_mm"][2],
        "upper abdomen": anatomy["heart_centre_mm"][2] - 80.0,
    }
    fig, axes = plt.subplots(2, 4, figsize=(20, 10.5))
    panels = [(name, hu[index(z)], kinds[index(z)], labels[index(z)], False) for name, z in picks.items()]
    middle_y = int(round((anatomy["heart_centre_mm"][1] - phantom.ct.origin[1]) / phantom.ct.spacing[1]))
    panels.append(("coronal (heart centre)", hu[:, middle_y, :], kinds[:, middle_y, :], labels[:, middle_y, :], True))
    trachea_y = int(round((chest["trachea_xy_mm"][1] - phantom.ct.origin[1]) / phantom.ct.spacing[1]))
    panels.append(("coronal (trachea)", hu[:, trachea_y, :], kinds[:, trachea_y, :], labels[:, trachea_y, :], True))
    for ax, (name, image, kind_map, label_map, coronal) in zip(axes.ravel(), panels, strict=True):
        extent = None
        if coronal:
            extent = (0, image.shape[1] * phantom.ct.spacing[0], 0, image.shape[0] * dz)
        ax.imshow(image, cmap="gray", vmin=-400, vmax=600, origin="lower" if coronal else "upper", extent=extent)
        # imshow's 'upper' origin flips the axis; contours then take row indices as y as they are.
        where = {"origin": "lower", "extent": extent} if coronal else {}
        for kind_id in KIND_ID.values():
            if (kind_map == kind_id).any():
                ax.contour(kind_map == kind_id, levels=[0.5], colors=[COLOURS[kind_id]], linewidths=1.0, **where)
        if (label_map > 0).any():
            ax.contour(label_map > 0, levels=[0.5], colors=["red"], linewidths=1.2, **where)
        ax.set_title(name)
        ax.axis("off")
    handles = [plt.Line2D([], [], color=COLOURS[i], label=k) for k, i in KIND_ID.items()]
    handles.append(plt.Line2D([], [], color="red", label="coronary calcium (labelled)"))
    fig.legend(handles=handles, loc="lower center", ncol=7)
    fig.suptitle(f"thorax phantom seed {args.seed}: field of view chest, {hu.shape[0]} x {hu.shape[1]} x {hu.shape[2]}")
    fig.savefig(args.out, dpi=70, bbox_inches="tight")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
