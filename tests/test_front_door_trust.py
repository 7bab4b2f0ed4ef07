"""Behind the front door a node sees every socket come from HAProxy; ``X-Forwarded-For`` says
who the client is, and is believed only with the deployment's secret (issue 19: one attacker's
failed logins must not lock out everyone behind the same proxy)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.datastructures import Headers

import labtools
from labtools.deploy.haproxy import configuration
from labtools.events import Client, EventServer
from labtools.events.forwarded import FRONT_DOOR_HEADER, FRONT_DOOR_SECRET_ENV, forwarded_for

SECRET = "s3cret-of-this-deployment"


def test_only_the_front_doors_last_address_is_believed() -> None:
    proven = Headers([(FRONT_DOOR_HEADER, SECRET), ("X-Forwarded-For", "203.0.113.7, 10.1.2.3")])
    assert forwarded_for(proven, SECRET) == "10.1.2.3"  # the address the front door appended
    two_lines = Headers([(FRONT_DOOR_HEADER, SECRET), ("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "10.1.2.4")])
    assert forwarded_for(two_lines, SECRET) == "10.1.2.4"
    assert forwarded_for(Headers([("X-Forwarded-For", "10.1.2.3")]), SECRET) is None  # no proof
    assert forwarded_for(Headers([(FRONT_DOOR_HEADER, "guess"), ("X-Forwarded-For", "10.1.2.3")]), SECRET) is None
    assert forwarded_for(proven, None) is None  # a node with no front door believes no one
    assert forwarded_for(Headers([(FRONT_DOOR_HEADER, SECRET), ("X-Forwarded-For", "not-an-ip")]), SECRET) is None


def test_a_node_takes_the_clients_address_from_a_proven_upgrade_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FRONT_DOOR_SECRET_ENV, SECRET)
    server = EventServer("forwarded-test")

    @server.on("who")
    def who(client: Client, data: Any) -> str:
        address = client.remote_address
        return address[0] if address else ""

    async def ask(headers: dict[str, str]) -> str:
        async with connect(f"ws://127.0.0.1:{server.port}/", additional_headers=headers) as ws:
            await ws.send(json.dumps({"event": "who", "id": 1}))
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("ack") == 1:
                    return frame["data"]

    async def scenario() -> list[str]:
        await server.start()
        try:
            return [await ask({FRONT_DOOR_HEADER: SECRET, "X-Forwarded-For": "198.51.100.9"}),
                    await ask({"X-Forwarded-For": "198.51.100.9"}),
                    await ask({FRONT_DOOR_HEADER: "wrong", "X-Forwarded-For": "198.51.100.9"})]
        finally:
            await server.aclose()

    assert labtools.run(scenario()) == ["198.51.100.9", "127.0.0.1", "127.0.0.1"]


def test_the_front_door_sets_its_proof_on_every_request(tmp_path: Any) -> None:
    config = configuration(8000, [("node1", 8001)], tmp_path / "stats.sock", secret=SECRET)
    assert f"http-request set-header {FRONT_DOOR_HEADER} {SECRET}" in config and "option forwardfor" in config
    assert FRONT_DOOR_HEADER not in configuration(8000, [("node1", 8001)], tmp_path / "stats.sock")
