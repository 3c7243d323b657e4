"""Which Slicer can run the module: 5.10 or later, whose Python is 3.12.

Imported before anything else of the module, so it must stay importable by an older Slicer's Python 3.9:
no syntax or library calls newer than 3.9 here.
"""

MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 12)


def unsupported_reason(slicer_version, python_version):
    """One line saying why this Slicer cannot run CAC Scoring and what to do, or None when it can.

    Both versions are (major, minor, ...) sequences: Slicer's from slicer.app, Python's from sys.version_info.
    """
    slicer_major_minor = tuple(slicer_version[:2])
    python_major_minor = tuple(python_version[:2])
    if slicer_major_minor >= MINIMUM_SLICER and python_major_minor >= MINIMUM_PYTHON:
        return None
    slicer_text, python_text = ".".join(map(str, slicer_major_minor)), ".".join(map(str, python_major_minor))
    return (
        f"CAC Scoring needs 3D Slicer {MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]} or later "
        f"(Python {MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]}); this is Slicer {slicer_text} with Python {python_text}: "
        "install a current Slicer from https://download.slicer.org"
    )
