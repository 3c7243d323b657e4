"""Compare two `cacscoring score --json` reports artery by artery and say whether they match.

One line per artery and for the total (Agatston and volume of both), then the risk categories and a verdict:
"match" when every artery's Agatston agrees within --tolerance (default 0.05, i.e. equal as printed to one
decimal) and the risk categories are equal, "differ" otherwise. Exit 0 on match, 1 on differ, 2 on bad input.
Usage: compare_scores.py REFERENCE.json OTHER.json [--names reference model] [--tolerance 0.05]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROWS = ("LM", "LAD", "LCX", "RCA", "total")


def load_report(path: Path) -> dict:
    """The report at `path`; ValueError naming the file when it is not a score report."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        scores = [report["arteries"][key] for key in ROWS[:-1]] + [report["total"]]
        numbers = [score[name] for score in scores for name in ("agatston", "volume_mm3")]
        valid = all(isinstance(n, int | float) for n in numbers) and isinstance(report["risk_category"], str)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a readable `cacscoring score --json` report ({error})") from None
    if not valid:
        raise ValueError(f"{path} has non-numeric scores or no risk category: give a `cacscoring score --json` report")
    return report


def compare(reference: dict, other: dict, names: tuple[str, str], tolerance: float) -> tuple[list[str], bool]:
    """The printed lines and whether the two reports match."""
    lines, differing = [], []
    for key in ROWS:
        a, b = (report["total"] if key == "total" else report["arteries"][key] for report in (reference, other))
        same = abs(a["agatston"] - b["agatston"]) <= tolerance
        if not same and key != "total":
            differing.append(key)
        lines.append(f"{key:6s} Agatston {names[0]} {a['agatston']:8.1f}  {names[1]} {b['agatston']:8.1f}   "
                     f"volume {a['volume_mm3']:7.1f} vs {b['volume_mm3']:7.1f} mm³   {'match' if same else 'differ'}")
    same_risk = reference["risk_category"] == other["risk_category"]
    lines.append(f"risk category: {names[0]} {reference['risk_category']}, {names[1]} {other['risk_category']}   "
                 f"{'match' if same_risk else 'differ'}")
    if differing or not same_risk:
        where = ", ".join(differing + ([] if same_risk else ["risk category"]))
        lines.append(f"differ: the {names[1]}'s scores differ from the {names[0]}'s in {where}")
    else:
        lines.append(f"match: the {names[1]}'s scores equal the {names[0]}'s in every artery "
                     f"(within {tolerance:g} Agatston) and in risk category")
    return lines, not differing and same_risk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="score report taken as the reference")
    parser.add_argument("other", type=Path, help="score report to compare with it")
    parser.add_argument("--names", nargs=2, default=("reference", "model"), metavar=("REF", "OTHER"))
    parser.add_argument("--tolerance", type=float, default=0.05, help="Agatston points (default 0.05)")
    args = parser.parse_args(argv)
    try:
        lines, same = compare(load_report(args.reference), load_report(args.other), tuple(args.names), args.tolerance)
    except ValueError as error:
        print(f"compare_scores: error: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
