"""The crowd figures: each returns a Figure whose labels say what it shows."""

from __future__ import annotations

from matplotlib.figure import Figure

from labtools.measure.metrics import Trace, TraceEvent
from labtools.plots import traffic
from labtools.sim.crowd import CrowdResult


def crowd(mode: str, users: int, rate: float, latency_s: float) -> CrowdResult:
    result = CrowdResult(users=users, mode=mode, duration=2.0, interval=1.0, wait=0.0, rate=5, seed=1)
    result.requests = result.requests_in_window = int(rate * 2)
    result.empty = result.requests // 2
    result.client_bytes_in, result.client_bytes_out = 40_000, 20_000
    for k in range(20):
        result.latency.add(latency_s * (1 + k / 20))
    result.held = [(0.0, users), (1.0, users)]
    return result


def texts(fig: Figure) -> str:
    parts = []
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        parts += [t.get_text() for t in ax.texts]
        parts += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        legend = ax.get_legend()
        if legend is not None:
            parts += [t.get_text() for t in legend.get_texts()]
    if fig._suptitle is not None:
        parts.append(fig._suptitle.get_text())
    return "\n".join(parts)


class Recorded(Trace):
    """A trace with given times, as if recorded."""

    def __init__(self, events: list[TraceEvent]) -> None:
        super().__init__()
        self.given = events

    def events(self) -> list[TraceEvent]:
        return list(self.given)


MODES = [crowd("poll", 50, 100, 0.5), crowd("long-poll", 50, 5, 0.002), crowd("sse", 50, 2.5, 0.001)]


def test_latency_of_one_mode_colours_by_series_and_labels_by_users() -> None:
    fig = traffic.latency([crowd("poll", n, n, 0.5) for n in (10, 100, 1000)])
    assert isinstance(fig, Figure)
    lines = fig.axes[0].get_lines()
    assert len({line.get_color() for line in lines}) == 3
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [label.split(" (")[0] for label in legend] == ["10 users", "100 users", "1,000 users"]
    assert "(poll)" in fig.axes[0].get_title()


def test_latency_of_several_modes_names_each_mode() -> None:
    legend = texts(traffic.latency(MODES))
    assert "poll, 50 users" in legend and "sse, 50 users" in legend and "ms)" in legend


def test_comparison_shows_small_bars_next_to_polling() -> None:
    fig = traffic.comparison(MODES)
    assert isinstance(fig, Figure)
    requests = fig.axes[0]
    assert requests.get_yscale() == "log" and "log scale" in requests.get_ylabel()
    assert [t.get_text() for t in requests.texts] == ["100.0", "5.0", "2.5"]
    assert "held requests" in fig.axes[1].get_title()
    assert "Same workload, 3 ways" in texts(fig)


def test_comparison_of_close_values_stays_linear() -> None:
    fig = traffic.comparison([crowd("sse", 50, 2.5, 0.001), crowd("websocket", 50, 2.5, 0.001)])
    assert fig.axes[0].get_yscale() == "linear"


def test_useful_vs_empty_and_bytes_say_what_they_count() -> None:
    shares = texts(traffic.useful_vs_empty(MODES))
    assert "200 requests" in shares and "5 requests" in shares and "50.0 % empty" in shares
    assert "counted at the clients' sockets" in texts(traffic.bytes_comparison(MODES))
    assert "open requests / streams" in texts(traffic.held_over_time(MODES))


def test_sequence_diagram_labels_rows_with_elapsed_times() -> None:
    trace = Recorded([TraceEvent(0.0012 * k, "Pedro" if k % 2 else "server", "server" if k % 2 else "Ana", "hi")
                      for k in range(1, 7)])
    labels = [t.get_text() for t in traffic.sequence_diagram(trace).axes[0].texts if t.get_text().endswith("ms")]
    assert labels == ["1.20 ms", "2.40 ms", "3.60 ms", "4.80 ms", "6.00 ms", "7.20 ms"]
    trace = Recorded([TraceEvent(0.5 * k, "Pedro", "server", "GET") for k in range(8)])
    labels = [t.get_text() for t in traffic.sequence_diagram(trace).axes[0].texts if t.get_text().endswith(" s")]
    assert labels[:3] == ["0.00 s", "0.50 s", "1.00 s"] and len(set(labels)) == 8
