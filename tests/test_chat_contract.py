"""The chat's contract (PROTOCOL.md ``chat``), bad input and security.

Every test runs a real server on the labtools loop with a temporary database, and talks to it
over real sockets with ``EventClient``/``ChatUser``, the way the notebook and the page do.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from deployments import MODES, deployed

import labtools
from labtools.events import AckError, EventClient
from labtools.sim.chat_users import ChatUser

run = labtools.run


@pytest.fixture(params=MODES)
def chat(request: pytest.FixtureRequest, tmp_path) -> Any:
    """The chat on one node, on two nodes sharing its database through Redis (consecutive clients
    on alternate nodes), and on two nodes behind the front door."""
    redis = request.getfixturevalue("redis_server") if request.param != "one" else None
    server = deployed("chat", request.param, redis, "test-chat", db=str(tmp_path / "chat.db"), fast_hashing=True)
    yield server
    server.stop()


async def users(url: str, *names: str) -> list[ChatUser]:
    return list(await asyncio.gather(*(ChatUser(name).sign_up(url) for name in names)))


async def refused(client: EventClient, event: str, data: Any, code: str) -> str:
    with pytest.raises(AckError) as caught:
        await client.request(event, data)
    assert caught.value.code == code, caught.value
    return caught.value.message


def test_sign_up_login_and_token(chat) -> None:
    async def main() -> None:
        client = await EventClient.connect(chat.url)
        fields = {"name": "Pedro", "email": "Pedro@Example.com", "password": "hunter22!"}
        account = await client.request("sign-up", fields)
        assert set(account) == {"user", "token"}
        assert set(account["user"]) == {"uid", "name", "email"} and account["user"]["email"] == "pedro@example.com"
        again = await client.request("login", {"email": "pedro@example.com", "password": "hunter22!"})
        assert again["user"] == account["user"] and isinstance(again["token"], str)
        assert await client.request("auth", {"token": again["token"]}) == {"user": account["user"]}
        user_list = await client.wait_for("user-list")
        assert user_list == [{"uid": account["user"]["uid"], "name": "Pedro", "online": True}]
        await client.aclose()

    run(main())


def test_passwords_are_stored_as_argon2_hashes_and_the_secret_beside_the_db(chat, tmp_path) -> None:
    import sqlite3

    run(users(chat.url, "Pedro"))
    db = sqlite3.connect(tmp_path / "chat.db")
    (stored,) = db.execute("SELECT password_hash FROM users").fetchone()
    db.close()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    secret = (tmp_path / "chat.db.secret").read_text().strip()
    assert len(secret) >= 32 and (tmp_path / "chat.db.secret").stat().st_mode & 0o077 == 0


def test_bad_sign_up_and_login(chat) -> None:
    async def main() -> None:
        (pedro,) = await users(chat.url, "Pedro")
        client = await EventClient.connect(chat.url)
        good = {"name": "Ana", "email": "ana@example.com", "password": "long enough"}
        for bad in ({**good, "name": ""}, {**good, "email": "not-an-email"}, {**good, "password": "short"},
                    {**good, "name": 7}, None, "ana"):
            await refused(client, "sign-up", bad, "invalid-data")
        taken = await refused(client, "sign-up", {**good, "email": "PEDRO@example.com"}, "invalid-data")
        assert "already registered" in taken
        wrong = await refused(client, "login", {"email": pedro.email, "password": "not the password"}, "unauthorized")
        stranger = {"email": "nobody@example.com", "password": "whatever1"}
        nobody = await refused(client, "login", stranger, "unauthorized")
        assert wrong == nobody  # the answer does not tell which emails have accounts
        assert client.events("user-list") == []  # never authenticated
        await client.aclose()

    run(main())


def test_events_before_auth_are_unauthorized(chat) -> None:
    async def main() -> None:
        (pedro,) = await users(chat.url, "Pedro")
        client = await EventClient.connect(chat.url)
        await refused(client, "personal-message", {"to": pedro.uid, "message": "hi"}, "unauthorized")
        await refused(client, "history", {"with": pedro.uid}, "unauthorized")
        await refused(client, "typing", {"to": pedro.uid}, "unauthorized")
        await client.emit("typing", {"to": pedro.uid})  # without an id: an error event
        assert (await client.next("error"))["code"] == "unauthorized"
        await refused(client, "auth", {}, "unauthorized")
        await refused(client, "no-such-event", None, "unknown-event")
        assert pedro.inbox == [] and not client.closed
        await client.aclose()

    run(main())


def test_forged_expired_and_missing_tokens_are_refused(chat) -> None:
    async def main() -> None:
        (pedro,) = await users(chat.url, "Pedro")
        accounts = chat.server.state.accounts
        now = int(time.time())
        forged = jwt.encode({"sub": pedro.uid, "iat": now, "exp": now + 60}, "not the server's secret" * 2)
        expired = accounts.issue(pedro.uid, ttl=-10)
        tampered = pedro.token[:-3] + ("AAA" if not pedro.token.endswith("AAA") else "BBB")
        client = await EventClient.connect(chat.url)
        assert "expired" in await refused(client, "auth", {"token": expired}, "unauthorized")
        for token in (forged, tampered, "", None, 42, "a.b.c"):
            await refused(client, "auth", {"token": token}, "unauthorized")
        await refused(client, "history", {"with": pedro.uid}, "unauthorized")  # still not authenticated
        await client.aclose()
        # The same tokens in the URL: the socket stays open, unauthenticated, and is told why.
        for token in (forged, expired):
            socket = await EventClient.connect(chat.ws_url + "?token=" + token)
            assert (await socket.wait_for("error"))["code"] == "unauthorized"
            await refused(socket, "history", {"with": pedro.uid}, "unauthorized")
            assert socket.events("user-list") == []
            await socket.aclose()

    run(main())


def test_tokens_are_signed_with_a_per_install_secret(tmp_path) -> None:
    first = labtools.serve("chat", name="install-a", db=str(tmp_path / "a.db"), fast_hashing=True)
    second = labtools.serve("chat", name="install-b", db=str(tmp_path / "b.db"), fast_hashing=True)
    try:
        assert first.server.state.accounts.secret != second.server.state.accounts.secret
        (pedro,) = run(users(first.url, "Pedro"))
        claims = jwt.decode(pedro.token, first.server.state.accounts.secret, algorithms=["HS256"])
        assert claims["sub"] == pedro.uid and claims["exp"] > time.time()
        with pytest.raises(Exception, match="not valid"):
            second.server.state.accounts.check(pedro.token)
    finally:
        first.stop()
        second.stop()


def test_private_messages_reach_both_sides_only(chat) -> None:
    async def main() -> None:
        pedro, ana, carla = await users(chat.url, "Pedro", "Ana", "Carla")
        stored = await pedro.send(ana, "Hola Ana", client_id="c-1")
        assert set(stored) == {"id", "from", "to", "message", "createdAt", "clientId"}
        assert (stored["from"], stored["to"], stored["message"]) == (pedro.uid, ana.uid, "Hola Ana")
        assert await ana.socket.wait_for("personal-message") == stored
        assert await pedro.socket.wait_for("personal-message") == stored
        await asyncio.sleep(0.05)
        assert carla.inbox == []

    run(main())


def test_nobody_sends_as_or_reads_as_someone_else(chat) -> None:
    async def main() -> None:
        pedro, ana, carla = await users(chat.url, "Pedro", "Ana", "Carla")
        await pedro.send(ana, "only for Ana")
        # Carla claims to be Pedro in the data: the server takes the sender from her token.
        claim = {"to": ana.uid, "message": "I am Pedro", "from": pedro.uid}
        forged = await carla.socket.request("personal-message", claim)
        assert forged["from"] == carla.uid
        # History is always "between me and with": Carla cannot see Pedro and Ana's messages.
        assert [m["message"] for m in await carla.history(pedro)] == []
        assert [m["message"] for m in await carla.history(ana)] == ["I am Pedro"]
        assert [m["message"] for m in await pedro.history(ana)] == ["only for Ana"]
        # A second auth with someone else's token on an authenticated socket is refused.
        await refused(carla.socket, "auth", {"token": pedro.token}, "invalid-data")

    run(main())


def test_invalid_messages_and_history(chat) -> None:
    async def main() -> None:
        pedro, ana = await users(chat.url, "Pedro", "Ana")
        for bad in ({"to": "nobody", "message": "hi"}, {"to": ana.uid, "message": ""}, {"to": ana.uid, "message": "  "},
                    {"to": ana.uid}, {"message": "hi"}, {"to": ana.uid, "message": "x" * 2001},
                    {"to": ana.uid, "message": "hi", "clientId": 5}, "hi", None):
            await refused(pedro.socket, "personal-message", bad, "invalid-data")
        for bad in ({"with": "nobody"}, {"with": ana.uid, "after": "3"}, {"with": ana.uid, "after": -1}, {}):
            await refused(pedro.socket, "history", bad, "invalid-data")
        await refused(pedro.socket, "typing", {"to": "nobody"}, "invalid-data")
        assert await pedro.history(ana) == [] and ana.inbox == []

    run(main())


def test_history_last_30_oldest_first_and_after(chat) -> None:
    async def main() -> None:
        pedro, ana = await users(chat.url, "Pedro", "Ana")
        sent = [await (pedro if i % 2 else ana).send(ana if i % 2 else pedro, f"m{i}") for i in range(35)]
        last = await ana.history(pedro)
        assert [m["message"] for m in last] == [f"m{i}" for i in range(5, 35)]
        assert await pedro.history(ana) == last
        after = await ana.history(pedro, after=sent[2]["id"])
        assert [m["message"] for m in after] == [f"m{i}" for i in range(3, 33)]
        assert await ana.history(pedro, after=sent[-1]["id"]) == []

    run(main())


def test_typing_goes_to_the_recipient_only_and_is_not_stored(chat) -> None:
    async def main() -> None:
        pedro, ana, carla = await users(chat.url, "Pedro", "Ana", "Carla")
        await pedro.typing(ana)
        assert await ana.socket.next("typing") == {"from": pedro.uid}
        await asyncio.sleep(0.05)
        assert carla.socket.events("typing") == [] and pedro.socket.events("typing") == []
        assert await ana.history(pedro) == []

    run(main())


def test_presence_counts_users_not_sockets(chat) -> None:
    """A socket that never subscribed to deltas (Pedro's ``watcher``) follows presence with user-list."""

    def online(user_list: list[dict]) -> dict[str, bool]:
        return {u["name"]: u["online"] for u in user_list}

    async def main() -> None:
        pedro, ana = await users(chat.url, "Pedro", "Ana")
        watcher = await EventClient.connect(chat.ws_url)
        await watcher.request("auth", {"token": pedro.token})
        both = await watcher.wait_for("user-list", where=lambda d: len(d) == 2 and all(u["online"] for u in d))
        assert online(both) == {"Pedro": True, "Ana": True}
        second_tab = await EventClient.connect(chat.ws_url + "?token=" + ana.token)
        assert online(await second_tab.wait_for("user-list"))["Ana"] is True
        await asyncio.sleep(3 * chat.server.state.presence.window)
        before = len(watcher.events("user-list"))
        await asyncio.sleep(3 * chat.server.state.presence.window)
        assert len(watcher.events("user-list")) == before  # a second tab changes nothing for others
        await ana.disconnect()
        await asyncio.sleep(3 * chat.server.state.presence.window)
        assert len(watcher.events("user-list")) == before  # still online in the other tab
        assert pedro.online() == {"Pedro": True, "Ana": True}
        # The second tab is Ana too: a message to her reaches it.
        await pedro.send(ana, "to every tab")
        assert (await second_tab.wait_for("personal-message"))["message"] == "to every tab"
        await second_tab.aclose()
        gone = await watcher.wait_for("user-list", where=lambda d: online(d).get("Ana") is False)
        assert online(gone) == {"Pedro": True, "Ana": False}
        # Pedro's ChatUser subscribed to deltas: the same news came as one user-status.
        await pedro.wait_for_presence(lambda d: online(d).get("Ana") is False)
        assert pedro.socket.events("user-status")[-1] == {"uid": ana.uid, "name": "Ana", "online": False}
        await watcher.aclose()

    run(main())


def test_a_bad_frame_never_hurts_anyone_else(chat) -> None:
    async def main() -> None:
        pedro, ana = await users(chat.url, "Pedro", "Ana")
        await pedro.socket.send_raw("{not json")
        assert (await pedro.socket.next("error"))["code"] == "bad-json"
        await pedro.socket.send_raw('{"event": "personal-message", "data": {"to": 1}}')
        assert (await pedro.socket.next("error"))["code"] == "invalid-data"
        assert (await ana.send(pedro, "still here"))["message"] == "still here"
        assert chat.server.errors == []

    run(main())
