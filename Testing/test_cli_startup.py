"""Lean start-up: the commands that need no network run without importing torch or monai.

Each command runs in a fresh interpreter, which then reports the heavy packages it imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN_AND_REPORT = """
import json, sys
from CACScoringLib.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as stop:  # --help exits
    code = stop.code
print(json.dumps({"code": code, "heavy": [name for name in ("torch", "monai") if name in sys.modules]}))
"""


def run_cli(*args) -> dict:
    """Run `cacscoring ARGS` in a new interpreter on this checkout; its exit code and heavy imports."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, json.dumps([str(a) for a in args])],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["models"], ["models", "--json"]])
def test_help_and_models_import_neither_torch_nor_monai(args):
    assert run_cli(*args) == {"code": 0, "heavy": []}


def test_every_subcommand_parser_is_built_without_torch_or_monai():
    from CACScoringLib.cli import COMMANDS

    for command in COMMANDS:
        assert run_cli(command, "--help") == {"code": 0, "heavy": []}, command


def test_phantom_and_score_with_labels_import_neither_torch_nor_monai(tmp_path):
    assert run_cli("phantom", tmp_path, "--shape", 16, 96, 96, "--seed", 1) == {"code": 0, "heavy": []}
    report = tmp_path / "scores.json"
    result = run_cli("score", tmp_path / "thorax_ct.nii.gz", "--labels", tmp_path / "thorax_labels.nii.gz",
                     "--json", report, "--quiet")
    assert result == {"code": 0, "heavy": []}
    # the scores were really computed: they are the phantom's truth (one LCX plaque on this seed)
    truth = json.loads((tmp_path / "truth.json").read_text())["scores"]
    scores = json.loads(report.read_text())
    assert truth["total"]["agatston"] > 0
    assert scores["total"]["agatston"] == pytest.approx(truth["total"]["agatston"])
    assert scores["arteries"]["LCX"]["lesions"] == truth["arteries"]["LCX"]["lesions"] == 1
