"""Plots for lesson 11 (several nodes): latency by path, and CPU per process per delivery."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .figures import finish


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
    ax.legend(loc="lower right", fontsize="small")
    return finish(fig)
