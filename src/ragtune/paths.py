"""Output paths: can this be written, and which folders would writing it create."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


def outermost_missing(path: str | Path) -> Path | None:
    """The outermost folder on the way to `path` (itself included) that does not exist, i.e. the
    top of what making it would create; None when `path` exists."""
    path = Path(path).absolute()
    if os.path.lexists(path):
        return None
    while not os.path.lexists(path.parent) and path != path.parent:
        path = path.parent
    return path


def check_output(path: str | Path, folder: bool = False) -> Path:
    """Raise a RagtuneError naming `path` if it cannot be written: it (or a folder on the way to it)
    exists as something else (a file where a folder is needed, or a folder where a file is), or the
    nearest existing folder is not writable. Creates nothing; returns `path` as a Path. Call it
    before long work whose output would otherwise be lost.

        check_output("out/questions.jsonl")        # a file (its folders may not exist yet)
        check_output("out", folder=True)           # a folder to write into
    """
    path = Path(path)
    if folder and os.path.lexists(path) and not path.is_dir():
        raise ConfigError(f"cannot write into {path}: it is {_kind(path)}, not a folder")
    if not folder and path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a folder, and a file is needed there")
    nearest = path if folder else path.parent  # the folder that must exist, or the nearest one that does
    top = outermost_missing(nearest)
    nearest = top.parent if top is not None else nearest
    if not nearest.is_dir():
        raise ConfigError(f"cannot write {path}: {nearest} is {_kind(nearest)}, not a folder")
    # (Writing goes through a temp file in the same folder, so the folder is what must be writable.)
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {path}: no permission to write in {nearest}")
    return path


def _kind(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return "a broken symlink"
    return "a file" if path.is_file() else "not a regular file or folder"
