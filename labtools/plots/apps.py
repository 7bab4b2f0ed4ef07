"""Plots for lessons 05 to 07 (band votes, ticket queue, live map): each returns its figure."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .figures import finish


def votes_over_time(received: list[tuple[float, str, Any]]) -> Figure:
    """One line per band: its votes as a watcher saw them, from the ``band-list`` stream."""
    lists = [(t, data) for t, event, data in received if event == "band-list"]
    t0 = lists[0][0]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = {band["id"]: band["name"] for _t, bands in lists for band in bands}
    for band_id, name in names.items():
        points = [(t - t0, b["votes"]) for t, bands in lists for b in bands if b["id"] == band_id]
        ax.step([p[0] for p in points], [p[1] for p in points], where="post", label=name)
    ax.set(title="Votes as one watcher saw them, one band-list at a time", xlabel="time (s)", ylabel="votes")
    ax.legend(loc="upper left", fontsize="small")
    return finish(fig)


def bytes_per_vote(rows: list[dict[str, float]]) -> Figure:
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    sizes = [r["bands"] for r in rows]
    ax.plot(sizes, [r["full_bytes"] for r in rows], "o-", label="whole list (band-list)")
    ax.plot(sizes, [r["delta_bytes"] for r in rows], "s-", label="only the change (band-delta)")
    ax.set(xscale="log", yscale="log", title="Bytes one watcher receives per vote",
           xlabel="bands in the list", ylabel="bytes per vote (socket, framing included)")
    ax.legend()
    return finish(fig)


def drift(errors: dict[str, list[int]], missed: int) -> Figure:
    """Per update, how far each client's list is from the server's: whole votes and bands, so whole ticks."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for label, values in errors.items():
        ax.step(range(1, len(values) + 1), values, where="post", label=label)
    ax.axvline(missed, color="grey", linestyle=":", label=f"update {missed} lost")
    ax.set(title="How wrong a client's list is after it missed one update",
           xlabel="updates received", ylabel="votes off (+ bands missing)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return finish(fig)


def latency_histogram(samples_ms: dict[str, list[float]], bins: int = 40) -> Figure:
    """Every series on the same bins, log-spaced over all the samples, so their bars compare."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    every = [v for values in samples_ms.values() for v in values]
    edges = np.geomspace(min(every), max(every), bins + 1)
    for label, values in samples_ms.items():
        ax.hist(values, bins=edges, alpha=0.6, label=label)
    ax.set(xscale="log", title="Round-trip time of one request (same bins for both)",
           xlabel="milliseconds (log scale)", ylabel="requests")
    ax.legend()
    return finish(fig)


def tickets_per_desk(by_desk: dict[int, list[int]]) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 3))
    desks = sorted(by_desk)
    ax.bar([str(d) for d in desks], [len(by_desk[d]) for d in desks], color="#3d6fd6")
    ax.set(title="Tickets each desk called (racing for the same queue)", xlabel="desk", ylabel="tickets")
    return finish(fig)


def marker_paths(session: dict[str, Any]) -> Figure:
    """The positions a watcher received (dots, one colour per user) under the true path (black line)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    handles = []
    for k, (path, seen) in enumerate(zip(session["paths"], session["seen"], strict=True)):
        ax.plot([s[1] for s in seen], [s[2] for s in seen], "o", color=f"C{k}", markersize=4, alpha=0.35,
                markeredgewidth=0, zorder=2)
        handles.append(Line2D([], [], marker="o", linestyle="", color=f"C{k}",
                              label=f"user-{k}: {len(seen)} updates received"))
        steps = [path(session["seconds"] * i / 200) for i in range(201)]
        ax.plot([p[0] for p in steps], [p[1] for p in steps], color="black", linewidth=1, zorder=3)
    handles.append(Line2D([], [], color="black", linewidth=1, label="true path"))
    ax.set(xlim=(-180, 180), ylim=(-90, 90), aspect="equal", xlabel="longitude (°)", ylabel="latitude (°)",
           title="Dragged markers: true path (line) and what a watcher received (dots)")
    ax.set_xticks(range(-180, 181, 30))
    ax.set_yticks(range(-90, 91, 30))
    ax.grid(alpha=0.4)
    ax.legend(handles=handles, loc="lower left", fontsize="small")
    return finish(fig)


def throttle_tradeoff(rows: list[dict[str, Any]]) -> Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    labels = [r["label"] for r in rows]
    left.bar(labels, [r["updates_per_s"] for r in rows], color="#3d6fd6")
    left.set(title="Messages per dragging user", ylabel="updates per second")
    right.bar(labels, [r["error_deg"] for r in rows], color="#d6803d")
    right.set(title="How far behind a watcher's marker is", ylabel="mean error (degrees)")
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize="small")
    return finish(fig)
