"""``labtools.sim.scale.measure_websocket``: small runs against a minichat in a child process."""

from __future__ import annotations

import pytest

from labtools import processes
from labtools.sim.cost import calibrate, validate
from labtools.sim.scale import measure_websocket


@pytest.mark.parametrize("client", ["raw", "event"])
def test_measure_websocket_on_a_fresh_child_server(client: str) -> None:
    result = measure_websocket(None, clients=60, rate=20, seconds=1.0, client=client)
    assert result.sent == 20 and result.delivered == 20 * 60
    assert result.lost == 0 and result.duplicated == 0
    assert 0 < result.p50_ms <= result.p99_ms < 2000
    assert 0 < result.server_cpu_us_per_delivery < 1000
    assert 0 < result.server_kb_per_idle_conn < 500
    assert result.deliveries_per_s > 300
    assert "measure-websocket" not in processes.runtime.services()


def test_measurements_calibrate_the_cost_model() -> None:
    server = processes.spawn("minichat", name="scale-calibrate")
    try:
        runs = [measure_websocket(server, clients=n, rate=r, seconds=1.0) for n, r in ((40, 20), (80, 20), (120, 20))]
    finally:
        server.stop()
    fit = calibrate([r.point() for r in runs[:2]])
    assert fit.points == 2 and fit.cpu_us_per_delivery > 0
    check = validate(fit, runs[2].point())
    assert set(check) >= {"rss relative error", "cpu relative error"}
