"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class KdsamError(Exception):
    """A problem the user can fix (bad path, wrong checkpoint, bad data); never a bug."""


class BadFileError(KdsamError):
    """An unreadable or inconsistent file: reported with its name and skipped, never fatal to a run."""


def one_line(err: Exception) -> str:
    """Library messages can span lines; the CLI promises one."""
    return " ".join(str(err).split())


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """A reader's failure on a damaged file, whatever its exception type (numpy, zipfile, zlib,
    nibabel, pydicom and Pillow raise many), becomes a BadFileError naming the file: one line, and
    a folder run or a dataset skips it."""
    try:
        yield
    except KdsamError:
        raise
    except MemoryError as err:
        raise BadFileError(f"{path}: too large to read into memory") from err
    except Exception as err:  # a damaged file, of any kind
        raise BadFileError(f"{path}: unreadable or malformed {what} ({type(err).__name__}: {one_line(err)})") from err
