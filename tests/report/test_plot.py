"""python -m calibration plot: the roofline picture of synthetic profiles (no timing)."""

import struct
import sys
from dataclasses import replace

import pytest
from factories import latency, metadata, record

from calibration.cli import main
from calibration.measure.fold import FusionRecord, fold
from calibration.profile.schema import Peak, PeakSource
from calibration.report.plot import INSTALL_HINT, draw_roofline, plot_roofline
from calibration.specs.patterns import FusionCase

matplotlib = pytest.importorskip("matplotlib")
mpimg = pytest.importorskip("matplotlib.image")
pytest.importorskip("matplotlib.text")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG signature and IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def texts(cal, **kwargs) -> str:
    """Every piece of text on the figure, one a line (a wrapped note on one), to read what it says."""
    fig = draw_roofline(cal, **kwargs)
    return "\n".join(t.get_text().replace("\n  ", " ") for t in fig.findobj(matplotlib.text.Text))


def operations() -> list:
    return [
        # 2*1024^3 FLOP at 200 GFLOPS; 2*256^3 at 50 GFLOPS
        record("matmul", 2 * 1024**3 / 200e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
        record("matmul", 2 * 256**3 / 50e9 * 1e3, M=256, K=256, N=256, path="aten"),
        # triad: DRAM-sized at 40 GB/s, L2-sized at 120 GB/s; copy has no FLOPs
        record("stream_triad", 3 * 4 * (1 << 25) / 40e9 * 1e3, n=1 << 25),
        record("stream_triad", 3 * 4 * (1 << 14) / 120e9 * 1e3, n=1 << 14),
        record("stream_copy", 2 * 4 * (1 << 25) / 30e9 * 1e3, n=1 << 25),
        record("add", 3 * 4 * (1 << 24) / 20e9 * 1e3, n=1 << 24),
        record("dispatch", 0.002, n=1),
        conv(),
    ]


def conv():
    return record("conv2d", 2.0, N=1, CIN=64, COUT=64, H=56, W=56, K=3, STRIDE=1, PAD=1, GROUPS=1)


def add_relu(variant: str, ms: float) -> FusionRecord:
    return FusionRecord(FusionCase("Add_ReLU", (("n", 1 << 20),), "float32", "cpu", variant), latency(ms))


def profile(fusion: bool = True, **meta):
    fusion_records = [add_relu("unfused", 2.0), add_relu("library", 0.8), add_relu("compiled", 3.0)]
    return fold(
        operations(), metadata(**meta), fusion_records=fusion_records if fusion else [],
        peak_gflops={"float32": Peak(value=400.0, source=PeakSource.USER)},
    )


def test_plot_writes_a_png_of_figsize_times_dpi(tmp_path, capsys):
    path = profile().save(tmp_path / "p.json")
    out = tmp_path / "roofline.png"
    assert main(["plot", str(path), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert png_size(out) == (18 * 120, 8 * 120)  # two panels: operations, fusion
    image = mpimg.imread(out)
    assert image.shape[:2] == (960, 2160)
    assert image[..., :3].min() < 0.5  # something was drawn on the white


def test_plot_roofline_honours_figsize_and_dpi(tmp_path):
    out = plot_roofline(profile(), tmp_path / "small.png", figsize=(9, 6), dpi=50)
    assert out == tmp_path / "small.png"
    assert png_size(out) == (450, 300)


def test_the_figure_labels_ceilings_points_and_fusion_verdicts(tmp_path):
    text = texts(profile(hardware_name="box-7"))
    assert "box-7" in text and "Test CPU" in text and "2026-11-21" in text
    assert "arithmetic intensity (FLOP/byte)" in text and "GFLOP/s" in text
    assert "float32 compute 200 GFLOP/s" in text
    assert "peak (user) 400 GFLOP/s" in text
    assert "DRAM 40 GB/s" in text
    # the L2 triad call (1.6 us) lasts under 5 dispatches (2 us each): its rate is a per-call cost
    assert "L2 120 GB/s, per-call bound" in text
    # legend: families with counts, one entry per verdict
    assert "matmul (2)" in text and "conv (1)" in text and "elementwise (1)" in text
    assert "fuse (1)" in text and "avoid (1)" in text
    # stream_copy has no FLOPs: skipped and said so; dispatch is a note, not a point
    assert "1 entry with no FLOPs (pure copies) not shown" in text
    assert "dispatch overhead 2.0 µs/call" in text


def test_a_profile_without_fusion_data_plots(tmp_path):
    path = profile(fusion=False).save(tmp_path / "p.json")
    out = tmp_path / "roofline.png"
    assert main(["plot", str(path), "-o", str(out)]) == 0
    assert png_size(out) == (1440, 960)
    assert "Fusion" not in texts(profile(fusion=False))


def test_a_profile_without_ceilings_plots_and_says_so(tmp_path):
    cal = fold([conv()], metadata())
    assert not cal.measured.compute_ceiling_gflops and not cal.measured.bandwidth_by_level_gbps
    path = cal.save(tmp_path / "conv.json")
    out = tmp_path / "roofline.png"
    assert main(["plot", str(path), "-o", str(out)]) == 0
    assert png_size(out) == (1440, 960)
    text = texts(cal)
    assert "no measured ceilings" in text and "GB/s" not in text


def test_an_empty_profile_plots(tmp_path):
    out = plot_roofline(fold([], metadata()), tmp_path / "empty.png")
    assert png_size(out) == (1440, 960)


def test_compare_overlays_a_second_profile(tmp_path, capsys):
    first = profile(hardware_name="box-a").save(tmp_path / "a.json")
    second = fold([conv(), operations()[0]], metadata(hardware_name="box-b")).save(tmp_path / "b.json")
    out = tmp_path / "both.png"
    assert main(["plot", str(first), "--compare", str(second), "-o", str(out)]) == 0
    assert png_size(out) == (2160, 960)
    # the second machine: matmul at 300 GFLOPS, no bandwidth measured
    faster = record("matmul", 2 * 1024**3 / 300e9 * 1e3, M=1024, K=1024, N=1024, path="aten")
    text = texts(profile(hardware_name="box-a"), other=fold([conv(), faster], metadata(hardware_name="box-b")),
                 labels=("a.json: box-a", "b.json: box-b"))
    assert "box-a vs box-b" in text
    assert "a.json: box-a" in text and "b.json: box-b" in text
    assert "conv (1 / 1)" in text and "matmul (2 / 1)" in text
    # a ceiling both have is labelled once with both values; one only the first has, plainly
    assert "float32 compute 200 GFLOP/s (vs 300)" in text
    assert "DRAM 40 GB/s" in text and "(vs 40" not in text


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "no such profile"), ("{", "not valid JSON"), ('{"schema_version": 99}', "schema_version")],
)
def test_a_missing_or_corrupt_profile_exits_2_with_the_reason(tmp_path, capsys, content, reason):
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "roofline.png"
    assert main(["plot", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and reason in err
    assert not out.exists()


def test_a_corrupt_compare_profile_exits_2(tmp_path, capsys):
    good = profile().save(tmp_path / "p.json")
    bad = tmp_path / "other.json"
    bad.write_text("[]")
    assert main(["plot", str(good), "--compare", str(bad), "-o", str(tmp_path / "r.png")]) == 2
    assert "other.json: expected a JSON object" in capsys.readouterr().err


def test_a_dtype_the_profile_lacks_exits_2(tmp_path, capsys):
    path = profile().save(tmp_path / "p.json")
    assert main(["plot", str(path), "--dtype", "bfloat16", "-o", str(tmp_path / "r.png")]) == 2
    assert "no bfloat16 entries to plot; the profile has float32" in capsys.readouterr().err


def test_an_unwritable_output_exits_2(tmp_path, capsys):
    path = profile().save(tmp_path / "p.json")
    out = tmp_path / "missing-dir" / "r.png"
    assert main(["plot", str(path), "-o", str(out)]) == 2
    assert f"cannot write {out}" in capsys.readouterr().err


def test_missing_matplotlib_exits_2_with_the_install_hint(tmp_path, capsys, monkeypatch):
    path = profile().save(tmp_path / "p.json")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    out = tmp_path / "r.png"
    assert main(["plot", str(path), "-o", str(out)]) == 2
    assert INSTALL_HINT in capsys.readouterr().err
    assert INSTALL_HINT == "matplotlib is not installed: pip install 'calibration[plot]'"
    assert not out.exists()


# --------------------------------------------------------------------------- what the picture shows


def conv_outlier():
    """A depthwise convolution at 4 GFLOP/s, 2.2 FLOP/byte: 4.5% of its roof, the DRAM ceiling's
    40 GB/s x 2.2 (its working set's level, L3, has no measured ceiling)."""
    flops = 2 * 144 * 56 * 56 * 9
    return record("conv2d", flops / 4e9 * 1e3, N=1, CIN=144, COUT=144, H=56, W=56, K=3, STRIDE=1, PAD=1,
                  GROUPS=144)


def test_fusion_arrows_get_a_panel_of_their_own():
    fig = draw_roofline(profile())
    operations_panel, fusion_panel = fig.axes[:2]

    def arrows(ax):
        return [a for a in ax.texts if getattr(a, "arrow_patch", None) is not None and not a.get_text()]

    assert len(arrows(fusion_panel)) == 2 and arrows(operations_panel) == []
    assert operations_panel.collections and not fusion_panel.collections  # the points: scatter collections
    assert operations_panel.get_title() == "Operations" and fusion_panel.get_title().startswith("Fusion")
    assert len(draw_roofline(profile(fusion=False)).axes) == 1


def test_points_far_below_their_roof_are_labelled_by_name():
    cal = fold(operations() + [conv_outlier()], metadata())
    text = texts(cal)
    assert "conv2d[N=1,CIN=144,COUT=144,\nH=56,W=56,K=3,STRIDE=1,PAD=1,\nGROUPS=144]\n4 GFLOP/s, 4.5% of roof" in text
    labelled = [line for line in text.splitlines() if "% of roof" in line]
    assert len(labelled) == 1  # the matmuls, triads and add run near their roofs
    busy = fold(operations() + [replace(conv_outlier(), other_cpus=1.5)], metadata())
    assert "GROUPS=144]\n4 GFLOP/s, 4.5% of roof, timed while busy" in texts(busy)


def test_only_the_plotted_dtype_has_a_compute_roof():
    bf16 = record("matmul", 2 * 1024**3 / 400e9 * 1e3, dtype="bfloat16", M=1024, K=1024, N=1024, path="aten")
    cal = fold(operations() + [bf16], metadata())
    text = texts(cal)
    assert "float32 compute 200 GFLOP/s" in text and "bfloat16 compute" not in text
    assert "compute ceilings of bfloat16 not drawn (--dtype bfloat16)" in text
    assert "bfloat16 compute 400 GFLOP/s" in texts(cal, dtype="bfloat16")


def test_notes_sit_beside_the_axes_and_compare_labels_stay_inside_them():
    other = fold([conv(), record("matmul", 2 * 1024**3 / 300e9 * 1e3, M=1024, K=1024, N=1024, path="aten"),
                  record("stream_triad", 3 * 4 * (1 << 10) / 7e9 * 1e3, n=1 << 10)], metadata(hardware_name="b"))
    fig = draw_roofline(profile(hardware_name="a"), other=other)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        box = ax.get_window_extent()
        assert not any("not shown" in t.get_text() for t in ax.texts)  # the notes are in the legend
        labels = [t for t in ax.texts if "GB/s" in t.get_text() or "GFLOP/s" in t.get_text()]
        assert labels
        for label in labels:  # no ceiling label cut off at the edge, the L1 one included
            extent = label.get_window_extent(renderer)
            assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, \
                label.get_text()

