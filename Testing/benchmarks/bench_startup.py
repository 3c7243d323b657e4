"""Benchmark (prints figures, not a test): process wall time of the `cacscoring` commands a user waits for.

Side by side in one run, each the median of --runs fresh processes:
  - the floor: a bare `python -c "import numpy, SimpleITK, pydicom"`;
  - `cacscoring --help` on this checkout and on --before (a git commit, default: the last one before the lean
    start-up; its tree is exported to a temporary folder);
  - `cacscoring score CT --labels L` on a synthetic thorax phantom (target: within 1.5x the floor);
  - `cacscoring score CT` with the default model, against the library's own read -> segment -> score time
    in a warm process (target: within 1.5 s of it); --no-model skips this pair.
Run: .venv/bin/python Testing/benchmarks/bench_startup.py [--runs 3] [--before REF] [--no-model]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BEFORE = "487cb60"  # the last commit before `--help` and `score --labels` stopped importing torch and monai


def wall(command: list[str], pythonpath: Path, runs: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=pythonpath, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def export_tree(ref: str, folder: Path) -> Path | None:
    """The files of commit `ref` under `folder`, or None when this is not a git checkout holding it."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True)
    if archive.returncode != 0:
        print(f"(no --help 'before' figure: {archive.stderr.decode().strip() or 'git archive failed'})")
        return None
    folder.mkdir()
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def in_process_seconds(ct: Path, runs: int) -> float:
    """Median of read -> segment -> score in this (warm) process with the default model."""
    from CACScoringLib.inference import segment
    from CACScoringLib.io import read_ct
    from CACScoringLib.scoring import ScoringParams, score_volume

    times = []
    for _ in range(runs + 1):  # the first run loads and caches the model, as a fresh process would
        start = time.perf_counter()
        volume = read_ct(ct)
        score_volume(volume, segment(volume).labels, ScoringParams())
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="processes per command (median reported)")
    parser.add_argument("--before", default=BEFORE, help=f"git commit for the 'before' --help (default {BEFORE})")
    parser.add_argument("--no-model", action="store_true", help="skip the segmenting `score` pair")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from CACScoringLib.phantom import make_thorax_phantom, write_thorax_case

    python = sys.executable
    cli = [python, "-m", "CACScoringLib"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        case = write_thorax_case(make_thorax_phantom(seed=1), Path(tmp) / "case", "nifti", False)
        ct, labels = str(case["ct"]), str(case["labels"])
        floor = wall([python, "-c", "import numpy, SimpleITK, pydicom"], REPO, args.runs)
        rows.append(("python -c 'import numpy, SimpleITK, pydicom'", floor))
        old = export_tree(args.before, Path(tmp) / "before") if args.before else None
        if old is not None:
            rows.append((f"cacscoring --help  (before, {args.before})", wall([*cli, "--help"], old, args.runs)))
        rows.append(("cacscoring --help", wall([*cli, "--help"], REPO, args.runs)))
        if old is not None:
            rows.append((f"cacscoring score CT --labels L  (before, {args.before})",
                         wall([*cli, "score", ct, "--labels", labels], old, args.runs)))
        rows.append(("cacscoring score CT --labels L", wall([*cli, "score", ct, "--labels", labels], REPO, args.runs)))
        if not args.no_model:
            rows.append(("cacscoring score CT  (default model)", wall([*cli, "score", ct], REPO, args.runs)))
            library = in_process_seconds(Path(ct), args.runs)

    base = statistics.median(floor)
    print(f"\nprocess wall, median of {args.runs} (min), {os.cpu_count()} CPUs visible; CT {ct.rsplit('/', 1)[-1]} "
          f"(phantom seed 1, 48 x 256 x 256)")
    print(f"{'command':58s} {'median s':>9s} {'min s':>7s} {'x floor':>8s}")
    for name, times in rows:
        median = statistics.median(times)
        print(f"{name:58s} {median:9.3f} {min(times):7.3f} {median / base:8.2f}")
    labels_ratio = statistics.median(dict(rows)["cacscoring score CT --labels L"]) / base
    print(f"\nscore --labels / floor = {labels_ratio:.2f}x (target <= 1.5x)")
    if not args.no_model:
        process = statistics.median(dict(rows)["cacscoring score CT  (default model)"])
        print(f"score (model): process {process:.2f} s vs library in-process {library:.2f} s: "
              f"start-up overhead {process - library:.2f} s (target <= 1.5 s)")


if __name__ == "__main__":
    main()
