"""Every plot of lessons 05 to 07 draws what it is given: one line or bar per series, their data,
their labels and titles; and the fixes a reader would notice hold."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from labtools.plots import apps


def circle(center: tuple[float, float], radius: float):
    return lambda t: (center[0] + radius * math.cos(t), center[1] + radius * math.sin(t))


def only_axes(fig: Figure) -> Axes:
    assert isinstance(fig, Figure) and len(fig.axes) == 1, fig.axes
    return fig.axes[0]


def legend(ax: Axes) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def xy(line) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    return [float(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()]


def bars(ax: Axes) -> tuple[list[str], list[float]]:
    """(category labels, heights) of the bars of ``ax``, left to right."""
    ax.figure.canvas.draw()  # categorical tick labels are only set once drawn
    patches = sorted(ax.patches, key=lambda p: p.get_x())
    return [tick.get_text() for tick in ax.get_xticklabels()], [p.get_height() for p in patches]


def test_votes_over_time() -> None:
    """One step line per band, from the first band-list's time, with the votes as received."""
    received = [(10.0, "band-list", [{"id": "a", "name": "A", "votes": 0}]),
                (10.5, "band-delta", {"id": "a", "votes": 7}),  # not a band-list: not drawn
                (11.0, "band-list", [{"id": "a", "name": "A", "votes": 1}, {"id": "b", "name": "B", "votes": 0}]),
                (12.0, "band-list", [{"id": "a", "name": "A", "votes": 1}, {"id": "b", "name": "B", "votes": 3}])]
    ax = only_axes(apps.votes_over_time(received))
    assert len(ax.lines) == 2
    a, b = ax.lines
    assert xy(a) == ([0.0, 1.0, 2.0], [0, 1, 1])
    assert xy(b) == ([1.0, 2.0], [0, 3])
    assert {line.get_drawstyle() for line in ax.lines} == {"steps-post"}
    assert legend(ax) == ["A", "B"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("time (s)", "votes")
    assert "band-list" in ax.get_title()


def test_bytes_per_vote() -> None:
    """The whole list grows with the bands, the delta does not: two lines over the band counts."""
    rows = [{"bands": 4, "full_bytes": 240, "delta_bytes": 68}, {"bands": 16, "full_bytes": 855, "delta_bytes": 68}]
    ax = only_axes(apps.bytes_per_vote(rows))
    full, delta = ax.lines
    assert xy(full) == ([4, 16], [240, 855])
    assert xy(delta) == ([4, 16], [68, 68])
    assert legend(ax) == ["whole list (band-list)", "only the change (band-delta)"]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert ax.get_xlabel() == "bands in the list" and ax.get_ylabel().startswith("bytes per vote")


def test_drift_has_whole_ticks_only() -> None:
    fig = apps.drift({"whole list": [0, 1, 0, 0], "deltas": [0, 1, 1, 1]}, missed=2)
    ax = only_axes(fig)
    for ticks in (ax.get_yticks(), ax.get_xticks()):
        assert all(float(t).is_integer() for t in ticks), ticks
    whole, deltas, lost = ax.lines
    assert xy(whole) == ([1, 2, 3, 4], [0, 1, 0, 0])  # update 1 is the first received
    assert xy(deltas) == ([1, 2, 3, 4], [0, 1, 1, 1])
    assert [float(x) for x in lost.get_xdata()] == [2, 2]  # the vertical line at the missed update
    assert legend(ax) == ["whole list", "deltas", "update 2 lost"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("updates received", "votes off (+ bands missing)")


def test_latency_histogram_shares_its_bins() -> None:
    samples = {"http": [0.5, 0.7, 0.9, 3.0], "socket": [0.08, 0.1, 0.12, 0.3, 0.3]}
    fig = apps.latency_histogram(samples, bins=10)
    ax = only_axes(fig)
    assert ax.get_xscale() == "log"
    edges = [sorted({round(p.get_x(), 9) for p in container}) for container in ax.containers]
    assert len(edges) == 2 and edges[0] == edges[1] and len(edges[0]) == 10
    assert edges[0][0] == 0.08  # the bins start at the smallest sample of all
    counts = [sum(p.get_height() for p in container) for container in ax.containers]
    assert counts == [4, 5]  # every sample of each series is in one of its bars
    assert legend(ax) == ["http", "socket"]
    assert ax.get_ylabel() == "requests" and "milliseconds" in ax.get_xlabel()


def test_tickets_per_desk() -> None:
    """One bar per desk, in desk order, as tall as the number of tickets it called."""
    ax = only_axes(apps.tickets_per_desk({3: [5], 1: [1, 3, 4], 2: [2, 6]}))
    assert bars(ax) == (["1", "2", "3"], [3, 2, 1])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("desk", "tickets")
    assert "Tickets each desk called" in ax.get_title()


def test_marker_paths_draws_the_true_path_on_top() -> None:
    session = {"paths": [circle((0, 0), 20), circle((60, 10), 20)], "seconds": 1.0,
               "seen": [[(0.0, 20, 0), (0.5, 17, 9)], [(0.0, 80, 10)]]}
    fig = apps.marker_paths(session)
    ax = only_axes(fig)
    lines = [line for line in ax.lines if line.get_linestyle() == "-"]
    dots = [line for line in ax.lines if line.get_linestyle() == "None"]
    assert len(lines) == 2 and len(dots) == 2
    assert min(line.get_zorder() for line in lines) > max(dot.get_zorder() for dot in dots)
    labels = legend(ax)
    assert labels == ["user-0: 2 updates received", "user-1: 1 updates received", "true path"]
    # The dots are the positions received, (longitude, latitude); the lines follow each path.
    assert [xy(dot) for dot in dots] == [([20, 17], [0, 9]), ([80], [10])]
    for line, (cx, cy) in zip(lines, [(0, 0), (60, 10)], strict=True):
        xs, ys = xy(line)
        assert all(math.isclose(math.hypot(x - cx, y - cy), 20) for x, y in zip(xs, ys, strict=True))
        assert (xs[0], ys[0]) == pytest.approx((cx + 20, cy))  # t = 0
    assert (ax.get_xlim(), ax.get_ylim()) == ((-180, 180), (-90, 90))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("longitude (°)", "latitude (°)")


def test_throttle_tradeoff() -> None:
    rows = [{"label": "none", "updates_per_s": 120, "error_deg": 0.5},
            {"label": "50 ms", "updates_per_s": 20, "error_deg": 2.7}]
    fig = apps.throttle_tradeoff(rows)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    left, right = fig.axes
    assert bars(left) == (["none", "50 ms"], [120, 20])  # messages: fewer with a throttle
    assert bars(right) == (["none", "50 ms"], [0.5, 2.7])  # error: larger with a throttle
    assert left.get_ylabel() == "updates per second" and right.get_ylabel() == "mean error (degrees)"
    assert left.get_title() == "Messages per dragging user"


def test_figures_are_finished() -> None:
    """``finish`` takes each figure out of pyplot, so a cell shows it once."""
    apps.tickets_per_desk({1: [1]})
    assert plt.get_fignums() == []
