"""``labtools.experiments.cost``: the WebSocket cost model, its calibration and its validation."""

from __future__ import annotations

import math
import random

import pytest

from labtools.experiments.cost import Point, calibrate, validate, websocket_cost


def test_websocket_cost_adds_up() -> None:
    cost = websocket_cost(10_000, 0.01, 50, 200, kb_per_conn=30, cpu_us_per_delivery=20)
    assert cost["messages/s"] == pytest.approx(100)
    assert cost["deliveries/s"] == pytest.approx(5_000)
    assert cost["CPU cores"] == pytest.approx(0.1)
    assert cost["memory MB"] == pytest.approx(10_000 * 30 * 1024 / 1e6)
    assert cost["bytes out/s"] == pytest.approx(1_000_000)
    assert cost["GB/day"] == pytest.approx((1_000_000 + 100 * 200) * 86_400 / 1e9)
    idle = websocket_cost(10_000, 0, 50, 200, 30, 20)
    assert idle["CPU cores"] == 0 and idle["memory MB"] == cost["memory MB"]  # idle users cost memory only


def synthetic(n: int, noise: float, seed: int = 0) -> list[Point]:
    """Truth: 40 MB base + 25 KiB per connection; 0.01 core idle + 15 µs per delivery."""
    rng = random.Random(seed)
    points = []
    for k in range(1, n + 1):
        c, d = 500 * k, 4_000 * k
        points.append(
            Point(
                connections=c,
                rss_bytes=(40e6 + c * 25 * 1024) * (1 + rng.gauss(0, noise)),
                deliveries_per_s=d,
                cpu_s_per_s=(0.01 + d * 15e-6) * (1 + rng.gauss(0, noise)),
            )
        )
    return points


def test_calibrate_recovers_the_truth_exactly_without_noise() -> None:
    fit = calibrate(synthetic(4, 0.0))
    assert fit.kb_per_conn == pytest.approx(25) and fit.cpu_us_per_delivery == pytest.approx(15)
    assert fit.base_rss_bytes == pytest.approx(40e6) and fit.base_cpu_s_per_s == pytest.approx(0.01)
    assert fit.kb_per_conn_se == pytest.approx(0, abs=1e-6) and fit.rss_residual_max < 1e-9
    assert "25.0 ± 0.0 KiB" in fit.summary()


def test_calibrate_with_noise_brackets_the_truth_and_validates() -> None:
    points = synthetic(6, 0.02, seed=3)
    fit = calibrate(points[:5])
    assert abs(fit.kb_per_conn - 25) < 4 * fit.kb_per_conn_se + 1
    assert abs(fit.cpu_us_per_delivery - 15) < 4 * fit.cpu_us_per_delivery_se + 1
    assert 0 < fit.rss_residual_max < 0.1
    check = validate(fit, points[5])
    assert abs(check["rss relative error"]) < 0.1 and abs(check["cpu relative error"]) < 0.1
    assert check["rss measured"] == points[5].rss_bytes


def test_calibrate_takes_mappings_and_says_when_it_cannot_know_its_error() -> None:
    fit = calibrate([dict(connections=1000, rss_bytes=30 * 1024 * 1000, deliveries_per_s=1e4, cpu_s_per_s=0.2)])
    assert fit.kb_per_conn == pytest.approx(30) and fit.cpu_us_per_delivery == pytest.approx(20)
    assert math.isnan(fit.kb_per_conn_se)
    with pytest.raises(ValueError):
        calibrate([])
