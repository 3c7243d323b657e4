"""Risk categories and SCCT CAC-DRS from Agatston scores.

Scores are not rounded first: any calcium (score > 0) is at least category 1-10 / A1, so a tiny lesion
whose slice-normalised score is below 1 is never reported as "no calcium".
"""

from __future__ import annotations

RISK_CATEGORIES = ("0", "1-10", "11-100", "101-400", ">400")


def risk_category(agatston: float) -> str:
    """0, 1-10, 11-100, 101-400, >400 (upper bounds inclusive: 10 -> "1-10", 10.5 -> "11-100")."""
    if agatston < 0:
        raise ValueError(f"Agatston score cannot be negative: {agatston}")
    if agatston == 0:
        return RISK_CATEGORIES[0]
    if agatston <= 10:
        return RISK_CATEGORIES[1]
    if agatston <= 100:
        return RISK_CATEGORIES[2]
    if agatston <= 400:
        return RISK_CATEGORIES[3]
    return RISK_CATEGORIES[4]


def cac_drs(total_agatston: float, vessels_with_calcium: int) -> str:
    """SCCT CAC-DRS (Hecht et al. 2018): A0 (0), A1 (1-99), A2 (100-299), A3 (>=300), with N1-N4 vessels."""
    if total_agatston < 0:
        raise ValueError(f"Agatston score cannot be negative: {total_agatston}")
    if not 0 <= vessels_with_calcium <= 4:
        raise ValueError(f"vessel count must be 0-4, not {vessels_with_calcium}")
    if total_agatston == 0:
        return "A0"
    grade = "A1" if total_agatston < 100 else "A2" if total_agatston < 300 else "A3"
    return f"{grade}/N{max(vessels_with_calcium, 1)}"
