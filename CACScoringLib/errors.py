"""Errors that reach users as one line (the CLI prints them and exits 2; Slicer shows them)."""


class InputError(ValueError):
    """Bad input the user can fix: the message names the problem and what to do."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
