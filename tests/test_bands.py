"""Band votes over real sockets: the contract, bad input, concurrent votes, the delta extension."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from deployments import deployment_fixture

import labtools as lt
from labtools.apps import bands
from labtools.events import AckError, EventClient
from labtools.sim import voters

#: The contract, on one node, on two nodes, and on two nodes behind the front door.
server = deployment_fixture("bands", "test-bands", scope="module")


def total_votes(band_list: list[dict[str, Any]]) -> int:
    return sum(b["votes"] for b in band_list)


def test_connect_gets_the_initial_list() -> None:
    fresh = lt.serve("bands", name="test-bands-fresh")

    async def scenario() -> list[dict[str, Any]]:
        client = await EventClient.connect(fresh.url)
        try:
            return await client.wait_for("band-list")
        finally:
            await client.aclose()

    band_list = lt.run(scenario())
    assert [b["name"] for b in band_list] == list(bands.INITIAL_BANDS)
    assert all(b["votes"] == 0 and isinstance(b["id"], str) for b in band_list)


def test_every_change_reaches_everyone(server: lt.ServerHandle) -> None:
    async def scenario() -> None:
        ana, pedro = await EventClient.connect(server.url, name="ana"), await EventClient.connect(server.url)
        try:
            first = (await ana.wait_for("band-list"))[0]
            await pedro.emit("vote-band", first["id"])
            for client in (ana, pedro):  # the sender gets it too
                voted = await client.wait_for("band-list", where=lambda bl: bl[0]["votes"] == first["votes"] + 1)
                assert voted[0]["id"] == first["id"]
            await ana.emit("rename-band", {"id": first["id"], "name": "  Metallica (live)  "})
            await pedro.wait_for("band-list", where=lambda bl: bl[0]["name"] == "Metallica (live)")
            await ana.emit("create-band", {"name": "Soda Stereo"})
            created = await pedro.wait_for("band-list", where=lambda bl: bl[-1]["name"] == "Soda Stereo")
            assert created[-1]["votes"] == 0
            await ana.wait_for("band-list", where=lambda bl: bl[-1]["name"] == "Soda Stereo")
            # The list after the removal equals the one before the creation: wait for the *next* one.
            nexts = [asyncio.ensure_future(client.next("band-list")) for client in (ana, pedro)]
            await asyncio.sleep(0)  # let both waiters register
            await pedro.emit("remove-band", created[-1]["id"])
            for removed in await asyncio.gather(*nexts):
                assert [b["id"] for b in removed] == [b["id"] for b in created[:-1]]
            assert len(ana.events("band-list")) == 5 and len(pedro.events("band-list")) == 5
        finally:
            await asyncio.gather(ana.aclose(), pedro.aclose())

    lt.run(scenario())


BAD = [
    ("vote-band", "no-such-id"),
    ("vote-band", {"id": "x"}),
    ("vote-band", None),
    ("remove-band", 42),
    ("remove-band", "no-such-id"),
    ("rename-band", {"id": "no-such-id", "name": "X"}),
    ("rename-band", "just a string"),
    ("rename-band", {"name": "no id"}),
    ("create-band", {"name": ""}),
    ("create-band", {"name": "   "}),
    ("create-band", {"name": "x" * 61}),
    ("create-band", {"name": 7}),
    ("create-band", "Soda Stereo"),
]


@pytest.mark.parametrize(("event", "data"), BAD, ids=[f"{e}:{d!r}"[:40] for e, d in BAD])
def test_bad_input_is_invalid_data_and_changes_nothing(server: lt.ServerHandle, event: str, data: Any) -> None:
    async def scenario() -> None:
        sender, bystander = await EventClient.connect(server.url), await EventClient.connect(server.url)
        try:
            before = await bystander.wait_for("band-list")
            with pytest.raises(AckError) as failure:
                await sender.request(event, data)
            assert failure.value.code == "invalid-data"
            await sender.emit(event, data)  # unacknowledged: an error event instead
            error = await sender.next("error")
            assert error["code"] == "invalid-data"
            # Nobody was told of a change, the state is the same and both sockets still work.
            snapshot = await sender.request("get-band-list")
            assert snapshot["bands"] == before
            assert bystander.events("band-list") == [before] and not bystander.errors
            assert not sender.closed and not bystander.closed
        finally:
            await asyncio.gather(sender.aclose(), bystander.aclose())

    lt.run(scenario())


def test_rename_to_an_empty_name_keeps_the_old_one(server: lt.ServerHandle) -> None:
    async def scenario() -> None:
        client = await EventClient.connect(server.url)
        try:
            band = (await client.wait_for("band-list"))[0]
            with pytest.raises(AckError, match="invalid-data"):
                await client.request("rename-band", {"id": band["id"], "name": ""})
            assert (await client.request("get-band-list"))["bands"][0]["name"] == band["name"]
        finally:
            await client.aclose()

    lt.run(scenario())


def test_concurrent_votes_are_all_counted() -> None:
    handle = lt.serve("bands", name="test-bands-crowd")
    sent = lt.run(voters.vote_crowd(handle.url, voters=25, votes_each=40, seed=3), timeout=30)
    counted = handle.read(lambda board: {b.id: b.votes for b in board.bands.values()})
    assert counted == sent and sum(counted.values()) == 25 * 40


def test_deltas_rebuild_the_same_list_and_cost_fewer_bytes(server: lt.ServerHandle) -> None:
    async def scenario() -> None:
        full, delta = await EventClient.connect(server.url), await EventClient.connect(server.url)
        voter = await EventClient.connect(server.url)
        try:
            snapshot = await delta.request("subscribe-deltas")
            await full.wait_for("band-list")
            full_before, delta_before = full.traffic.total.bytes_in, delta.traffic.total.bytes_in
            changes = len(snapshot["bands"]) * 3 + 1
            for band in snapshot["bands"] * 3:
                await voter.emit("vote-band", band["id"])
            await voter.emit("create-band", {"name": "Maná"})
            last = await full.next("band-list", where=lambda bl: bl[-1]["name"] == "Maná")
            deltas = [await delta.wait_for("band-delta", where=lambda d, v=v: d["v"] == v)
                      for v in range(snapshot["version"] + 1, snapshot["version"] + changes + 1)]
            rebuilt = snapshot["bands"]
            for change in deltas:
                rebuilt = bands.apply_delta(rebuilt, change)
            assert rebuilt == last
            assert not delta.events("band-list")[1:], "a delta subscriber gets no more full lists"
            assert delta.traffic.total.bytes_in - delta_before < full.traffic.total.bytes_in - full_before
        finally:
            await asyncio.gather(full.aclose(), delta.aclose(), voter.aclose())

    lt.run(scenario())


def test_python_m_labtools_serve_bands() -> None:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "labtools", "serve", "bands"], stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")

        async def first_list() -> list[dict[str, Any]]:
            client = await EventClient.connect(url)
            try:
                return await client.wait_for("band-list")
            finally:
                await client.aclose()

        assert len(lt.run(first_list())) == 4
    finally:
        process.terminate()
        assert process.wait(10) == 0
