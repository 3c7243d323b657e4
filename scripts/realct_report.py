"""Run a model on the real development scans and write what a reader needs to judge it by anatomy.

    python scripts/realct_report.py [--output realct-output] [--model ID_OR_FOLDER]
        [--lung1 .cache/realct/lung1_image.nrrd] [--qrm ../shared/realct/qrm_canon_large_rep1.tar.xz]

lung1 comes from scripts/fetch_realct.sh; the QRM scan from ../shared/realct/. For each scan: the heart
region found (and the blood pool it measured), the lesions labelled per artery with their Agatston score, the
labelled voxels outside the heart region, and two PNGs: `<scan>_region.png` (region and labels on axial
slices and two reformats) and `<scan>_lesions.png` (a close-up of each labelled lesion). For the QRM scan the
lesions are also sorted into those on a calcium insert and those elsewhere. `realct.json` holds the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from CACScoringLib.errors import InputError  # noqa: E402
from CACScoringLib.evaluation.realct import qrm_lesions_on_inserts, report_scan  # noqa: E402
from CACScoringLib.io import read_ct  # noqa: E402
from CACScoringLib.phantom.qrm import extract_scan  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "realct-output")
    parser.add_argument("--model", help="registry id or package folder (default: the registry default)")
    parser.add_argument("--lung1", type=Path, default=ROOT / ".cache" / "realct" / "lung1_image.nrrd")
    parser.add_argument("--qrm", type=Path, default=ROOT.parent / "shared" / "realct" / "qrm_canon_large_rep1.tar.xz")
    args = parser.parse_args(argv)
    try:
        figures = {}
        if args.lung1.exists():
            figures["lung1"], _ = report_scan("lung1", read_ct(args.lung1), args.model, args.output)
        else:
            print(f"lung1 skipped: {args.lung1} is missing (bash scripts/fetch_realct.sh)")
        if args.qrm.exists():
            with tempfile.TemporaryDirectory() as workdir:
                ct = read_ct(extract_scan(args.qrm, Path(workdir)))
                figures["qrm"], labels = report_scan("qrm", ct, args.model, args.output)
                figures["qrm"].update(qrm_lesions_on_inserts(ct, labels, figures["qrm"]["lesion_list"]))
        else:
            print(f"QRM scan skipped: {args.qrm} is missing")
    except InputError as error:
        print(f"realct_report: error: {error}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "realct.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    for name, scan in figures.items():
        extra = "".join(f", {k} {v}" for k, v in scan.items() if k.startswith(("labelled_voxels_o", "lesions_outside_c")) and k != "labelled_voxels_outside_heart_region")
        print(f"{name}: heart region slices {scan['heart_region_slices']}, blood pool {scan['blood_pool_hu']} HU; "
              f"lesions {scan['lesions']}; Agatston {scan['agatston']}; labelled voxels outside the heart region "
              f"{scan['labelled_voxels_outside_heart_region']}{extra}")
    print(f"figures and overlays in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
