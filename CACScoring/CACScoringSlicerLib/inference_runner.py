"""Child process of InferenceJob: segment one CT NIfTI into a labels NIfTI with CACScoringLib.

Prints `PROGRESS <fraction> <message>` lines for the parent; SIGTERM asks it to stop between steps
(exit code 3); a user-fixable problem exits 2 with the message as the last line.
"""

from __future__ import annotations

import argparse
import signal
import sys

CANCELLED_EXIT_CODE = 3
INPUT_ERROR_EXIT_CODE = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))

    def progress(fraction: float, message: str = "") -> None:
        print(f"PROGRESS {float(fraction):.4f} {message}", flush=True)

    from CACScoringLib.errors import InputError

    try:
        import SimpleITK as sitk

        from CACScoringLib.inference import segment
        from CACScoringLib.volume import CTVolume

        progress(0.0, "reading CT")
        ct = CTVolume.from_sitk(sitk.ReadImage(args.input))
        labels = segment(ct, model=args.model, device=args.device, progress=progress,
                         cancel=lambda: stop["requested"])
        if stop["requested"]:
            return CANCELLED_EXIT_CODE
        sitk.WriteImage(ct.to_sitk(labels.astype("uint8")), args.output)
        progress(1.0, "done")
        return 0
    except InputError as error:
        print(error, flush=True)
        return INPUT_ERROR_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
