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


def test_the_torch_requirement_is_monais():
    from CACScoringSlicerLib.dependencies import TORCH_REQUIREMENT
    from packaging.version import Version

    (monai_torch,) = [Requirement(r) for r in metadata.requires("monai") if Requirement(r).name == "torch"
                      and Requirement(r).marker is None]
    (ours,), (theirs,) = TORCH_REQUIREMENT.specifier, monai_torch.specifier
    assert (ours.operator, Version(ours.version)) == (theirs.operator, Version(theirs.version))


class FakeSlicer:
    """Slicer's dialogs, pip_install and PyTorchUtils, recording what the installer did."""

    def __init__(self, monkeypatch, versions: dict[str, str | None], answer=True, torch_install=None):
        from CACScoringSlicerLib import dependencies

        self.versions = versions
        self.errors, self.questions, self.pip_calls, self.torch_calls = [], [], [], []
        self.answer = answer
        self.torch_install = torch_install  # callable(specifier) run by the stand-in installTorch
        real = dependencies.installed_version
        monkeypatch.setattr(dependencies, "installed_version",
                            lambda name: self.versions[name] if name in self.versions else real(name))

    def installer(self, with_pytorch_extension=True):
        from CACScoringSlicerLib.dependencies import Installer

        return Installer(confirm=self.confirm, show_error=self.errors.append, pip_install=self.pip,
                         install_torch=self.install_torch if with_pytorch_extension else None)

    def confirm(self, text):
        self.questions.append(text)
        return self.answer

    def pip(self, args):
        constraints = Path(args[1]).read_text(encoding="utf-8")  # the file exists only during the call
        self.pip_calls.append((args[0], constraints, args[2:]))

    def install_torch(self, specifier):
        self.torch_calls.append(specifier)
        return self.torch_install(specifier)


@pytest.fixture
def requirements_file(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("numpy>=1.0\ncacscoring-missing>=1.0\n", encoding="utf-8")
    return path


def test_an_old_torch_is_never_replaced_the_user_is_told_where_to_update_it(monkeypatch, requirements_file):
    from CACScoringSlicerLib.dependencies import ensure_requirements

    fake = FakeSlicer(monkeypatch, {"torch": "2.3.1"})
    assert not ensure_requirements(requirements_file, fake.installer())
    (error,) = fake.errors
    assert "PyTorch 2.3.1 is installed" in error and "torch>=2.8" in error and "PyTorch Utils" in error
    assert fake.questions == [] and fake.pip_calls == [] and fake.torch_calls == []


def test_the_rest_is_installed_with_the_present_torch_pinned(monkeypatch, requirements_file):
    from CACScoringSlicerLib.dependencies import ensure_requirements

    fake = FakeSlicer(monkeypatch, {"torch": "2.9.1+cu128"})
    assert ensure_requirements(requirements_file, fake.installer())
    assert "cacscoring-missing>=1.0 (not installed)" in fake.questions[0]
    assert fake.pip_calls == [("-c", "torch==2.9.1+cu128\n", ["cacscoring-missing>=1.0"])]
    assert fake.torch_calls == [] and fake.errors == []


def test_a_missing_torch_comes_from_pytorchutils_first(monkeypatch, requirements_file):
    from CACScoringSlicerLib.dependencies import ensure_requirements

    fake = FakeSlicer(monkeypatch, {"torch": None},
                      torch_install=lambda specifier: fake.versions.update(torch="2.10.0") or "torch module")
    assert ensure_requirements(requirements_file, fake.installer())
    assert fake.torch_calls == [">=2.8"]
    assert fake.pip_calls == [("-c", "torch==2.10.0\n", ["cacscoring-missing>=1.0"])]


def test_a_failing_torch_install_is_a_message_not_a_traceback(monkeypatch, requirements_file):
    import subprocess

    from CACScoringSlicerLib.dependencies import ensure_requirements

    def fail(specifier):
        raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "pip", "install", "torch"])

    fake = FakeSlicer(monkeypatch, {"torch": None}, torch_install=fail)
    assert not ensure_requirements(requirements_file, fake.installer())
    (error,) = fake.errors
    assert error.startswith("PyTorch could not be installed (Command '['PythonSlicer'")
    assert "PyTorch Utils" in error and fake.pip_calls == []


def test_without_the_pytorch_extension_or_consent_nothing_is_installed(monkeypatch, requirements_file):
    from CACScoringSlicerLib.dependencies import ensure_requirements

    fake = FakeSlicer(monkeypatch, {"torch": None})
    assert not ensure_requirements(requirements_file, fake.installer(with_pytorch_extension=False))
    assert "install the PyTorch extension from the Extensions Manager" in fake.errors[0]
    declined = FakeSlicer(monkeypatch, {"torch": "2.9.0"}, answer=False)
    assert not ensure_requirements(requirements_file, declined.installer())
    assert declined.pip_calls == [] and declined.errors == []


def test_supported_slicer_is_5_10_with_python_3_12():
    from CACScoringSlicerLib.compatibility import unsupported_reason

    assert unsupported_reason((5, 10, 0), (3, 12, 4)) is None
    assert unsupported_reason((6, 0), (3, 13, 0)) is None
    assert "this is Slicer 5.8 with Python 3.9" in unsupported_reason((5, 8, 1), (3, 9, 10))
    assert "this is Slicer 5.10 with Python 3.11" in unsupported_reason((5, 10), (3, 11, 2))  # a custom build


def test_what_an_older_slicer_imports_first_parses_as_python_3_9():
    import ast

    for path in (ROOT / "CACScoring" / "CACScoring.py", ROOT / "CACScoring" / "CACScoringSlicerLib" / "__init__.py",
                 ROOT / "CACScoring" / "CACScoringSlicerLib" / "compatibility.py"):
        ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))


def test_the_supported_slicer_is_declared_where_builders_and_readers_look():
    import json
    import re

    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r'VERSION_LESS "5\.10"\)\s*\n\s*message\(FATAL_ERROR "CACScoring needs Slicer 5\.10', cmake)
    entry = json.loads((ROOT / "CACScoring.json").read_text(encoding="utf-8"))
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "build_subdirectory", "enabled", "tier"}  # the catalog schema v1.0.1 allows no other keys
    assert set(entry) <= allowed
    for doc in ("README.md", "docs/slicer.md"):
        assert "Slicer 5.10 or later" in (ROOT / doc).read_text(encoding="utf-8"), doc
