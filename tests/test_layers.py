"""The package's imports run one way, and the lower layers import no torch.

Every import counts: at module level, inside functions, and under ``TYPE_CHECKING``. The
layers, bottom up (README, "Architecture"):

    specs -> profile -> measure | predict -> report -> cli, api, plugin (entry points)

A module may import its own layer and the layers below; ``measure`` and ``predict`` are
siblings and import neither each other.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "calibration"

RANK = {"specs": 0, "profile": 1, "measure": 2, "predict": 2, "report": 3, "entry": 4}
SIBLINGS = {frozenset({"measure", "predict"})}
TORCH_FREE = ("specs", "profile", "report")


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in RANK else "entry"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = _modules()


def test_every_module_is_in_a_layer():
    assert {_layer(m) for m in MODULES} <= set(RANK)
    assert {_layer(m) for m in MODULES} == set(RANK)  # each layer has modules


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_layers(module):
    layer = _layer(module)
    wrong = []
    for target in _imports(MODULES[module], module):
        if target not in MODULES or target == "calibration" or module == "calibration":
            continue  # third-party, or the package's own lazy re-exports
        other = _layer(target)
        if RANK[other] > RANK[layer] or (other != layer and frozenset({layer, other}) in SIBLINGS):
            wrong.append(f"{target} ({other})")
    assert not wrong, f"{module} ({layer}) imports from a layer above or beside it: {', '.join(sorted(wrong))}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) in TORCH_FREE))
def test_lower_layers_import_no_torch(module):
    torch = sorted(t for t in _imports(MODULES[module], module) if t == "torch" or t.startswith("torch."))
    assert not torch, f"{module} imports {', '.join(torch)}"


def test_reading_comparing_and_showing_a_profile_loads_no_torch():
    code = (
        "import sys, calibration, calibration.cli, calibration.profile.storage, calibration.report.compare,"
        " calibration.report.compare_report\n"
        "calibration.load_calibration, calibration.HardwareCalibration\n"
        "calibration.cli.build_parser()\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_importing_the_package_registers_nothing_in_torch():
    code = (
        "import json, torch\n"
        "from torch.utils import flop_counter\n"
        "before = len(flop_counter.flop_registry)\n"
        "import calibration, calibration.cli, calibration.plugin, calibration.api\n"
        "import calibration.predict.plan, calibration.predict.mapper, calibration.predict.flops\n"
        "import calibration.measure.kernels, calibration.measure.patterns\n"
        "calibration.partition, calibration.predict_latency\n"
        "print(json.dumps([before, len(flop_counter.flop_registry)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = json.loads(out)
    assert after == before


def test_the_public_api_resolves_lazily():
    import calibration

    for name in calibration.__all__:
        assert getattr(calibration, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        calibration.nosuch  # noqa: B018


def test_the_readme_s_imports_work():
    from calibration import load_calibration, models  # noqa: F401

    assert models.resnet18().training is False and callable(models.example_input)
