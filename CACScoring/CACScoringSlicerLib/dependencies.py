"""First-use check and install of the Python packages CACScoring needs inside Slicer (Resources/requirements.txt).

GUI-free and testable: the module widget passes Slicer's dialogs, `slicer.util.pip_install` and PyTorchUtils'
`installTorch` in an `Installer`. torch is never installed or replaced by pip: PyTorchUtils chooses the build
that fits the GPU, and the other packages are installed under a constraint that pins the torch present.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

# monai 1.6.1 declares torch>=2.8.0 (a test checks this against monai's metadata).
TORCH_REQUIREMENT = Requirement("torch>=2.8")


@dataclass(frozen=True)
class Unmet:
    requirement: Requirement
    installed: str | None  # None: not installed

    def describe(self) -> str:
        found = "not installed" if self.installed is None else f"{self.installed} installed"
        return f"{self.requirement} ({found})"


@dataclass
class Installer:
    """What `ensure_requirements` needs from Slicer."""

    confirm: Callable[[str], bool]  # ask before installing (slicer.util.confirmOkCancelDisplay)
    show_error: Callable[[str], None]  # slicer.util.errorDisplay
    pip_install: Callable[[list[str]], object]  # slicer.util.pip_install with a list of pip arguments
    install_torch: Callable[[str], object] | None  # PyTorchUtils installTorch(version specifier); None: no extension


def read_requirements(path: Path) -> list[Requirement]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split("#", 1)[0].strip()) for line in lines if line.split("#", 1)[0].strip()]


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def unmet_requirements(requirements: list[Requirement]) -> list[Unmet]:
    unmet = []
    for requirement in requirements:
        installed = installed_version(requirement.name)
        if installed is None or not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(Unmet(requirement, installed))
    return unmet


def unmet_torch() -> Unmet | None:
    return next(iter(unmet_requirements([TORCH_REQUIREMENT])), None)


def describe_unmet(requirements_path: Path) -> list[str]:
    """What is missing or too old, one line each (quick: reads package metadata, imports nothing)."""
    torch = unmet_torch()
    lines = [] if torch is None else [f"PyTorch {torch.describe()}, through the PyTorch extension"]
    return lines + [u.describe() for u in unmet_requirements(read_requirements(requirements_path))]


def ensure_requirements(requirements_path: Path, installer: Installer) -> bool:
    """Install what is missing after asking. Returns False, after saying why, when the user declined, an
    install failed or the installed torch is too old (which only the PyTorch Utils module may replace)."""
    missing = describe_unmet(requirements_path)
    if not missing:
        return True
    torch = unmet_torch()
    if torch is not None and torch.installed is not None:
        installer.show_error(
            f"PyTorch {torch.installed} is installed but CAC Scoring (MONAI) needs {TORCH_REQUIREMENT}: "
            "uninstall it in the PyTorch Utils module, restart Slicer and open CAC Scoring again."
        )
        return False
    if not installer.confirm(
        "CAC Scoring needs these Python packages:\n\n" + "\n".join(missing)
        + "\n\nInstall them now? This may take several minutes."
    ):
        return False
    if torch is not None and not _install_torch(installer):
        return False
    packages = [str(u.requirement) for u in unmet_requirements(read_requirements(requirements_path))]
    if not packages:
        return True
    with tempfile.TemporaryDirectory(prefix="CACScoring-pip-") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text(f"torch=={installed_version('torch')}\n", encoding="utf-8")
        try:
            installer.pip_install(["-c", str(constraints), *packages])
        except Exception as error:  # pip's own output, in the Python console, names the package and the reason
            installer.show_error(f"Installing {', '.join(packages)} failed ({error}): see the Python console.")
            return False
    return True


def _install_torch(installer: Installer) -> bool:
    if installer.install_torch is None:
        installer.show_error("PyTorch is missing: install the PyTorch extension from the Extensions Manager, "
                             "restart Slicer and open CAC Scoring again.")
        return False
    specifier = str(TORCH_REQUIREMENT.specifier)
    try:
        installer.install_torch(specifier)
    except Exception as error:  # e.g. pip's CalledProcessError: the network, disk space, no matching build
        installer.show_error(f"PyTorch could not be installed ({error}): install PyTorch {specifier} in the "
                             "PyTorch Utils module and open CAC Scoring again.")
        return False
    torch = unmet_torch()
    if torch is not None:
        installer.show_error(f"PyTorch {specifier} was not installed ({torch.describe()}): install it in the "
                             "PyTorch Utils module and open CAC Scoring again.")
        return False
    return True
