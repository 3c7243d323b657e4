"""Score the real QRM calcium phantom scan and compare with the data set's truth and its authors' values.

    python scripts/qrm_report.py [--archive ../shared/realct/qrm_canon_large_rep1.tar.xz]
        [--reference ../shared/realct/qrm_reference/agatston.csv] [--workdir DIR] [--overlay qrm-overlay.png]

Unpacks the scan (into a temporary folder unless --workdir), finds the nine inserts and the calibration rods
(CACScoringLib.phantom.qrm), prints one row per insert (our Agatston, volume and rod-calibrated mass, the true
mass, the authors' Agatston and mass) and writes a PNG of the ROIs. Reference values: MolloiLab
CAC-stanford-data, MIT licence, Copyright 2021 MolloiLab.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from CACScoringLib.errors import InputError  # noqa: E402
from CACScoringLib.io import read_ct  # noqa: E402
from CACScoringLib.phantom.qrm import (  # noqa: E402
    comparison_table,
    extract_scan,
    locate_qrm_inserts,
    read_qrm_reference,
    score_qrm_inserts,
    write_qrm_overlay,
)

REALCT = ROOT.parent / "shared" / "realct"


def report(archive: Path, reference: Path, vendor: str, scan: str, workdir: Path, overlay: Path) -> None:
    ct = read_ct(extract_scan(archive, workdir))
    layout = locate_qrm_inserts(ct)
    calibration, rows = score_qrm_inserts(ct, layout)
    table = comparison_table(rows, read_qrm_reference(reference, vendor, scan))
    rod_slices = sorted({int(z) for z in layout.rod_mask.nonzero()[0]})
    print(
        f"insert plane: slice {layout.plane_slice}; large inserts' ring radius {layout.ring_radius_mm:.1f} mm"
    )
    print(
        f"calibration (slices {rod_slices[0]}-{rod_slices[-1]}): {calibration.factor_mg_cm3_per_hu:.4f} "
        f"mg HA/cm³ per HU, water rod {calibration.water_hu:.1f} HU"
    )
    header = ("insert", "Agatston", "volume mm³", "mass mg", "true mg", "error %", "authors Ag", "authors mg")
    print(f"{header[0]:<28}" + "".join(f"{h:>11}" for h in header[1:]))
    for row in table:
        values = [row[k] for k in ("agatston", "volume_mm3", "mass_mg", "true_mass_mg", "mass_error_pct")]
        values += [row["authors_agatston"], row["authors_mass_mg"]]
        note = "" if row["detected"] else "  not detected at 130 HU"
        print(f"{row['insert']:<28}" + "".join(f"{v:>11.1f}" for v in values) + note)
    print(f"overlay: {write_qrm_overlay(ct, layout, overlay)}")
    print("reference values: MolloiLab CAC-stanford-data, MIT licence, Copyright 2021 MolloiLab")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=REALCT / "qrm_canon_large_rep1.tar.xz")
    parser.add_argument("--reference", type=Path, default=REALCT / "qrm_reference" / "agatston.csv")
    parser.add_argument("--vendor", default="Canon_Aquilion_One_Vision")
    parser.add_argument("--scan", default="Large_rep1")
    parser.add_argument(
        "--workdir", type=Path, help="unpack here (default: a temporary folder, removed after)"
    )
    parser.add_argument("--overlay", type=Path, default=Path("qrm-overlay.png"))
    args = parser.parse_args(argv)
    try:
        if args.workdir is not None:
            report(args.archive, args.reference, args.vendor, args.scan, args.workdir, args.overlay)
        else:
            with tempfile.TemporaryDirectory() as workdir:
                report(args.archive, args.reference, args.vendor, args.scan, Path(workdir), args.overlay)
    except InputError as error:
        print(f"qrm_report: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
