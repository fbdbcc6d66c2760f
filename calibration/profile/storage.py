"""Reading profiles: the only module that parses profile JSON (writing is :mod:`calibration.profile.files`)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from pydantic import ValidationError

from calibration.profile import legacy
from calibration.profile.files import ProfileError, check_writable, save_calibration
from calibration.profile.schema import SCHEMA_VERSION, HardwareCalibration

__all__ = ["LegacyProfileWarning", "ProfileError", "check_writable", "load_calibration", "save_calibration"]

# How many validation problems to list before summarising the rest.
MAX_REPORTED_ERRORS = 8

# What json reports an error at when the text ends inside a token: a literal or number cut
# short ("tr", "-", "1." leaves ".", "1e" leaves "e"). A string cut short is "Unterminated".
_CUT_TOKEN = re.compile(r"-|t|tr|tru|f|fa|fal|fals|n|nu|nul|\.|[eE][-+]?")


class LegacyProfileWarning(UserWarning):
    """A profile in the predecessor's layout was converted on load."""


def _describe_location(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _looks_truncated(text: str, exc: json.JSONDecodeError) -> bool:
    """Whether the JSON error is the text ending early, not a wrong character."""
    tail = text[exc.pos:].rstrip()
    return (
        not tail
        # strict json only says "Unterminated string" when the text ends inside one
        or exc.msg.startswith("Unterminated string")
        or (exc.msg != "Extra data" and _CUT_TOKEN.fullmatch(tail) is not None)
    )


def load_calibration(path: str | Path) -> HardwareCalibration:
    """Read and validate a profile; any problem raises ProfileError naming file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read ({exc})") from exc
    if not text.strip():
        raise ProfileError(f"{path}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (the file looks truncated)" if _looks_truncated(text, exc) else ""
        raise ProfileError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{hint}"
        ) from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a JSON object at the top level, found {type(data).__name__}")
    if legacy.is_legacy(data):
        try:
            calibration = legacy.upgrade(data)
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"field {exc.args[0]!r} is missing" if isinstance(exc, KeyError) else str(exc)
            raise ProfileError(f"{path}: a profile in {legacy.PREDECESSOR} that cannot be read: {detail}") from None
        warnings.warn(
            f"{path}: upgraded from {legacy.PREDECESSOR}; save it to write the current schema "
            f"(version {SCHEMA_VERSION})",
            LegacyProfileWarning,
            stacklevel=2,
        )
        return calibration
    version = data.get("schema_version")
    if version is None:
        raise ProfileError(
            f"{path}: field 'schema_version' is missing and it is not in {legacy.PREDECESSOR} either "
            f"(no 'theoretical_peak_gflops'); this is not a calibration profile"
        )
    if version != SCHEMA_VERSION:
        raise ProfileError(
            f"{path}: field 'schema_version' is {version!r}; this version of calibration reads "
            f"schema version {SCHEMA_VERSION}"
        )
    try:
        return HardwareCalibration.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"field '{_describe_location(err['loc'])}': {err['msg']}" for err in exc.errors()
        ]
        shown = problems[:MAX_REPORTED_ERRORS]
        more = len(problems) - len(shown)
        tail = f"\n  ... and {more} more" if more else ""
        raise ProfileError(f"{path}: invalid profile:\n  " + "\n  ".join(shown) + tail) from None
