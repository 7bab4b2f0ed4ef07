"""``labtools.experiments.scale.measure_websocket``: small runs against a minichat in a child process."""

from __future__ import annotations

import pytest

from labtools import processes
from labtools.experiments.cost import calibrate, validate
from labtools.experiments.scale import measure_compression, measure_transport, measure_websocket, spawn_server


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


def test_compression_for_the_whole_server() -> None:
    off, on, fresh = measure_compression(clients=20, rate=20, seconds=0.5, settle=0.3)
    assert [r.client_kind for r in (off, on, fresh)] == ["deflate off", "deflate on", "deflate no-context-takeover"]
    assert all(r.lost == 0 and r.delivered == 10 * 20 for r in (off, on, fresh))
    assert on.bytes_per_delivery < fresh.bytes_per_delivery < off.bytes_per_delivery
    assert "measure-compression" not in processes.runtime.services()


@pytest.mark.parametrize("mode", ["sse", "websocket"])
def test_a_transport_against_a_child_server(mode: str) -> None:
    server = spawn_server("relay", name="t-relay") if mode == "websocket" else processes.spawn("polling", name="t-poll")
    try:
        result = measure_transport(server, mode, 20, rate=20, duration=0.5, interval=1.0, seed=3)
    finally:
        server.stop()
    row = result.row()
    assert row["sent"] > 0 and row["lost"] == 0 and row["errors"] == 0
    assert result.server_cpu_s > 0 and result.server_rss_peak >= result.server_rss_before
