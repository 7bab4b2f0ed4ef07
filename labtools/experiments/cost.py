"""Cost models: what a transport costs the server as the number of users grows."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def polling_cost(users: float, interval: float, bytes_per_poll: float) -> dict[str, float]:
    """What short polling costs the server, from three numbers.

    Every user asks once per ``interval`` whether or not anything happened, so the load grows
    with the number of users and not with the number of messages.
    """
    rps = users / interval
    return {
        "users": users,
        "requests/s": rps,
        "bytes/s": rps * bytes_per_poll,
        "requests/day": rps * 86_400,
        "GB/day": rps * bytes_per_poll * 86_400 / 1e9,
        "mean latency s": interval / 2,
    }


# ----- WebSockets: connections held, deliveries made (lesson 09) --------------------------------


def websocket_cost(
    users: float,
    msgs_per_user_per_s: float,
    fanout: float,
    bytes_per_msg: float,
    kb_per_conn: float,
    cpu_us_per_delivery: float,
) -> dict[str, float]:
    """What a WebSocket server costs, from six numbers.

    Unlike polling, an idle user costs no requests, only memory: every user holds one
    connection (``kb_per_conn`` KiB of server memory each). Work grows with the messages: each of
    ``users * msgs_per_user_per_s`` messages is delivered to ``fanout`` connections, and each
    delivery costs ``cpu_us_per_delivery`` of CPU and ``bytes_per_msg`` on the wire.
    ``calibrate`` measures the two server constants.
    """
    messages = users * msgs_per_user_per_s
    deliveries = messages * fanout
    bytes_out = deliveries * bytes_per_msg
    return {
        "users": users,
        "held connections": users,
        "memory MB": users * kb_per_conn * 1024 / 1e6,
        "messages/s": messages,
        "deliveries/s": deliveries,
        "CPU cores": deliveries * cpu_us_per_delivery / 1e6,
        "bytes/s": bytes_out + messages * bytes_per_msg,
        "bytes out/s": bytes_out,
        "GB/day": (bytes_out + messages * bytes_per_msg) * 86_400 / 1e9,
    }


@dataclass
class Point:
    """One measurement of a server: RSS with ``connections`` open; CPU seconds per second at
    ``deliveries_per_s`` (what ``experiments.scale.measure_websocket`` reports)."""

    connections: float
    rss_bytes: float
    deliveries_per_s: float
    cpu_s_per_s: float


@dataclass
class CostFit:
    """``calibrate``'s result: the two constants, their standard errors and the residuals."""

    kb_per_conn: float
    kb_per_conn_se: float
    base_rss_bytes: float
    cpu_us_per_delivery: float
    cpu_us_per_delivery_se: float
    base_cpu_s_per_s: float
    points: int
    rss_residual_max: float  # the largest |relative residual| of the fit's own points
    cpu_residual_max: float

    def rss(self, connections: float) -> float:
        return self.base_rss_bytes + connections * self.kb_per_conn * 1024

    def cpu_s_per_s(self, deliveries_per_s: float) -> float:
        return self.base_cpu_s_per_s + deliveries_per_s * self.cpu_us_per_delivery / 1e6

    def summary(self) -> str:
        return (
            f"{self.kb_per_conn:.1f} ± {self.kb_per_conn_se:.1f} KiB per connection, "
            f"{self.cpu_us_per_delivery:.1f} ± {self.cpu_us_per_delivery_se:.1f} µs CPU per delivery "
            f"(from {self.points} points; residuals up to {self.rss_residual_max:.0%} and {self.cpu_residual_max:.0%})"
        )


def _line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``: (a, b, standard error of b). One distinct x: through 0."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if n < 2 or sxx == 0:
        b = sum(x * y for x, y in zip(xs, ys, strict=True)) / max(1e-300, sum(x * x for x in xs))
        return 0.0, b, math.nan
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    if n == 2:
        return a, b, math.nan
    rss = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return a, b, math.sqrt(rss / (n - 2) / sxx)


def _max_relative(xs: list[float], ys: list[float], a: float, b: float) -> float:
    return max((abs(y - a - b * x) / abs(y) for x, y in zip(xs, ys, strict=True) if y), default=0.0)


def calibrate(points: Iterable[Point | Mapping[str, float]]) -> CostFit:
    """Fit ``kb_per_conn`` and ``cpu_us_per_delivery`` to measured points (least squares).

    RSS = base + connections × kb_per_conn; CPU s/s = idle + deliveries/s × cpu_us_per_delivery.
    The uncertainty is each slope's standard error (NaN with two points or fewer: measure more)
    and the largest relative residual of the fit's own points.
    """
    pts = [p if isinstance(p, Point) else Point(**p) for p in points]
    if not pts:
        raise ValueError("calibrate() needs at least one point")
    conns, rss = [p.connections for p in pts], [p.rss_bytes for p in pts]
    rate, cpu = [p.deliveries_per_s for p in pts], [p.cpu_s_per_s for p in pts]
    a_rss, b_rss, se_rss = _line(conns, rss)
    a_cpu, b_cpu, se_cpu = _line(rate, cpu)
    return CostFit(
        kb_per_conn=b_rss / 1024,
        kb_per_conn_se=se_rss / 1024,
        base_rss_bytes=a_rss,
        cpu_us_per_delivery=b_cpu * 1e6,
        cpu_us_per_delivery_se=se_cpu * 1e6,
        base_cpu_s_per_s=a_cpu,
        points=len(pts),
        rss_residual_max=_max_relative(conns, rss, a_rss, b_rss),
        cpu_residual_max=_max_relative(rate, cpu, a_cpu, b_cpu),
    )


def validate(fit: CostFit, held_out: Point | Mapping[str, float]) -> dict[str, float]:
    """How far the fit's predictions are from a point it was not fitted on (relative errors)."""
    point = held_out if isinstance(held_out, Point) else Point(**held_out)
    rss, cpu = fit.rss(point.connections), fit.cpu_s_per_s(point.deliveries_per_s)
    return {
        "rss predicted": rss,
        "rss measured": point.rss_bytes,
        "rss relative error": (rss - point.rss_bytes) / point.rss_bytes,
        "cpu predicted": cpu,
        "cpu measured": point.cpu_s_per_s,
        "cpu relative error": (cpu - point.cpu_s_per_s) / point.cpu_s_per_s if point.cpu_s_per_s else math.nan,
    }
