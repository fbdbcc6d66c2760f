"""Reading profiles: the only module that parses profile JSON (writing is :mod:`calibration.profile.files`).

Whatever the file holds, reading it either returns a valid profile or raises one
:class:`ProfileError` whose one-line message names the file and the field or value at
fault: a file too large to be a profile, JSON nested too deeply, a key given twice, numbers
that are not finite, structures the predecessor's converter did not expect.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from pydantic import ValidationError

from calibration.profile import legacy
from calibration.profile.files import ProfileError, check_writable, save_calibration, target, validation_message
from calibration.profile.schema import SCHEMA_VERSION, HardwareCalibration

__all__ = [
    "LegacyProfileWarning", "ProfileError", "check_output", "check_writable", "load_calibration", "save_calibration",
    "target",
]

# A full calibration writes about 1 MiB (raw samples included). A file 64 times that size is
# not a profile, and a device such as /dev/zero never ends: reading stops here.
MAX_PROFILE_BYTES = 64 << 20

# What json reports an error at when the text ends inside a token: a literal or number cut
# short ("tr", "-", "1." leaves ".", "1e" leaves "e"). A string cut short is "Unterminated".
_CUT_TOKEN = re.compile(r"-|t|tr|tru|f|fa|fal|fals|n|nu|nul|\.|[eE][-+]?")


class LegacyProfileWarning(UserWarning):
    """A profile in the predecessor's layout was converted on load."""


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _looks_truncated(text: str, exc: json.JSONDecodeError) -> bool:
    """Whether the JSON error is the text ending early, not a wrong character."""
    tail = text[exc.pos:].rstrip()
    return (
        not tail
        # strict json only says "Unterminated string" when the text ends inside one
        or exc.msg.startswith("Unterminated string")
        or (exc.msg != "Extra data" and _CUT_TOKEN.fullmatch(tail) is not None)
    )


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json keeps the last of two equal keys; in a hand-merged profile that silently drops an entry.
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _read_text(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile") from None
    except IsADirectoryError:
        raise ProfileError(f"{path}: cannot read (it is a directory, not a profile)") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:  # a NUL byte in the path
        raise ProfileError(f"{str(path)!r}: cannot read ({exc})") from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{path}: larger than {MAX_PROFILE_BYTES >> 20} MiB; a profile is a few MiB at most, "
                           "so this is not one")
    try:
        return raw.decode("utf-8-sig")  # an editor's byte-order mark is harmless
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: cannot read (not UTF-8 text: byte {raw[exc.start]:#04x} at offset "
                           f"{exc.start})") from None


def _parse(path: Path, text: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        hint = " (the file looks truncated)" if _looks_truncated(text, exc) else ""
        raise ProfileError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{hint}"
        ) from None
    except _DuplicateKey as exc:
        raise ProfileError(f"{path}: key {exc.key!r} appears twice in one object; "
                           "a profile names each field and entry once") from None
    except RecursionError:
        raise ProfileError(f"{path}: not a profile: its JSON is nested too deeply to read") from None
    except ValueError as exc:  # the int parser's limit: "Exceeds the limit (4300 digits) ..."
        raise ProfileError(f"{path}: not a profile: it holds a number with more digits than Python reads "
                           f"({str(exc).split(':')[0]})") from None


def load_calibration(path: str | Path) -> HardwareCalibration:
    """Read and validate a profile; any problem raises one ProfileError naming file and field."""
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        raise ProfileError(f"{path}: the file is empty")
    data = _parse(path, text)
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a JSON object at the top level, found {type(data).__name__}")
    if legacy.is_legacy(data):
        return _upgrade(path, data)
    version = data.get("schema_version")
    if version is None:
        raise ProfileError(
            f"{path}: field 'schema_version' is missing and it is not in {legacy.PREDECESSOR} either "
            f"(no 'theoretical_peak_gflops'); this is not a calibration profile"
        )
    if version != SCHEMA_VERSION or not isinstance(version, int) or isinstance(version, bool):
        raise ProfileError(
            f"{path}: field 'schema_version' is {version!r}; this version of calibration reads "
            f"schema version {SCHEMA_VERSION}"
        )
    try:
        return HardwareCalibration.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{path}: invalid profile: {validation_message(exc)}") from None
    except RecursionError:
        raise ProfileError(f"{path}: not a profile: its JSON is nested too deeply to read") from None


def _upgrade(path: Path, data: dict) -> HardwareCalibration:
    try:
        calibration, renamed = legacy.upgrade(data)
    except legacy.LegacyFieldError as exc:
        raise ProfileError(f"{path}: a profile in {legacy.PREDECESSOR} that cannot be read: {exc}") from None
    except ValidationError as exc:
        raise ProfileError(f"{path}: a profile in {legacy.PREDECESSOR} that cannot be read: "
                           f"{validation_message(exc)}") from None
    renames = "".join(f"; pattern {old} is {new} now" for old, new in renamed.items())
    warnings.warn(
        f"{path}: upgraded from {legacy.PREDECESSOR}{renames}; save it to write the current schema "
        f"(version {SCHEMA_VERSION})",
        LegacyProfileWarning,
        stacklevel=3,
    )
    return calibration


def check_output(path: str | Path) -> Path:
    """Raise ProfileError unless a new profile may be written at ``path``; return where it lands.

    Besides :func:`check_writable`, refuses to replace a file that is not a calibration
    profile (a typo in the path must not overwrite the user's notes, code or other data);
    an empty file or an existing profile, current or the predecessor's, may be replaced.
    """
    destination = check_writable(path)
    try:
        empty = destination.stat().st_size == 0
    except FileNotFoundError:
        return destination
    if not empty:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LegacyProfileWarning)
            try:
                load_calibration(destination)
            except ProfileError as exc:
                why = str(exc).removeprefix(f"{destination}: ")
                raise ProfileError(f"{path} exists and is not a calibration profile ({why}); "
                                   "refusing to overwrite it: remove it or choose another path") from None
    return destination
