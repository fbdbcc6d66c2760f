"""Profile schema: JSON round trip (hypothesis), atomic saves, and readable load errors."""

import json
import os

import pytest
from factories import metadata
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibration import ProfileError, load_calibration
from calibration.profile.roofline import Bottleneck
from calibration.profile.schema import (
    HardwareCalibration,
    LatencyStats,
    MeasuredSummary,
    OperationCalibration,
    Peak,
    PeakSource,
)
from calibration.specs.keys import operation_key
from calibration.specs.operations import OPERATIONS

finite = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-6, max_value=1e12, allow_nan=False, allow_infinity=False)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
param_values = st.one_of(st.integers(-(2**40), 2**40), st.booleans(), names,
                         st.floats(allow_nan=False, allow_infinity=False, width=64))


@st.composite
def latencies(draw):
    samples = draw(st.lists(finite, max_size=20))
    return LatencyStats(
        median_ms=draw(finite), iqr_ms=draw(finite), min_ms=draw(finite), mean_ms=draw(finite),
        stddev_ms=draw(finite), rounds=draw(st.integers(1, 10**6)), iterations=draw(st.integers(1, 10**6)),
        samples_ms=samples,
    )


@st.composite
def entries(draw):
    # not a registry operation: those entries must have the registry's parameters
    operation = draw(names.filter(lambda name: name not in OPERATIONS))
    params = draw(st.dictionaries(names, param_values, max_size=5))
    dtype = draw(st.sampled_from(["float32", "bfloat16", "float16", "tf32"]))
    device = draw(st.sampled_from(["cpu", "cuda"]))
    optional = st.one_of(st.none(), finite)
    ceiling = st.one_of(st.none(), positive)  # a ceiling of 0 would divide an efficiency by zero
    return OperationCalibration(
        key=operation_key(operation, params, dtype, device), operation=operation, family=draw(names),
        params=params, dtype=dtype, device=device, flops=draw(st.integers(0, 2**62)),
        bytes=draw(st.integers(0, 2**62)), latency=draw(latencies()), gflops=draw(finite),
        gbps=draw(finite), arithmetic_intensity=draw(optional), memory_level=draw(names),
        compute_ceiling_gflops=draw(ceiling), bandwidth_ceiling_gbps=draw(ceiling),
        compute_efficiency=draw(optional), bandwidth_efficiency=draw(optional),
        bottleneck=draw(st.sampled_from(list(Bottleneck))), noisy=draw(st.booleans()),
    )


@st.composite
def calibrations(draw):
    ops = draw(st.lists(entries(), max_size=4))
    peaks = draw(st.dictionaries(st.sampled_from(["float32", "bfloat16"]),
                                 st.builds(Peak, value=positive, source=st.sampled_from(list(PeakSource))),
                                 max_size=2))
    return HardwareCalibration(
        metadata=metadata(hardware_name=draw(st.text(min_size=1, max_size=20)), quick=draw(st.booleans())),
        peak_gflops=peaks,
        peak_bandwidth_gbps=draw(
            st.one_of(st.none(), st.builds(Peak, value=positive, source=st.just(PeakSource.USER)))),
        measured=MeasuredSummary(
            matmul_gflops=draw(st.dictionaries(st.just("float32"), finite, max_size=1)),
            stream_gbps=draw(st.dictionaries(st.sampled_from(["stream_copy", "stream_triad"]), finite, max_size=2)),
            dispatch_overhead_us=draw(st.one_of(st.none(), finite)),
        ),
        operation_profiles={entry.key: entry for entry in ops},
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cal=calibrations())
def test_round_trip_through_a_file(cal, tmp_path):
    path = cal.save(tmp_path / "p.json")
    assert load_calibration(path) == cal


def test_save_is_atomic_and_keeps_the_old_profile_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "p.json"
    old = HardwareCalibration(metadata=metadata(hardware_name="old"))
    old.save(path)
    before = path.read_bytes()

    def broken_replace(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ProfileError, match="cannot write the profile .disk full.; the file there, if any, was left"):
        HardwareCalibration(metadata=metadata(hardware_name="new")).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]  # no temp file left behind


def test_saved_profile_is_readable_by_others(tmp_path):
    path = HardwareCalibration(metadata=metadata()).save(tmp_path / "p.json")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("[1, 2]", "expected a JSON object at the top level, found list"),
        ('{"hello": 1}', "field 'schema_version' is missing"),
        ('{"schema_version": 1, "metadata": ', "not valid JSON at line 1 .* truncated"),
    ],
)
def test_load_errors_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ProfileError, match=message) as info:
        load_calibration(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ProfileError, match="no such profile"):
        load_calibration(tmp_path / "nope.json")


def test_unknown_field_is_reported_not_dropped(tmp_path):
    data = json.loads(HardwareCalibration(metadata=metadata()).model_dump_json())
    data["metadata"]["hardwar_name"] = "typo"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"field 'metadata.hardwar_name': Extra inputs are not permitted"):
        load_calibration(path)


def test_json_schema_describes_the_profile():
    schema = HardwareCalibration.model_json_schema()
    assert {"schema_version", "metadata", "operation_profiles", "fusion_profiles"} <= set(schema["properties"])
    assert "compute_efficiency" in schema["$defs"]["OperationCalibration"]["properties"]
