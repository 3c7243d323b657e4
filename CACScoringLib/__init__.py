"""CACScoringLib: coronary artery calcium scoring on cardiac CT (pure Python, no Slicer imports)."""

__version__ = "0.1.0"
