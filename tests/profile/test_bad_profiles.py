"""The catalog of malformed profile files (``factories.BAD_PROFILES``): each is refused with a
ProfileError of one line that names the file and the field or value at fault, and is left as
it was. The command line, the plugin and the API read profiles through the same function;
``tests/entry/test_bad_cli.py`` and ``test_bad_plugin.py`` run the same files through them."""

from __future__ import annotations

import resource
import subprocess
import sys
import warnings

import pytest
from factories import BAD_PROFILES, snapshot

from calibration import ProfileError, load_calibration


@pytest.mark.parametrize("bad", BAD_PROFILES, ids=lambda bad: bad.id)
def test_a_malformed_profile_is_refused_in_one_line_naming_the_field(tmp_path, bad):
    path = bad.write(tmp_path)
    before = snapshot(tmp_path)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a predecessor profile that loads warns that it was upgraded
        with pytest.raises(ProfileError) as info:
            load_calibration(path)

    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    assert bad.names in message, message
    assert snapshot(tmp_path) == before


def _one_gib_of_memory() -> None:
    # A reader without a size limit would take all of the machine's memory first.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_a_file_that_never_ends_is_refused_by_its_size():
    code = (
        "from calibration import ProfileError, load_calibration\n"
        "try:\n    load_calibration('/dev/zero')\nexcept ProfileError as exc:\n    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=_one_gib_of_memory)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("/dev/zero: larger than"), proc.stdout
