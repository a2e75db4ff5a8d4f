"""The benchmark's figures: panels per batch size, markers per kind, labels that do not collide, grouped bars.

Rows are synthetic (tests/bench_rows.py), so every count below follows from them; nothing is timed.
"""

from __future__ import annotations

import itertools

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from bench_rows import DENSE_WIDTHS, row, sweep  # noqa: E402

from lightning_prune.bench.figures import style  # noqa: E402
from lightning_prune.bench.figures.accuracy import accuracy_error, accuracy_latency_figure  # noqa: E402
from lightning_prune.bench.figures.labels import overlap, place_labels  # noqa: E402
from lightning_prune.bench.figures.speedup import speedup_figure  # noqa: E402
from lightning_prune.bench.figures.widths import width_groups, widths_figure  # noqa: E402
from lightning_prune.bench.plots import PLOT_FILES, write_plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_labels_of_coinciding_points_do_not_overlap_and_stay_inside():
    anchors = [(0.5, 0.5)] * 6 + [(0.98, 0.98)]  # six points on top of each other, one in a corner
    sizes = [(0.06, 0.04)] * 7
    centres = place_labels(anchors, sizes)
    boxes = [(x - w / 2, y - h / 2, x + w / 2, y + h / 2) for (x, y), (w, h) in zip(centres, sizes, strict=True)]
    assert all(overlap(a, b) == 0 for a, b in itertools.combinations(boxes, 2))
    assert all(0 <= b[0] and b[2] <= 1 and 0 <= b[1] and b[3] <= 1 for b in boxes)
    corner = boxes[-1]
    assert corner[2] <= 0.98 and corner[3] <= 0.98  # pushed to the lower left, inside the axes


def test_labels_avoid_obstacles_and_reject_bad_input():
    bar = (0.5, 0.49, 0.9, 0.51)  # an error bar to the right of the point
    (centre,) = place_labels([(0.5, 0.5)], [(0.1, 0.05)], obstacles=[bar])
    box = (centre[0] - 0.05, centre[1] - 0.025, centre[0] + 0.05, centre[1] + 0.025)
    assert overlap(box, bar) == 0
    with pytest.raises(ValueError, match="2 anchors but 1 sizes"):
        place_labels([(0, 0), (1, 1)], [(0.1, 0.1)])
    with pytest.raises(ValueError, match="rings"):
        place_labels([(0, 0)], [(0.1, 0.1)], rings=0)


def test_panels_pair_the_smallest_and_the_largest_batch_size():
    assert style.panel_batch_sizes([256, 1, 8]) == [1, 256]
    assert style.panel_batch_sizes(16) == [16]
    with pytest.raises(ValueError, match="batch_sizes"):
        style.panel_batch_sizes([0])
    assert style.dodge(3, 0.1) == pytest.approx([-0.1, 0.0, 0.1])
    assert "overhead" in style.panel_title("m", 1, 2) and style.panel_title("m", 256, 1) == "m: batch 256, 1 thread"


def test_accuracy_figure_has_a_panel_per_model_and_batch_size_with_kind_markers_and_free_labels():
    rows = sweep("a") + sweep("b")
    fig = accuracy_latency_figure(plt, rows, [1, 256], "ratio")
    axes = fig.axes
    assert len(axes) == 4
    assert [ax.get_title() for ax in axes] == [style.panel_title(m, b, 2) for m in ("a", "b") for b in (1, 256)]
    ax = axes[1]
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["dense", "magnitude (structural)", "taylor (structural)", "masking (masking)", "Pareto front"]
    ratio_labels = [t for t in ax.texts if t.get_text() in {"0.3", "0.5"}]
    assert len(ratio_labels) == 6  # 3 methods x 2 ratios, the structural ones on identical points
    fig.canvas.draw()
    extents = [t.get_window_extent() for t in ratio_labels]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(extents, 2))
    error_bars = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(error_bars) == 4  # dense and three methods


def test_accuracy_error_is_the_binomial_standard_error():
    r = row("magnitude", "structural", 0.5, 1.0, 0.9)
    assert accuracy_error(r) == pytest.approx(100 * (0.9 * 0.1 / 360) ** 0.5)
    r.accuracy_samples = None
    assert accuracy_error(r) == 0.0


def test_speedup_figure_marks_noise_hollow_and_measured_speedups_filled():
    fig = speedup_figure(plt, sweep(), [1, 256], "ratio")
    assert len(fig.axes) == 3  # batch 1, batch 256, MACs kept
    ax = fig.axes[1]
    assert "batch 256" in ax.get_title()
    collections = {c.get_label(): c for c in ax.collections if not c.get_label().startswith("_")}
    masking = collections["masking (masking)"]
    assert tuple(masking.get_facecolor()[0]) == (1.0, 1.0, 1.0, 1.0)
    assert len(masking.get_offsets()) == 2  # both masking points are within the noise: hollow
    structural = collections["magnitude (structural)"]
    assert len(structural.get_offsets()) == 2 and tuple(structural.get_facecolor()[0]) != (1.0, 1.0, 1.0, 1.0)


def test_width_groups_are_fractions_kept_at_the_most_pruned_ratio():
    groups = width_groups(sweep(), "m", "ratio")
    assert groups.layers == tuple(DENSE_WIDTHS)
    assert [(m, r) for m, r, _ in groups.series] == [("magnitude", 0.5), ("taylor", 0.5)]
    assert groups.series[0][2] == (0.5, 0.5, 0.5, 1.0)
    assert groups.unchanged == ("masking",)
    fig = widths_figure(plt, sweep(), "ratio")
    (ax,) = fig.axes
    assert len(ax.patches) == len(DENSE_WIDTHS) * 2  # one bar per layer and drawn method
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "stem.0 (32)"
    assert "masking" in ax.get_title()


def test_width_groups_leave_out_unchanged_layers_first_when_there_are_too_many():
    dense_w = {f"l{i}": 8 for i in range(10)}
    pruned_w = {**dense_w, "l2": 4, "l5": 2}
    rows = [row("dense", "dense", None, 1.0, None, widths=dense_w),
            row("magnitude", "structural", 0.5, 0.5, None, (1.9, 2.0, 2.1), pruned_w)]
    groups = width_groups(rows, "m", "ratio", max_layers=3)
    assert groups.layers == ("l2", "l5") and groups.total_layers == 10
    assert groups.series[0][2] == (0.5, 0.25)
    with pytest.raises(ValueError, match="max_layers"):
        width_groups(rows, "m", "ratio", max_layers=0)
    assert width_groups([rows[1]], "m", "ratio") is None  # no dense row


def test_write_plots_writes_every_file(tmp_path):
    paths = write_plots(sweep(), tmp_path, [1, 256], "ratio")
    assert [p.name for p in paths] == list(PLOT_FILES)
    assert all(p.stat().st_size > 1000 for p in paths)
