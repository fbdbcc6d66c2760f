"""A profile's metadata: the host (:mod:`calibration.specs.host`) plus what torch reports."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone

import torch

from calibration.profile.schema import CudaInfo, Metadata
from calibration.specs.host import (
    allocator_settings,
    cache_sizes,
    cpu_model,
    git_commit,
    load_average,
    memory_gib,
    package_version,
    physical_cores,
    thread_settings,
    usable_cpus,
)


def describe(*, device: str, hardware_name: str | None, quick: bool, command: list[str],
             load_before: float | None = None, busy_before: float | None = None,
             busy_during: float | None = None, heap: str | None = None, canary_ms: float | None = None):
    """The profile's metadata for a run on ``device`` in this process."""
    cuda = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        cuda = CudaInfo(
            name=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 2),
            multiprocessors=props.multi_processor_count,
            cuda_version=torch.version.cuda,
            cudnn_version=torch.backends.cudnn.version(),
        )
    commit, dirty = git_commit()
    device_name = cuda.name if cuda else cpu_model()
    return Metadata(
        hardware_name=hardware_name or device_name,
        device_type=device,
        device_name=device_name,
        cpu_model=cpu_model(),
        physical_cores=physical_cores(),
        logical_cpus=os.cpu_count() or 1,
        usable_cpus=usable_cpus(),
        threads=torch.get_num_threads(),
        interop_threads=torch.get_num_interop_threads(),
        memory_gib=memory_gib(),
        cache_sizes=cache_sizes(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        os=platform.platform(),
        python_version=platform.python_version(),
        torch_version=torch.__version__,
        numpy_version=package_version("numpy"),
        pydantic_version=package_version("pydantic"),
        pytest_version=package_version("pytest"),
        pytest_benchmark_version=package_version("pytest-benchmark"),
        calibration_version=package_version("calibration"),
        date=datetime.now(timezone.utc),
        git_commit=commit,
        git_dirty=dirty,
        # and the C heap the cases were timed on (measure.heap), where the run set it
        allocator={**allocator_settings(), **({"heap while timing": heap} if heap else {})},
        thread_env=thread_settings(),
        cuda=cuda,
        quick=quick,
        command=[sys.argv[0], *command] if command else list(sys.argv),
        load_average_before=load_before,
        busy_cpus_before=busy_before,
        busy_cpus_during=busy_during,
        load_average_after=load_average(),
        canary_ms=canary_ms,
    )
