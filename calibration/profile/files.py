"""Profile files on disk: atomic writes and the writability probe. No schema here, so the
profile model can save itself without importing the reader (:mod:`calibration.profile.storage`)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from pydantic import BaseModel


class ProfileError(ValueError):
    """A profile file that cannot be read or written: the message names the file and the field."""


_NUMBER_LIST = re.compile(r"\[\s*((?:-?[0-9][0-9.eE+-]*,\s*)*-?[0-9][0-9.eE+-]*)\s*\]")


def save_calibration(calibration: BaseModel, path: str | Path) -> Path:
    """Write ``calibration`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    # Indented for people, but each list of numbers (raw samples) on one line.
    text = _NUMBER_LIST.sub(lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]",
                            calibration.model_dump_json(indent=1))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the profile the mode a plain open() would.
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | Path) -> None:
    """Raise ProfileError unless a profile can be written at ``path``.

    Probes by creating (and removing) a file beside it: permission bits alone say nothing
    when running as root or on a read-only mount.
    """
    path = Path(path)
    if path.is_dir():
        raise ProfileError(f"{path} is a directory; give a file path such as {path / 'profile.json'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ProfileError(f"{path}: directory {parent} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise ProfileError(f"{path} exists and is not writable")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot write in {parent} ({exc.strerror})") from exc
    os.close(fd)
    os.unlink(probe)
