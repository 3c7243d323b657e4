"""Child process of InferenceJob: segment one CT NIfTI into a labels NIfTI with CACScoringLib.

Prints `PROGRESS <fraction> <message>`, `warning: <text>` and `blood pool HU: <value>` lines for the parent; SIGTERM asks it to stop
between steps (exit code 3); a user-fixable problem exits 2 with the message as the last line.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

CANCELLED_EXIT_CODE = 3
INPUT_ERROR_EXIT_CODE = 2
WARNING_PREFIX = "warning: "
BLOOD_POOL_PREFIX = "blood pool HU: "  # what the heart region measured: the parent's contrast check reuses it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", default="", help="registry id or model package folder; empty: registry default")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def progress(fraction: float, message: str = "") -> None:
        print(f"PROGRESS {float(fraction):.4f} {message}", flush=True)

    import SimpleITK as sitk

    from CACScoringLib.errors import InputError
    from CACScoringLib.inference import Cancelled, segment
    from CACScoringLib.volume import CTVolume

    try:
        ct = CTVolume.from_sitk(sitk.ReadImage(args.input))
        result = segment(ct, model=args.model or None, device=args.device, progress=progress, cancel=stop)
    except Cancelled:
        return CANCELLED_EXIT_CODE
    except InputError as error:
        print(error, flush=True)
        return INPUT_ERROR_EXIT_CODE
    for warning in result.warnings:
        print(f"{WARNING_PREFIX}{warning}", flush=True)
    if result.roi.heart is not None and result.roi.heart.blood_pool_hu is not None:
        print(f"{BLOOD_POOL_PREFIX}{result.roi.heart.blood_pool_hu!r}", flush=True)
    sitk.WriteImage(ct.to_sitk(result.labels), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
