"""Every plot of lessons 05 to 07 returns a finished Figure; the fixes a reader would notice hold."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from labtools.plots import apps


def circle(center: tuple[float, float], radius: float):
    return lambda t: (center[0] + radius * math.cos(t), center[1] + radius * math.sin(t))


def test_votes_over_time() -> None:
    received = [(0.0, "band-list", [{"id": "a", "name": "A", "votes": 0}]),
                (0.5, "band-list", [{"id": "a", "name": "A", "votes": 1}])]
    assert isinstance(apps.votes_over_time(received), Figure)


def test_bytes_per_vote() -> None:
    rows = [{"bands": 4, "full_bytes": 240, "delta_bytes": 68}, {"bands": 16, "full_bytes": 855, "delta_bytes": 68}]
    assert isinstance(apps.bytes_per_vote(rows), Figure)


def test_drift_has_whole_ticks_only() -> None:
    fig = apps.drift({"whole list": [0, 1, 0, 0], "deltas": [0, 1, 1, 1]}, missed=2)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    for ticks in (ax.get_yticks(), ax.get_xticks()):
        assert all(float(t).is_integer() for t in ticks), ticks


def test_latency_histogram_shares_its_bins() -> None:
    fig = apps.latency_histogram({"http": [0.5, 0.7, 0.9, 3.0], "socket": [0.08, 0.1, 0.12, 0.3]}, bins=10)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    edges = [sorted({round(p.get_x(), 9) for p in container}) for container in ax.containers]
    assert len(edges) == 2 and edges[0] == edges[1] and len(edges[0]) == 10


def test_tickets_per_desk() -> None:
    assert isinstance(apps.tickets_per_desk({1: [1, 3], 2: [2, 4]}), Figure)


def test_marker_paths_draws_the_true_path_on_top() -> None:
    session = {"paths": [circle((0, 0), 20), circle((60, 10), 20)], "seconds": 1.0,
               "seen": [[(0.0, 20, 0), (0.5, 17, 9)], [(0.0, 80, 10)]]}
    fig = apps.marker_paths(session)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    lines = [line for line in ax.lines if line.get_linestyle() == "-"]
    dots = [line for line in ax.lines if line.get_linestyle() == "None"]
    assert len(lines) == 2 and len(dots) == 2
    assert min(line.get_zorder() for line in lines) > max(dot.get_zorder() for dot in dots)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels[-1] == "true path" and labels[0].startswith("user-0")


def test_throttle_tradeoff() -> None:
    rows = [{"label": "none", "updates_per_s": 120, "error_deg": 0.5},
            {"label": "50 ms", "updates_per_s": 20, "error_deg": 2.7}]
    assert isinstance(apps.throttle_tradeoff(rows), Figure)


def test_figures_are_finished() -> None:
    """``finish`` takes each figure out of pyplot, so a cell shows it once."""
    apps.tickets_per_desk({1: [1]})
    assert plt.get_fignums() == []
