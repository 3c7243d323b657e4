"""GUI-free parts of the CACScoring Slicer module (MRML glue, background inference, reports).

Kept in a package beside CACScoring.py because Slicer treats every .py file in a module folder as a module.
"""
