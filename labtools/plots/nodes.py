"""Plots for lesson 11 (several nodes): latency by path, CPU per process per delivery, and a
recorded chaos run. Log axes are labelled with plain numbers ("0.3", "20"), never "3×10⁻¹"."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .figures import finish


def plain(value: float, _position: float | None = None) -> str:
    """A tick of a log axis as a learner reads it: 0.3, 2, 50, 1,000 (no powers of ten)."""
    return f"{value:,.0f}" if value >= 1 else f"{value:.4f}".rstrip("0")


def plain_log_ticks(axis: Any) -> None:
    """Ticks at 1, 2 and 5 times each power of ten, in plain numbers (a log axis's default reads
    "3×10⁻¹"); the minor ticks stay as marks without labels."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(plain))
    axis.set_minor_formatter(NullFormatter())


def latency_by_path(samples_ms: dict[str, list[float]],
                    title: str = "Pedro's send to Ana's receipt, one message at a time") -> Figure:
    """One empirical CDF per path a message took (log x): medians and tails compare at a glance."""
    fig, ax = plt.subplots(figsize=(7, 3.3))
    for label, values in samples_ms.items():
        ordered = np.sort(values)
        ax.step(ordered, np.arange(1, len(ordered) + 1) / len(ordered), where="post",
                label=f"{label} (median {np.median(ordered):.2f} ms)")
    ax.set(xscale="log", ylim=(0, 1.02), title=title,
           xlabel="milliseconds (log scale)", ylabel="fraction of messages")
    plain_log_ticks(ax.xaxis)
    ax.legend(loc="lower right", fontsize="small")
    return finish(fig)


def cpu_per_delivery(runs: dict[str, dict[str, Any]]) -> Figure:
    """Per setup, the CPU microseconds each server process spent per delivered message, stacked."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    labels = list(runs)
    names = sorted({name for run in runs.values() for name in run["cpu"]}, key=lambda n: (n == "redis", n))
    left = np.zeros(len(labels))
    for name in names:
        per = np.array([1e6 * run["cpu"].get(name, 0.0) / (run["messages"] * run["listeners"])
                        for run in runs.values()])
        ax.barh(labels, per, left=left, label=name)
        left += per
    ax.set(title="Server CPU per delivered message, by process", xlabel="CPU µs per delivery")
    ax.invert_yaxis()
    ax.legend(title="process", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars
    return finish(fig)


def chaos_latency(latency: list[dict[str, Any]], recorded: str | None = None) -> Figure:
    """A recorded chaos run's acknowledgement p99 per kind of fault and app (``benchmarks/chaos.py``'s
    ``latency`` rows: one per phase and app), the worst phase of each kind, survivors only (acked
    at the first attempt): how slow the users not cut off got while the fault lasted (log y).
    ``recorded`` (when and where it ran) goes in the title: a recorded figure says so."""
    kinds: dict[str, dict[str, float]] = {}
    for row in latency:
        if row["p99_ms"] is None:
            continue
        kind = "baseline" if row["phase"] == "baseline" else row["phase"].split(" ")[1]
        worst = kinds.setdefault(kind, {})
        worst[row["app"]] = max(worst.get(row["app"], 0.0), row["p99_ms"])
    apps = sorted({app for worst in kinds.values() for app in worst})
    fig, ax = plt.subplots(figsize=(7.5, 3.3))
    width = 0.8 / max(1, len(apps))
    for k, app in enumerate(apps):
        ax.bar(np.arange(len(kinds)) + (k - (len(apps) - 1) / 2) * width,
               [worst.get(app, np.nan) for worst in kinds.values()], width, label=app)
    ax.set_xticks(np.arange(len(kinds)), list(kinds), rotation=20)
    ax.set(yscale="log", ylabel="ack p99, ms (log scale)",
           title="Acknowledgement p99 while each kind of fault lasted (worst phase)"
           + (f"\nrecorded {recorded}" if recorded else ""))
    plain_log_ticks(ax.yaxis)
    ax.legend(title="app", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return finish(fig)
