"""Dataset import: COCA gated/non-gated, generic NIfTI folders, and the training manifest."""
