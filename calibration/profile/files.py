"""Profile files on disk: where a write lands, atomic writes, the writability probe, and the
cleanup of what a killed writer left. No schema here, so the profile model can save itself
without importing the reader (:mod:`calibration.profile.storage`).

A save never leaves a partial profile: the text goes to a temporary file in the same
directory, is fsynced, and is renamed over the profile. On Linux the temporary file is
created unnamed (``O_TMPFILE``) and only linked under a name just before the rename, so a
process killed while writing or syncing leaves nothing behind; where that is not available
it has a name from the start. A name carries the writer's process id, and each later save or
probe of the same profile removes the temporary files whose writer no longer runs.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ValidationError


class ProfileError(ValueError):
    """A profile file that cannot be read or written: the message names the file and the field."""


_NUMBER_LIST = re.compile(r"\[\s*((?:-?[0-9][0-9.eE+-]*,\s*)*-?[0-9][0-9.eE+-]*)\s*\]")

# Temporary files are ".NAME.PID.TOKEN.tmp" (a save) and ".NAME.PID.TOKEN.probe" (the
# writability probe); before process ids were in the names they were ".NAME.TOKEN.tmp".
_SUFFIXES = (".tmp", ".probe")
# A temporary file of the older, pid-less kind is only removed once no save could still be
# writing it: a save takes well under a second.
_STALE_SECONDS = 3600


# How many validation problems to name before counting the rest.
MAX_REPORTED_ERRORS = 3


def _describe_location(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _problem(err) -> str:
    text = f"field '{_describe_location(err['loc'])}': {' '.join(str(err['msg']).split())}"
    value = err.get("input")
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) and len(repr(value)) <= 80:
        text += f", got {value!r}"
    return text


def validation_message(exc: ValidationError) -> str:
    problems = [_problem(err) for err in exc.errors()]
    shown = problems[:MAX_REPORTED_ERRORS]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more else "")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def target(path: str | Path) -> Path:
    """The file a write to ``path`` lands in: a symlink's target (the link stays a link).

    Raises ProfileError for what cannot hold a profile: no path, a directory, a device, a
    FIFO, a missing directory, a name the file system refuses.
    """
    text = os.fspath(path)
    if not text:
        raise ProfileError("Invalid profile path '': give a file path such as profiles/box.json")
    if "\0" in text:
        raise ProfileError(f"Invalid profile path {text!r}: a path cannot contain a NUL byte")
    if text.endswith(("/", os.sep)):
        raise ProfileError(f"Invalid profile path {text!r}: it names a directory; give a file path such as "
                           f"{text}profile.json")
    path = Path(text)
    try:
        resolved = Path(os.path.realpath(path)) if path.is_symlink() else path
        info = resolved.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:  # a name too long, a symlink loop, a component that is a file
        raise ProfileError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise ProfileError(f"{path} is a directory; give a file path such as {path / 'profile.json'}")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise ProfileError(f"{path} is not a regular file (a {_kind(info.st_mode)}); give a file path for the profile")
    parent = resolved.parent
    if not parent.is_dir():
        raise ProfileError(f"{path}: directory {parent} does not exist")
    return resolved


def save_calibration(calibration: BaseModel, path: str | Path) -> Path:
    """Write ``calibration`` to ``path`` atomically: a reader sees the old file or the new one.

    A symlink is written through to its target. Returns ``path`` as given.
    """
    destination = target(path)
    # Indented for people, but each list of numbers (raw samples) on one line.
    text = _NUMBER_LIST.sub(lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]",
                            calibration.model_dump_json(indent=1))
    data = (text + "\n").encode("utf-8")
    sweep(destination)
    try:
        existing = destination.stat().st_mode & 0o777
    except FileNotFoundError:
        existing = None
    mode = existing if existing is not None else 0o666 & ~_umask()  # what a plain open() would give
    try:
        _write_atomically(destination, data, mode)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot write the profile ({exc.strerror or exc}); "
                           "the file there, if any, was left as it was") from exc
    return Path(path)


def _temporary_name(destination: Path, suffix: str) -> Path:
    return destination.with_name(f".{destination.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_atomically(destination: Path, data: bytes, mode: int) -> None:
    directory = os.open(destination.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fd = _open_unnamed(directory)
        if fd is None:
            _write_named(destination, data, mode)
        else:
            _write_unnamed(fd, directory, destination, data, mode)
        try:
            os.fsync(directory)  # make the rename durable: a power cut after it would otherwise lose it
        except OSError:
            pass  # some file systems cannot sync a directory; the rename itself is still atomic
    finally:
        os.close(directory)


def _write_unnamed(fd: int, directory: int, destination: Path, data: bytes, mode: int) -> None:
    """Write, sync, then name the unnamed file and rename the name over the profile."""
    name = None
    try:
        _write_all(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
        name = _temporary_name(destination, ".tmp").name
        # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names an O_TMPFILE file; Python only
        # calls linkat (not link, which would not follow) when a directory fd is given.
        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=directory, follow_symlinks=True)
        os.replace(name, destination.name, src_dir_fd=directory, dst_dir_fd=directory)
        name = None
    except OSError as exc:
        if name is None or exc.filename != f"/proc/self/fd/{fd}":
            raise
        name = None  # no /proc to link through: write a named copy instead
        _write_named(destination, data, mode)
    finally:
        os.close(fd)
        if name is not None:
            try:
                os.unlink(name, dir_fd=directory)
            except FileNotFoundError:
                pass


def _write_named(destination: Path, data: bytes, mode: int) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{destination.name}.{os.getpid()}.", suffix=".tmp", dir=destination.parent)
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)  # mkstemp creates 0600
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(name, destination)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _open_unnamed(directory: int) -> int | None:
    """An unnamed file in the directory open as ``directory`` (Linux O_TMPFILE), or None where
    that is unsupported."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    try:
        return os.open(".", flag | os.O_WRONLY, 0o600, dir_fd=directory)
    except OSError as exc:
        # EOPNOTSUPP: the file system has no unnamed files; EISDIR/EINVAL: the kernel is too old
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's process
        return True
    return True


def sweep(destination: Path) -> list[Path]:
    """Remove the temporary files that killed saves or probes of ``destination`` left behind.

    A file is removed when the process in its name no longer runs (or, for names without a
    process id, when it is an hour old); a save in progress keeps its file. Returns what was removed.
    """
    prefix = f".{destination.name}."
    removed = []
    try:
        entries = list(os.scandir(destination.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith(_SUFFIXES):
            continue
        middle = name[len(prefix):].rsplit(".", 1)[0]
        pid, _, token = middle.partition(".")
        if token:
            if not pid.isdigit() or _running(int(pid)):
                continue
        else:
            try:
                if time.time() - entry.stat(follow_symlinks=False).st_mtime < _STALE_SECONDS:
                    continue
            except OSError:
                continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def check_writable(path: str | Path) -> Path:
    """Raise ProfileError unless a profile can be written at ``path``; return where it will land.

    Probes by creating a file in the directory (unnamed where the system allows, so a kill
    leaves nothing): permission bits alone say nothing when running as root or on a
    read-only mount. Also removes what killed earlier saves left there.
    """
    destination = target(path)
    parent = destination.parent
    sweep(destination)
    try:
        directory = os.open(parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fd = _open_unnamed(directory)
        finally:
            os.close(directory)
        if fd is None:
            fd, probe = tempfile.mkstemp(prefix=f".{destination.name}.{os.getpid()}.", suffix=".probe", dir=parent)
            os.unlink(probe)
        os.close(fd)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot write in {parent} ({exc.strerror or exc})") from None
    if destination.exists() and not os.access(destination, os.W_OK):
        raise ProfileError(f"{path} exists and is not writable")
    return destination
