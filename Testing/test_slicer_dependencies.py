"""First-use requirement check of the Slicer module (the part that runs without Slicer)."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "CACScoring"))

from CACScoringSlicerLib.dependencies import read_requirements, unmet_requirements  # noqa: E402


def test_slicer_requirements_parse_leave_torch_to_pytorchutils_and_match_the_library():
    slicer_requirements = read_requirements(ROOT / "Resources" / "requirements.txt")
    names = {r.name.lower() for r in slicer_requirements}
    assert "torch" not in names and "monai" in names
    library = {Requirement(line).name.lower() for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")}
    assert names <= library, f"not a library requirement: {sorted(names - library)}"


def test_unmet_requirements_report_missing_and_too_old_packages(tmp_path):
    numpy_version = metadata.version("numpy")
    path = tmp_path / "requirements.txt"
    path.write_text(
        "# comment line\n"
        "numpy>=1.0  # met\n"
        "numpy>=999\n"
        "cacscoring-no-such-package~=1.0\n",
        encoding="utf-8",
    )
    unmet = unmet_requirements(read_requirements(path))
    assert [(str(u.requirement), u.installed) for u in unmet] == [
        ("numpy>=999", numpy_version),
        ("cacscoring-no-such-package~=1.0", None),
    ]
    assert unmet[1].describe() == "cacscoring-no-such-package~=1.0 (not installed)"


@pytest.mark.parametrize("line", ["monai~=1.6.1", "numpy>=1.26"])
def test_installed_library_versions_satisfy_the_slicer_requirements(line):
    assert unmet_requirements([Requirement(line)]) == []
