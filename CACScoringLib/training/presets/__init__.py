"""Pieces of the paper presets in configs/ that are more than configuration."""
