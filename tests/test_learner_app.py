"""A learner's own app, served every way lesson 11 serves one, with real sockets.

``learner_app/rooms_app.py`` is written as a learner writes it: the public event layer only
(``labtools.events``: its state, its changes, its handlers, a page folder beside it), and no word
about nodes, brokers or logs. The same checks (``rooms_and_changes``) then run against:

* one server in this kernel, ``lt.serve("tests/learner_app/rooms_app.py:build")``;
* two nodes, each ``python -m labtools serve /abs/rooms_app.py:build --broker URL``, on a real
  redis-server: a room's broadcast from one node reaches the members on the other (and only
  them), the changes of both nodes are applied once each in one order, acknowledgements work on
  both;
* ``lt.serve(SPEC, nodes=2)``: the same behind HAProxy, through each node and the front door.

``learner_app/tally_app.py`` is smaller still, its state a plain dataclass with no snapshot code:
a node that starts after more changes than a snapshot's period must count each change once.

And what a learner gets wrong: a build function from a cell with ``nodes=``, options with
``nodes=``, a file that is not there, all refused with a sentence, never a traceback.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_haproxy, require_redis
from deployments import flush
from waiting import wait_until

import labtools as lt
from labtools.deploy import RedisServer
from labtools.events import EventClient
from labtools.events.client import AckError
from labtools.processes import ChildServer, start_child
from labtools.serving import DeploymentHandle, ServerHandle, builder

ROOT = Path(__file__).resolve().parents[1]
APP_FILE = ROOT / "tests" / "learner_app" / "rooms_app.py"
SPEC = "tests/learner_app/rooms_app.py:build"  # as a learner types it, relative to where they are
PAGE_MARK = b'id="learner-page"'  # a line of learner_app/page/index.html
WITHIN = 15.0  # seconds for anything to arrive, on a busy 2-core machine
BUMPS = 20  # changes asked for from each node at once


def get(url: str) -> tuple[int, bytes]:
    """``GET url``: status and body."""
    with urllib.request.urlopen(url, timeout=WITHIN) as response:
        return response.status, response.read()


async def member(url: str, name: str, room: str) -> EventClient:
    """A client of ``url`` that joined ``room`` (checking the acknowledgement's shape)."""
    client = await EventClient.connect(url, name=name)
    answer = await client.request("join", {"room": room, "name": name}, timeout=WITHIN)
    assert answer["room"] == room and isinstance(answer["count"], int), answer
    assert set(answer["poll"]) == {"yes", "no", "maybe"}, answer
    return client


async def hears(client: EventClient, event: str, where: Callable[[Any], bool], what: str) -> Any:
    """The first ``event`` ``client`` got (or gets within ``WITHIN``) whose data satisfies ``where``."""
    try:
        return await client.wait_for(event, WITHIN, where=where)
    except TimeoutError:
        raise AssertionError(f"{client.name} never heard {event!r} {what} within {WITHIN:g} s; "
                             f"it got {[(e, d) for _t, e, d in client.received]}") from None


def said(client: EventClient, room: str) -> list[str]:
    return [data["text"] for data in client.events("said") if data["room"] == room]


def joined(client: EventClient) -> list[tuple[str, str]]:
    return [(data["room"], data["name"]) for data in client.events("joined")]


async def board(client: EventClient) -> dict[str, Any]:
    return await client.request("state", timeout=WITHIN)


async def rooms_and_changes(a: str, b: str) -> None:
    """The learner's app, its clients spread over ``a`` and ``b`` (the same URL for one server).

    Everything awaited has a positive event to wait for; an absence is checked only after a
    later frame from the same node reached the same client (each node's broadcasts arrive in
    the order it sent them), so nothing here is a sleep dressed as an assertion.
    """
    ana, bob, carl = await member(a, "ana", "red"), await member(b, "bob", "red"), await member(b, "carl", "blue")
    clients = [ana, bob, carl]
    try:
        # Bob's join crosses from B to A fire-and-forget: once Ana (on A) heard it, A has sent it,
        # so Dora, joining A after that, must not hear it (a broadcast reaches who is there).
        await hears(ana, "joined", lambda d: d["name"] == "bob", "about bob (red, from node B)")
        dora = await member(a, "dora", "red")
        clients.append(dora)
        # Joining is announced to the room's other members, on both nodes, not to the joiner.
        await hears(bob, "joined", lambda d: d["name"] == "dora", "about dora")
        await hears(ana, "joined", lambda d: d["name"] == "dora", "about dora")

        # A broadcast to a room by name, from A: its members on A and on B, the speaker included.
        assert await ana.request("say", {"room": "red", "text": "hola"}, timeout=WITHIN) == {"room": "red"}
        for client in (ana, dora, bob):
            await hears(client, "said", lambda d: d["text"] == "hola", "hola (red, from node A)")
        assert said(dora, "red") == ["hola"] and joined(dora) == [], "dora heard her own join (exclude=)"

        # eve joins blue on A: carl (on B) hears it after A's red frames, so he would have them by now.
        eve = await member(a, "eve", "blue")
        clients.append(eve)
        await hears(carl, "joined", lambda d: d["name"] == "eve", "about eve (blue, on node A)")
        assert said(carl, "red") == [] and joined(carl) == [("blue", "eve")], carl.received
        assert await eve.request("say", {"room": "blue", "text": "azul"}, timeout=WITHIN) == {"room": "blue"}
        await hears(carl, "said", lambda d: d["text"] == "azul", "azul (blue, from node A)")
        assert said(bob, "blue") == [] and said(ana, "blue") == []  # (they may yet get it: checked again below)

        # Acknowledged refusals: from a handler (not a member) and from a change (every node refuses).
        with pytest.raises(AckError) as refused:
            await ana.request("say", {"room": "blue", "text": "intruder"}, timeout=WITHIN)
        assert refused.value.code == "invalid-data" and "join 'blue'" in refused.value.message
        with pytest.raises(AckError) as refused:
            await bob.request("vote", {"room": "red", "choice": "perhaps", "tag": "bad-vote"}, timeout=WITHIN)
        assert refused.value.code == "invalid-data" and "one of yes, no, maybe" in refused.value.message
        poll = await bob.request("vote", {"room": "red", "choice": "yes", "tag": "vote-bob"}, timeout=WITHIN)
        assert poll == {"yes": 1, "no": 0, "maybe": 0}
        await hears(ana, "poll", lambda d: d["poll"]["yes"] == 1, "with bob's vote (on node A)")

        # Changes asked for on both nodes at once: each applied once, in one order.
        def bumps(client: EventClient, node: str) -> list[Any]:
            return [client.request("bump", {"room": "red", "tag": f"{node}{k}"}, timeout=WITHIN) for k in range(BUMPS)]

        answers = await asyncio.gather(*bumps(ana, "a"), *bumps(bob, "b"))
        counts = sorted(answer["count"] for answer in answers)
        assert counts == list(range(1, 2 * BUMPS + 1)), f"each change's count once, 1 to {2 * BUMPS}: {counts}"
        for client in (ana, dora, bob):  # the room's members hear every count, on both nodes
            await hears(client, "count", lambda d: d["count"] == 2 * BUMPS, f"reaching {2 * BUMPS}")
        # A later change pushed to blue reaches carl after every red one would have.
        assert await eve.request("bump", {"room": "blue", "tag": "blue1"}, timeout=WITHIN) == {"count": 1}
        await hears(carl, "count", lambda d: d["room"] == "blue", "of blue")
        assert [d["room"] for d in carl.events("count")] == ["blue"], "carl heard another room's counts"
        assert [d["room"] for d in bob.events("count")].count("blue") == 0, "bob heard blue's count"
        assert said(bob, "blue") == [] and said(ana, "blue") == []

        # Both nodes hold one state: the same changes, in the same order, each once. blue1 came last
        # in the log and carl (on B) has its push, so B applied everything A did.
        expected_tags = {"vote-bob", "blue1"} | {f"{n}{k}" for n in "ab" for k in range(BUMPS)}
        on_a, on_b = await board(ana), await board(bob)
        assert on_a["counts"] == {"red": 2 * BUMPS, "blue": 1}, on_a["counts"]
        assert sorted(on_a["applied"]) == sorted(expected_tags), on_a["applied"]
        assert on_b == on_a, f"the nodes disagree:\nA {on_a}\nB {on_b}"

        # A newcomer is welcomed with the board as it is.
        late = await EventClient.connect(b, name="late")
        clients.append(late)
        welcome = await late.wait_for("state", WITHIN)
        assert welcome == on_a, welcome
        assert [name for _t, name, _d in late.received][:1] == ["state"], late.received
    finally:
        for client in clients:
            await client.aclose()


# --- one server in this kernel ----------------------------------------------------------------------


def test_one_server_from_the_learners_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    handle = lt.serve(SPEC, name="learner-rooms")
    try:
        assert isinstance(handle, ServerHandle)
        lt.run(rooms_and_changes(handle.url, handle.url))
        assert handle.read(lambda board: board.counts) == {"red": 2 * BUMPS, "blue": 1}
        assert handle.server.errors == []
    finally:
        handle.stop()


# --- two nodes, each `python -m labtools serve ... --broker URL` ------------------------------------


@pytest.fixture
def two_nodes(redis_server: RedisServer) -> Iterator[list[ChildServer]]:
    """Two processes serving the learner's file through one Redis (emptied first)."""
    lt.run(flush(redis_server))

    async def start() -> list[ChildServer]:
        return list(await asyncio.gather(*(
            start_child(f"{APP_FILE}:build", name=f"learner-node-{node}", timeout=60,
                        extra=["--broker", redis_server.url, "--node", node])
            for node in ("a", "b")
        )))

    nodes = lt.run(start())
    yield nodes
    for node in nodes:
        lt.run(node.aclose())


def test_two_nodes_through_a_broker_share_rooms_and_changes(two_nodes: list[ChildServer]) -> None:
    a, b = two_nodes
    lt.run(rooms_and_changes(a.url, b.url))
    for node in two_nodes:  # each node serves the page beside the learner's file, whatever its cwd
        status, body = get(node.url)
        assert status == 200 and PAGE_MARK in body
        assert "Traceback" not in node.stderr_text(), node.stderr_text()


# --- lt.serve(SPEC, nodes=2): HAProxy in front ------------------------------------------------------


def test_serve_with_nodes_deploys_the_learners_file_behind_the_front_door(monkeypatch: pytest.MonkeyPatch) -> None:
    require_redis()
    require_haproxy()
    monkeypatch.chdir(ROOT)
    handle = lt.serve(SPEC, nodes=2, name="learner-deployment")
    try:
        assert isinstance(handle, DeploymentHandle) and len(handle.node_urls) == 2
        a, b = handle.node_urls
        lt.run(rooms_and_changes(a, b))

        async def through_the_front_door() -> set[str]:
            """Clients through the front door: served by both nodes, one state, rooms across them."""
            clients = [await member(handle.url, f"door{k}", "green") for k in range(4)]
            try:
                nodes = {c.connection.response.headers["X-Served-By"] for c in clients}  # type: ignore[union-attr]
                first, *others = clients
                await first.request("say", {"room": "green", "text": "through the door"}, timeout=WITHIN)
                for other in others:
                    await hears(other, "said", lambda d: d["text"] == "through the door", "through the door")
                answers = await asyncio.gather(*(
                    c.request("bump", {"room": "green", "tag": f"door{k}"}, timeout=WITHIN)
                    for k, c in enumerate(clients)
                ))
                assert sorted(a["count"] for a in answers) == [1, 2, 3, 4], answers
                return nodes
            finally:
                for client in clients:
                    await client.aclose()

        assert lt.run(through_the_front_door()) == {"node1", "node2"}, "the front door used one node only"
        for url in (*handle.node_urls, handle.url):
            status, body = get(url)
            assert status == 200 and PAGE_MARK in body, url
    finally:
        handle.stop()


def test_nodes_take_the_learners_app_by_file_only_and_without_options() -> None:
    build_function = builder(f"{APP_FILE}:build")  # the learner's build, as a cell that imported it holds it
    with pytest.raises(ValueError, match="%%writefile"):  # a function of the kernel: no process can import it
        lt.serve(build_function, nodes=2)
    with pytest.raises(TypeError, match="some_option"):
        lt.serve(f"{APP_FILE}:build", nodes=2, some_option=1)
    assert "learner-deployment" not in lt.runtime.services()


# --- the learner's page, beside the learner's file -----------------------------------------------------


def test_the_page_is_the_folder_beside_the_learners_file_wherever_the_kernel_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no page/ here: only the folder beside rooms_app.py has one
    relative = os.path.relpath(APP_FILE, tmp_path)
    for spec in (f"{APP_FILE}:build", f"{relative}:build"):
        handle = lt.serve(spec, name="learner-page")
        try:
            status, body = get(handle.url)
            assert status == 200 and PAGE_MARK in body, spec
            status, body = get(handle.url + "course.css")  # the shared files stay reachable
            assert status == 200 and body, spec
        finally:
            handle.stop()


def test_the_page_is_beside_the_learners_module_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``module:function`` names the same file as ``PATH.py:build``: its page is beside it too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(APP_FILE.parents[1]))
    handle = lt.serve("learner_app.rooms_app:build", name="learner-page-module")
    try:
        status, body = get_status(handle.url)
        assert status == 200 and PAGE_MARK in body, (
            "a module:function build's page=Path('page') must be found beside its module's file, "
            f"not in the current directory (GET / answered {status})"
        )
    finally:
        handle.stop()


def get_status(url: str) -> tuple[int, bytes]:
    """``GET url`` that returns an error status instead of raising it."""
    try:
        return get(url)
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# --- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app", "says"),
    [
        ("no_such_file.py:build", "no_such_file.py: no such file"),
        ("no_such_module:build", "cannot import module 'no_such_module'"),
        ("labtools.apps.minichat:nope", "has no function 'nope'"),
    ],
)
def test_serve_refuses_a_build_that_is_not_there_with_a_sentence(app: str, says: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "labtools", "serve", app, "--port", "0"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and result.stdout == "", result
    assert says in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_serve_takes_a_module_and_function(tmp_path: Path) -> None:
    async def start() -> ChildServer:
        return await start_child("labtools.apps.minichat:build", name="learner-cli-module", timeout=60)

    child = lt.run(start())
    try:
        assert child.url.startswith("http://127.0.0.1:") and child.url.endswith("/")
        status, body = get(child.url)
        assert status == 200 and b"<html" in body.lower()

        async def chat() -> Any:
            client = await EventClient.connect(child.url, name="cli")
            try:
                await client.request("msg-to-server", {"text": "hi"}, timeout=WITHIN)
                return await client.wait_for("msg-from-server", WITHIN)
            finally:
                await client.aclose()

        assert lt.run(chat())["text"] == "hi"
    finally:
        lt.run(child.aclose())


# --- a node that starts late, on a learner's plain dataclass ---------------------------------------------

TALLY_FILE = ROOT / "tests" / "learner_app" / "tally_app.py"
SENDERS = 6  # clients per node, each asking for ADDS changes at once (within its rate limit)
ADDS = 100


def test_a_node_that_starts_late_gets_a_plain_dataclass_state_right(redis_server: RedisServer) -> None:
    """More changes than a snapshot's period (the log saves one every 500), then a third node:
    it starts from the newest snapshot and the entries after it, and must count each once."""
    lt.run(flush(redis_server))
    spec = f"{TALLY_FILE}:build"
    a, b = (lt.serve(spec, name=f"tally-{n}", broker=redis_server.url, node=n) for n in ("a", "b"))
    late = None
    try:
        async def add_many() -> list[int]:
            urls = [a.url, b.url] * SENDERS
            clients = [await EventClient.connect(url, name=f"adder{k}") for k, url in enumerate(urls)]
            try:
                return list(await asyncio.gather(*(
                    c.request("add", "red", timeout=60) for c in clients for _ in range(ADDS)
                )))
            finally:
                for client in clients:
                    await client.aclose()

        total = 2 * SENDERS * ADDS
        assert sorted(lt.run(add_many())) == list(range(1, total + 1))
        for node in (a, b):
            wait_until(lambda node=node: node.read(lambda t: dict(t.counts)) == {"red": total},
                       within=WITHIN, what=f"{node.name} to apply all {total} changes")
        late = lt.serve(spec, name="tally-late", broker=redis_server.url, node="late")
        restored = late.read(lambda t: dict(t.counts))  # it listens once it caught up with the log
        assert restored == {"red": total}, (
            f"a node started after {total} changes restored {restored}, not {total}: a snapshot saved "
            "as of offset N must hold the state as of N, not changes applied after it (a snapshot is "
            "saved later, in a task, so it must be a frozen copy)"
        )
    finally:
        for handle in (a, b, late):
            if handle is not None:
                handle.stop()
