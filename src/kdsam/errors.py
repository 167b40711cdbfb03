"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class KdsamError(Exception):
    """A problem the user can fix (bad path, wrong checkpoint, bad data); never a bug."""
