"""Figures for the lessons: each function takes measured results and returns a ``Figure``.

Plain matplotlib (no seaborn), titles that say what the figure shows, axes with units. A cell
ends with the returned figure (or ``plt.show()``); nothing here prints. The figures are closed
from pyplot's registry before they are returned, so a cell shows each figure exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ..measure.metrics import Trace, percentile
from .figures import finish

USEFUL = "#2b8cbe"
EMPTY = "#d9d9d9"
MODE_COLORS = {"poll": "#e6550d", "long-poll": "#31a354", "sse": "#3182bd", "websocket": "#756bb1"}


def _color(mode: str, i: int) -> str:
    return MODE_COLORS.get(mode, f"C{i}")


def _label(result: Any) -> str:
    return f"{result.mode}, {result.users:,} users"


LINESTYLES = ["-", "--", ":", "-."]

#: What the clients' byte counters hold, said wherever bytes are plotted.
BYTES_COUNTED = "counted at the clients' sockets; a request still held at the end counts its request only"


def _ms(value: float) -> str:
    """A latency for a label: "0.42 ms", "3.1 ms", "491 ms"."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f} ms" if value < 1 else f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def _log_bars(ax: Any, labels: Sequence[str], values: Sequence[float], colors: Sequence[str], fmt: str) -> None:
    """Bars on a log scale when the tallest is over 10× the shortest, each labelled with its value,
    so a bar next to a much taller one stays visible."""
    bars = ax.bar(labels, values, color=colors)
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8, padding=2)
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 10:
        ax.set_yscale("log")
        ax.set_ylim(min(positive) / 3, max(positive) * 4)
    else:
        ax.margins(y=0.15)


def requests_over_time(result: Any, bin_seconds: float = 0.5) -> Figure:
    """Answers per second over the run, stacked: the ones that carried messages vs ``[]``."""
    end = max([t for t, _n in result.timeline] + [result.duration])
    bins = max(1, math.ceil(end / bin_seconds))
    useful = [0] * bins
    empty = [0] * bins
    for t, n in result.timeline:
        i = min(bins - 1, max(0, int(t / bin_seconds)))
        (useful if n else empty)[i] += 1
    x = [i * bin_seconds for i in range(bins)]
    per_s = 1 / bin_seconds
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(x, [u * per_s for u in useful], width=bin_seconds, align="edge", color=USEFUL, label="with messages")
    ax.bar(x, [e * per_s for e in empty], width=bin_seconds, align="edge", bottom=[u * per_s for u in useful],
           color=EMPTY, edgecolor="#bdbdbd", linewidth=0.5, label="[] no new messages")
    ax.axvline(result.duration, color="black", linestyle=":", linewidth=1)
    ax.text(result.duration, ax.get_ylim()[1] * 0.97, " end of sending", va="top", fontsize=8)
    ax.set_xlabel("time since the start (s)")
    ax.set_ylabel("answers per second")
    ax.set_title(f"What the server answered: {_label(result)}")
    ax.legend(loc="lower right", framealpha=0.9)
    return finish(fig)


def useful_vs_empty(results: Sequence[Any]) -> Figure:
    """For each run, the share of answers that carried messages and the share that were ``[]``."""
    labels = [f"{_label(r)}\n{r.requests:,} requests" for r in results]
    empty = [100 * r.empty / r.requests if r.requests else 0 for r in results]
    useful = [100 - e for e in empty]
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.55 * len(results)))
    ax.barh(labels, useful, color=USEFUL, label="useful")
    ax.barh(labels, empty, left=useful, color=EMPTY, edgecolor="#bdbdbd", label="[] no new messages")
    for i, e in enumerate(empty):
        ax.text(99, i, f"{e:.1f} % empty", ha="right", va="center", fontsize=9)
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("share of each run's requests (%): every bar is 100 %, whatever its count")
    ax.set_title("How many requests were worth making (blue: with messages, grey: [] no new messages)", fontsize=10)
    return finish(fig)


def latency(results: Sequence[Any] | Any, kind: str = "ecdf") -> Figure:
    """Delivery latency (send → receipt, ms): an ECDF (``kind="ecdf"``) or a histogram.

    Each series gets its own colour (series index, not mode), so three crowds of the same mode
    stay apart; when they share one mode, the legend names them by their users.
    """
    if not isinstance(results, Sequence):
        results = [results]
    modes = {r.mode for r in results}
    same_mode = len(modes) == 1

    def name(r: Any) -> str:
        return f"{r.users:,} users" if same_mode else _label(r)

    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, r in enumerate(results):
        ms = sorted(v * 1000 for v in r.latency.values)
        if not ms:
            continue
        color = f"C{i}"
        if kind == "hist":
            ax.hist(ms, bins=30, alpha=0.6, color=color, label=name(r))
        else:
            ax.step(ms, [(k + 1) / len(ms) for k in range(len(ms))], where="post", color=color,
                    linestyle=LINESTYLES[i % len(LINESTYLES)], label=f"{name(r)} (p50 {_ms(percentile(ms, 50))})")
    ax.set_xlabel("delivery latency, send → receipt (ms)")
    ax.set_ylabel("share of messages" if kind == "ecdf" else "messages")
    if kind == "ecdf":
        ax.set_ylim(0, 1.02)
        if any(r.latency.values for r in results):
            lows = [min(r.latency.values) for r in results if r.latency.values]
            if max(v for r in results for v in r.latency.values) / max(min(lows), 1e-4) > 100:
                ax.set_xscale("log")
    title = "How long a message took to reach its reader"
    ax.set_title(f"{title} ({next(iter(modes))})" if same_mode and modes else title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return finish(fig)


def bytes_comparison(results: Sequence[Any]) -> Figure:
    """Bytes on the wire per run, both directions, as the clients and the server counted them."""
    labels = [_label(r) for r in results]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.38
    x = range(len(results))
    up = [r.client_bytes_out / 1000 for r in results]
    down = [r.client_bytes_in / 1000 for r in results]
    ax.bar([i - width / 2 for i in x], up, width, color="#fdae6b", label="clients → server")
    ax.bar([i + width / 2 for i in x], down, width, color="#6baed6", label="server → clients")
    for i, r in enumerate(results):
        server = (r.server_bytes_in + r.server_bytes_out) / 1000
        if server:
            ax.text(i, max(up[i], down[i]), f"server counted\n{server:,.0f} KB", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), labels, fontsize=9)
    ax.set_ylabel("kilobytes (headers included)")
    ax.margins(y=0.25)
    ax.set_title(f"Bytes on the wire ({BYTES_COUNTED})", fontsize=9)
    ax.legend(fontsize=8)
    return finish(fig)


def _time_format(events: Sequence[Any]) -> Any:
    """How a sequence diagram labels its rows: the trace's own elapsed times, in milliseconds
    when the rows shown span under two seconds, in seconds otherwise, with enough decimals that
    rows apart in time do not read the same."""
    times = [e.t for e in events]
    span = max(times) - min(times) if times else 0.0
    if span < 2.0 and (not times or max(times) < 10.0):
        decimals = 2 if span < 0.01 else 1 if span < 0.5 else 0
        return lambda t: f"{t * 1000:,.{decimals}f} ms"
    decimals = 1 if span >= 10 else 2
    return lambda t: f"{t:,.{decimals}f} s"


def sequence_diagram(trace: Trace, parties: Sequence[str] | None = None, limit: int = 40,
                     title: str = "Who asked whom, and what came back") -> Figure:
    """A sequence diagram from a ``Trace``: one lifeline per party, one arrow per message,
    time running down, each row labelled with when it happened (time since the trace started).
    Empty answers (labels starting with ``[]``) are drawn in grey."""
    events = trace.events()[:limit]
    if parties is None:
        names: list[str] = []
        for e in events:
            for p in (e.src, e.dst):
                if p not in names:
                    names.append(p)
        if "server" in names and len(names) == 3:  # Pedro → server → Ana reads left to right
            others = [n for n in names if n != "server"]
            names = [others[0], "server", others[1]]
        parties = names
    xs = {p: i for i, p in enumerate(parties)}
    stamp = _time_format(events)
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.36 * max(len(events), 3)))
    n = len(events)
    for p, x in xs.items():
        ax.plot([x, x], [-0.5, n + 0.3], color="#969696", linewidth=1, zorder=1)
        ax.text(x, -0.7, p, ha="center", va="bottom", fontsize=11, fontweight="bold",
                bbox={"boxstyle": "round", "facecolor": "#f0f0f0", "edgecolor": "#969696"})
    for k, e in enumerate(events):
        y = k + 0.5
        x0, x1 = xs.get(e.src), xs.get(e.dst)
        if x0 is None or x1 is None:
            continue
        grey = e.label.startswith("[]")
        color = "#a0a0a0" if grey else ("#d94801" if e.label.startswith("POST") else "#08519c")
        ax.annotate("", xy=(x1, y), xytext=(x0, y),
                    arrowprops={"arrowstyle": "->", "color": color, "linewidth": 1.2})
        label = e.label if len(e.label) <= 42 else e.label[:40] + "…"
        ax.text((x0 + x1) / 2, y - 0.08, label, ha="center", va="bottom", fontsize=8,
                color="#737373" if grey else "black")
        ax.text(-0.45, y, stamp(e.t), ha="right", va="center", fontsize=7, color="#737373")
    ax.set_xlim(-0.75, len(parties) - 0.4)
    ax.set_ylim(n + 0.5, -1.2)
    ax.axis("off")
    ax.set_title(title)
    return finish(fig)


def comparison(results: Sequence[Any]) -> Figure:
    """The same workload several ways: requests/s, bytes on the wire per second, latency p50/p99."""
    labels = [r.mode for r in results]
    colors = [_color(r.mode, i) for i, r in enumerate(results)]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    ax = axes[0]
    rates = [r.requests_per_second for r in results]
    _log_bars(ax, labels, rates, colors, "{:,.1f}")
    ax.set_ylabel("requests per second" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    ax.set_title("Requests")
    ax = axes[1]
    _log_bars(ax, labels, [r.bytes_total / r.duration / 1000 for r in results], colors, "{:,.1f}")
    ax.set_ylabel("KB per second (both ways)")
    ax.set_title("Bytes on the wire\n(clients' sockets, held requests: request only)", fontsize=9)
    ax = axes[2]
    x = range(len(results))
    p50 = [r.latency.summary()["p50_ms"] for r in results]
    p99 = [r.latency.summary()["p99_ms"] for r in results]
    ax.bar([i - 0.2 for i in x], p50, 0.4, color=colors, label="p50")
    ax.bar([i + 0.2 for i in x], p99, 0.4, color=colors, alpha=0.45, hatch="//", label="p99")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("delivery latency (ms)")
    finite50 = [v for v in p50 if not math.isnan(v)] or [1.0]
    finite99 = [v for v in p99 if not math.isnan(v)] or [1.0]
    if max(finite99) / max(min(finite50), 0.1) > 50:  # polling's ~500 ms next to push's ~2 ms
        ax.set_yscale("log")
    ax.set_title("Latency, send → receipt")
    ax.legend(fontsize=8)
    for a in axes:
        a.grid(axis="y", alpha=0.3)
    users = {r.users for r in results}
    fig.suptitle(f"Same workload, {len(results)} ways ({', '.join(f'{u:,}' for u in sorted(users))} users)")
    return finish(fig)


def held_over_time(results: Sequence[Any]) -> Figure:
    """How many requests or streams each run kept open at the server, over time."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for i, r in enumerate(results):
        if r.held:
            ax.plot([t for t, _ in r.held], [n for _, n in r.held], color=_color(r.mode, i), label=_label(r),
                    linestyle=LINESTYLES[i % len(LINESTYLES)], linewidth=3 - 0.6 * (i % 3))
    ax.set_xlabel("time since the start (s)")
    ax.set_ylabel("open requests / streams")
    ax.set_title("What the server holds open")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return finish(fig)


def cost_model(model_rows: Sequence[dict], measured: Sequence[Any]) -> Figure:
    """The polling cost model (lines) against measured crowds (dots), on log-log axes."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    users = [row["users"] for row in model_rows]
    for ax, key, scale, unit in ((axes[0], "requests/s", 1, "requests per second"),
                                 (axes[1], "bytes/s", 1e-6, "MB per second (both ways)")):
        ax.loglog(users, [row[key] * scale for row in model_rows], color="#636363", label="model")
        xs = [r.users for r in measured]
        if key == "requests/s":
            ys = [r.requests_per_second for r in measured]
        else:
            ys = [r.bytes_total / r.duration * scale for r in measured]
        ax.loglog(xs, ys, "o", color="#e6550d", markersize=8, label="measured")
        ax.set_xlabel("users polling")
        ax.set_ylabel(unit)
        ax.grid(which="both", alpha=0.25)
        ax.legend()
    axes[0].set_title("Requests the server must answer")
    axes[1].set_title("Bytes it must move")
    return finish(fig)


def reconnection_herd(runs: dict[str, dict[str, Any]]) -> Figure:
    """Lesson 10's thundering herd: one panel per run of ``sim.reconnect.herd``.

    Grey bars count attempts by when they started, green bars reconnections by when they
    completed; the title's "everyone back" is the end of the last green bar, and a dashed line
    marks it, so that title and bars say the same thing.
    """
    fig, axes = plt.subplots(1, len(runs), figsize=(11, 3.4), sharey=True, squeeze=False)
    for ax, (label, run) in zip(axes[0], runs.items(), strict=True):
        width = run["bin ms"] / 1000
        ax.bar(run["t"], run["attempts"], width=width, align="edge", color="#bbb", label="attempts (when they start)")
        ax.bar(run["t"], run["reconnections"], width=width, align="edge", color="#2a7",
               label="reconnections (when they complete)")
        ax.axvspan(0, run["server back at s"], color="#f4d4d4", zorder=0, label="server down")
        back = run["all reconnected after s"]
        if back is not None:
            ax.axvline(back, color="#555", linestyle="--", linewidth=1, label="everyone back")
        watched = len(run["t"]) * width
        ax.set_title(f"{label}: " + (f"everyone back after {back:.2f} s" if back else f"not all back in {watched:g} s"))
        ax.set_xlabel("seconds since the server stopped")
        ax.set_xlim(0, watched)
    first = next(iter(runs.values()))
    axes[0][0].set_ylabel(f"per {first['bin ms']:.0f} ms ({first['clients']} clients)")
    axes[0][-1].legend(loc="upper right", fontsize="small")
    return finish(fig)
