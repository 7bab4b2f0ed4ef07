"""Lesson 09's figures: what WebSocket clients cost a minichat server in a process of its own,
the cost model calibrated on them, and lesson 10's thundering herd.

    .venv/bin/python benchmarks/scale.py                  # 250 to 2,000 clients (about a minute)
    .venv/bin/python benchmarks/scale.py --quick          # a smoke pass (< 30 s)
    .venv/bin/python benchmarks/scale.py --clients 10000  # one size only (the file limit is raised)
    .venv/bin/python benchmarks/scale.py --record notebooks/data/09_full_run.json  # lesson 09's full run

Each size runs on a fresh ``python -m labtools serve minichat`` (``labtools.processes.spawn``),
with lean raw clients in this process broadcasting 10 messages per second to everyone
(``labtools.experiments.scale.measure_websocket``). The cost model (``labtools.experiments.cost.calibrate``) is
fitted on every size but the largest, and validated on the largest. Exits 1 when a message was
lost or duplicated.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from labtools import processes
from labtools.experiments.cost import calibrate, validate, websocket_cost
from labtools.experiments.scale import measure_compression, measure_transport, measure_websocket, spawn_server
from labtools.sim.reconnect import herd

#: Lesson 09's full run (``FULL = True`` in the notebook): the sizes of each part.
FULL_TRANSPORT_SIZES = (10, 100, 1000, 5000, 10000)
FULL_LADDER = (500, 1000, 2000, 5000)  # the cost model is fitted on these...
FULL_HELD_OUT = 10_000  # ...and validated on this one (section 4's 10,000 clients)
FULL_COMPRESSION_CLIENTS = 1000
TRANSPORT_WORKLOAD = {"rate": 20, "duration": 2.0, "interval": 1.0, "seed": 9}
#: A size of a transport is not attempted when the previous one took longer than this (seconds).
TRANSPORT_STEP_LIMIT = 60.0


def clean(value: object) -> object:
    """JSON without NaN (null instead)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def transports(sizes: tuple[int, ...], step_limit: float = TRANSPORT_STEP_LIMIT) -> list[dict]:
    """Section 1: the four transports, each size on fresh child servers; a mode stops growing
    when a size failed or took longer than ``step_limit``."""
    rows: list[dict] = []
    for mode in ("poll", "long-poll", "sse", "websocket"):
        for users in sizes:
            server = spawn_server("relay", name="record-relay") if mode == "websocket" else processes.spawn(
                "polling", name="record-polling")
            started = time.monotonic()
            try:
                row = measure_transport(server, mode, users, **TRANSPORT_WORKLOAD).row()
            except Exception as error:  # a size one kernel cannot carry: say so and stop this mode
                rows.append({"mode": mode, "users": users, "error": f"{type(error).__name__}: {error}"[:300]})
                print(f"{mode} {users}: {error!r}", flush=True)
                break
            finally:
                server.stop()
            row["run s"] = time.monotonic() - started
            rows.append(row)
            print({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
            if row["run s"] > step_limit or row["lost"]:
                break
    return rows


def record(path: Path) -> int:
    """Lesson 09's full run, written to ``path`` as JSON (the notebook shows it as a recorded run)."""
    limits = processes.raise_file_limit()
    started = time.monotonic()
    data: dict = {
        "recorded": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "file limit": limits,
        "transport workload": TRANSPORT_WORKLOAD,
    }
    data["transports"] = transports(FULL_TRANSPORT_SIZES)
    ladder = [measure_websocket(None, clients=n, rate=10, seconds=3.0) for n in (*FULL_LADDER, FULL_HELD_OUT)]
    for r in ladder:
        print(r.clients, r.lost, round(r.p99_ms, 1), round(r.server_kb_per_idle_conn, 1),
              round(r.server_cpu_us_per_delivery, 1), flush=True)
    data["websocket"] = [r.as_dict() for r in ladder]
    data["compression"] = [r.as_dict() for r in measure_compression(FULL_COMPRESSION_CLIENTS, rate=10, seconds=3.0)]
    data["seconds"] = time.monotonic() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(data), indent=1) + "\n")
    print(f"written {path} ({data['seconds']:.0f} s)")
    return 1 if any(r.lost or r.duplicated for r in ladder) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke pass")
    parser.add_argument("--clients", type=int, nargs="*", help="sizes to run (default: a ladder)")
    parser.add_argument("--rate", type=float, default=10.0, help="broadcasts per second (default 10)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--client", choices=["raw", "event"], default="raw")
    parser.add_argument("--record", type=Path, help="run lesson 09's full run and write it to this JSON file")
    args = parser.parse_args()
    if args.record:
        return record(args.record)
    sizes = args.clients or ([100, 200, 300] if args.quick else [250, 500, 1000, 2000])
    seconds = 1.0 if args.quick else args.seconds
    limits = processes.raise_file_limit()
    print(
        f"open-file limit: soft {limits['soft before']} -> {limits['soft']} (hard {limits['hard']}); "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'clients':>7} {'msg/s':>6} {'deliv/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'lost':>5} "
        f"{'srv µs/deliv':>12}"
        f" {'srv KB/conn':>11} {'srv CPU':>7} {'kernel CPU':>10} {'kernel KB/cl':>12} {'connect s':>9}"
    )
    runs = []
    bad = 0
    for n in sizes:
        r = measure_websocket(None, clients=n, rate=args.rate, seconds=seconds, client=args.client)
        runs.append(r)
        bad += r.lost + r.duplicated
        print(
            f"{n:>7} {r.rate:>6g} {r.deliveries_per_s:>8.0f} {r.p50_ms:>7.1f} {r.p99_ms:>7.1f} "
            f"{r.lost + r.duplicated:>5} "
            f"{r.server_cpu_us_per_delivery:>12.1f} {r.server_kb_per_idle_conn:>11.1f} {r.server_cpu_s_per_s:>7.2f} "
            f"{r.kernel_cpu_s_per_s:>10.2f} {r.kernel_kb_per_client:>12.1f} {r.connect_s:>9.2f}",
            flush=True,
        )
    if len(runs) >= 3:
        fit = calibrate([r.point() for r in runs[:-1]])
        check = validate(fit, runs[-1].point())
        print(f"\nfit on {fit.points} sizes: {fit.summary()}")
        print(
            f"held out ({runs[-1].clients} clients): RSS off by {check['rss relative error']:+.1%}, "
            f"CPU off by {check['cpu relative error']:+.1%}"
        )
        cost = websocket_cost(100_000, 0.01, 100, 200, fit.kb_per_conn, fit.cpu_us_per_delivery)
        print(
            f"model, 100,000 users, 1 msg per 100 s each, fan-out 100: {cost['memory MB']:.0f} MB, "
            f"{cost['deliveries/s']:.0f} deliveries/s, {cost['CPU cores']:.2f} cores, {cost['GB/day']:.1f} GB/day"
        )
    n = 50 if args.quick else 200
    runs_herd = herd(n, base=0.1, cap=2.0, downtime=1.0, seconds=4.0)
    print(f"\nherd: {n} clients, server down 1 s, attempts per 100 ms after the outage")
    for name, run in runs_herd.items():
        back = run["all reconnected after s"]
        print(
            f"  {name:9}: peak {run['peak attempts per bin']:>4} attempts, {run['peak reconnections per bin']:>4} "
            f"reconnections in one bin; {run['total attempts']} attempts; all back after "
            f"{back:.2f} s"
            if back is not None
            else "  not all back"
        )
        print("   ", " ".join(str(a) for a in run["attempts"]))
    return 1 if bad else 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"({time.monotonic() - started:.0f} s)")
    sys.exit(code)
