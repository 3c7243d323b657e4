"""First-use check of the Python packages CACScoring needs inside Slicer (Resources/requirements.txt).

Only the check is here (GUI-free and testable); asking and installing is done by the module widget with
slicer.util.confirmOkCancelDisplay, PyTorchUtils and slicer.util.pip_install.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

TORCH_REQUIREMENT = "torch>=2.3"  # handed to PyTorchUtils, which picks the build for the GPU


@dataclass(frozen=True)
class Unmet:
    requirement: Requirement
    installed: str | None  # None: not installed

    def describe(self) -> str:
        found = "not installed" if self.installed is None else f"{self.installed} installed"
        return f"{self.requirement} ({found})"


def read_requirements(path: Path) -> list[Requirement]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split("#", 1)[0].strip()) for line in lines if line.split("#", 1)[0].strip()]


def unmet_requirements(requirements: list[Requirement]) -> list[Unmet]:
    unmet = []
    for requirement in requirements:
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            unmet.append(Unmet(requirement, None))
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(Unmet(requirement, installed))
    return unmet
