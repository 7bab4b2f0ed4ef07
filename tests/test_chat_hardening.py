"""The chat under attack: guessing, flooding, presence storms, too many sockets, leaky files,
hidden characters and out-of-range ids. Each test is one attack from the probe, on real sockets."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from typing import Any

import pytest
import websockets

import labtools
from labtools.apps.chat import ChatLimits
from labtools.apps.chat.accounts import UnsafeSecretFile, load_secret
from labtools.apps.chat.presence import CLOSE_TOO_MANY
from labtools.apps.chat.throttle import is_loopback
from labtools.events import AckError, EventClient
from labtools.sim.chat_users import ChatUser

run = labtools.run
GENEROUS = 30.0  # seconds: liveness bounds on a busy, shared machine


def serve(tmp_path, name: str, **options: Any) -> Any:
    options.setdefault("fast_hashing", True)
    return labtools.serve("chat", name=name, db=str(tmp_path / f"{name}.db"), **options)


class Recorder:
    """An ``intercept`` that keeps every failed acknowledgement's raw error object."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def __call__(self, frame: Any) -> bool:
        if isinstance(frame, dict) and isinstance(frame.get("error"), dict):
            self.errors.append(frame["error"])
        return True


async def code_of(client: EventClient, event: str, data: Any, timeout: float = GENEROUS) -> str:
    """The error code ``event`` is refused with, or "ok"."""
    try:
        await client.request(event, data, timeout)
    except AckError as error:
        return error.code
    return "ok"


def wrong(email: str) -> dict[str, str]:
    return {"email": email, "password": "not the password"}


# ----- 1. password hashing: a bounded queue, attempts per connection, failure windows -----


def test_a_login_flood_is_refused_at_once_with_retry_after_and_a_real_user_still_gets_in(tmp_path) -> None:
    limits = ChatLimits(hash_max_wait=0.3)
    chat = serve(tmp_path, "flood", fast_hashing=False, limits=limits)

    async def main() -> None:
        pedro = await ChatUser("Pedro").sign_up(chat.url)
        await pedro.disconnect()
        recorder = Recorder()
        sockets = [await EventClient.connect(chat.url, intercept=recorder) for _ in range(40)]
        flood = [code_of(s, "login", wrong(f"guess{i}@example.com")) for i, s in enumerate(sockets)]
        codes = await asyncio.wait_for(asyncio.gather(*flood), GENEROUS)
        assert "rate-limited" in codes and set(codes) <= {"rate-limited", "unauthorized"}
        limited = [error for error in recorder.errors if error["code"] == "rate-limited"]
        assert all(set(error) == {"code", "message", "retryAfter"} for error in limited)
        assert all(0 < error["retryAfter"] <= GENEROUS for error in limited)
        # The genuine user is answered, and ChatUser waits retryAfter and tries again until in.
        again = [code_of(s, "login", wrong(f"again{i}@example.com")) for i, s in enumerate(sockets)]
        await asyncio.gather(pedro.log_in(chat.url), *again)
        assert pedro.uid and pedro.client is not None
        for socket in sockets:
            await socket.aclose()

    run(main(), timeout=120)
    assert chat.server.state.accounts.refused > 0 and chat.server.errors == []
    chat.stop()


def test_one_connection_cannot_guess_quickly(tmp_path) -> None:
    chat = serve(tmp_path, "guesser")

    async def main() -> None:
        recorder = Recorder()
        socket = await EventClient.connect(chat.url, intercept=recorder)
        codes = [await code_of(socket, "login", wrong(f"victim{i}@example.com")) for i in range(8)]
        burst = int(chat.server.state.limits.attempts_burst)
        assert codes[:burst] == ["unauthorized"] * burst and codes[burst:] == ["rate-limited"] * (8 - burst)
        assert recorder.errors[-1]["retryAfter"] > 0
        # Another connection is not affected: the bucket is per connection.
        other = await EventClient.connect(chat.url)
        assert await code_of(other, "login", wrong("someone@example.com")) == "unauthorized"
        await socket.aclose()
        await other.aclose()

    run(main())
    chat.stop()


def test_failures_close_an_account_for_a_doubling_window_that_expires(tmp_path) -> None:
    limits = ChatLimits(account_failures=3, lockout_base=0.5, attempts_burst=100)
    chat = serve(tmp_path, "lockout", limits=limits)

    async def main() -> None:
        pedro = await ChatUser("Pedro").sign_up(chat.url)
        recorder = Recorder()
        socket = await EventClient.connect(chat.url, intercept=recorder)
        right = {"email": pedro.email, "password": pedro.password}
        for email in (pedro.email, "nobody@example.com"):  # unknown emails behave the same
            assert [await code_of(socket, "login", wrong(email)) for _ in range(3)] == ["unauthorized"] * 3
            assert await code_of(socket, "login", wrong(email)) == "rate-limited"
        assert await code_of(socket, "login", right) == "rate-limited"  # even the right password waits
        first_window = recorder.errors[-1]["retryAfter"]
        assert 0 < first_window <= 0.6
        await asyncio.sleep(first_window + 0.1)
        assert await code_of(socket, "login", wrong(pedro.email)) == "unauthorized"
        assert await code_of(socket, "login", right) == "rate-limited"
        assert 0.6 < recorder.errors[-1]["retryAfter"] <= 1.1  # the window doubled
        await asyncio.sleep(recorder.errors[-1]["retryAfter"] + 0.1)
        assert await code_of(socket, "login", right) == "ok"  # it expired: the real user gets in
        assert chat.server.state.account_failures.failures(pedro.email) == 0  # and the success cleared it
        await socket.aclose()

    run(main())
    chat.stop()


def test_many_sockets_at_once_get_no_more_guesses_at_one_account_than_one_socket(tmp_path) -> None:
    limits = ChatLimits(account_failures=3, lockout_base=60)
    chat = serve(tmp_path, "crowd-guess", limits=limits)

    async def main() -> list[list[str]]:
        pedro = await ChatUser("Pedro").sign_up(chat.url)
        sockets = [await EventClient.connect(chat.url) for _ in range(30)]
        rounds = [await asyncio.gather(*(code_of(s, "login", wrong(pedro.email)) for s in sockets)) for _ in range(5)]
        for socket in sockets:
            await socket.aclose()
        return rounds

    rounds = run(main())
    guesses = sum(codes.count("unauthorized") for codes in rounds)
    assert guesses == 3 == chat.server.state.account_failures.failures("pedro@example.com")  # 150 tries, 3 checked
    assert rounds[-1] == ["rate-limited"] * 30  # the window is closed: not one more guess
    chat.stop()


def test_failures_per_address_count_except_from_loopback(tmp_path) -> None:
    counted = serve(tmp_path, "by-address", limits=ChatLimits(address_failures=3, exempt=lambda address: False))
    loopback = serve(tmp_path, "loopback", limits=ChatLimits(address_failures=3))

    async def failures(url: str, n: int) -> list[str]:
        codes = []
        for i in range(n):  # a new socket and a new email each time: only the address is shared
            socket = await EventClient.connect(url)
            codes.append(await code_of(socket, "login", wrong(f"user{i}@example.com")))
            await socket.aclose()
        return codes

    assert run(failures(counted.url, 4)) == ["unauthorized"] * 3 + ["rate-limited"]
    # Binder's proxy and the lessons' crowds are all 127.0.0.1: that address is never blamed.
    assert run(failures(loopback.url, 8)) == ["unauthorized"] * 8
    assert is_loopback("::1") and is_loopback("::ffff:127.0.0.1") and not is_loopback("203.0.113.7")
    assert run(ChatUser("Carla").sign_up(loopback.url)).uid
    counted.stop()
    loopback.stop()


class CountingHasher:
    """The server's argon2 hasher, counting the hashes it computes."""

    def __init__(self, hasher: Any) -> None:
        self.hasher = hasher
        self.hashes = 0

    def hash(self, password: str) -> str:
        self.hashes += 1
        return self.hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        self.hashes += 1
        return self.hasher.verify(password_hash, password)


def test_a_taken_email_costs_a_sign_up_the_same_hash_as_a_login(tmp_path) -> None:
    chat = serve(tmp_path, "taken")
    accounts = chat.server.state.accounts

    async def main() -> None:
        pedro = await ChatUser("Pedro").sign_up(chat.url)
        socket = await EventClient.connect(chat.url)
        counting = accounts.hasher = CountingHasher(accounts.hasher)
        taken = {"name": "Impostor", "email": pedro.email, "password": "long enough"}
        assert await code_of(socket, "sign-up", taken) == "invalid-data"
        assert counting.hashes == 1  # hashed before the email was looked up
        await socket.aclose()

    run(main())
    chat.stop()


def test_chat_user_timeouts_say_what_and_why(tmp_path) -> None:
    async def silent(connection: Any) -> None:
        async for _frame in connection:  # reads everything, answers nothing
            pass

    async def main() -> str:
        async with websockets.serve(silent, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            with pytest.raises(TimeoutError) as caught:
                await ChatUser("Pedro").sign_up(f"http://127.0.0.1:{port}/", timeout=0.5)
            return str(caught.value)

    message = run(main())
    assert "sign-up of Pedro got no answer in 0.5 s" in message and "argon2" in message and "per hash" in message


# ----- 2. presence: coalesced lists, opt-in deltas, a cap on sockets per user ---------------


def test_a_presence_storm_sends_each_socket_at_most_one_list_per_window(tmp_path) -> None:
    chat = serve(tmp_path, "storm")
    window = chat.server.state.presence.window

    async def main() -> None:
        cyclers = [await ChatUser(f"cycler{i}").sign_up(chat.url) for i in range(5)]
        listener = await ChatUser("Listener").sign_up(chat.url)
        watcher = await EventClient.connect(chat.url)
        await watcher.request("auth", {"token": listener.token})
        await asyncio.sleep(2 * window)
        lists_before, statuses_before = len(watcher.events("user-list")), len(listener.socket.events("user-status"))
        start = time.monotonic()
        for _round in range(10):
            await asyncio.gather(*(user.connect(chat.url) for user in cyclers))
            await asyncio.gather(*(user.disconnect() for user in cyclers))
        elapsed = time.monotonic() - start
        everyone_offline = lambda d: all(u["online"] is (u["name"] == "Listener") for u in d)  # noqa: E731
        last = await watcher.wait_for("user-list", where=everyone_offline)
        await listener.wait_for_presence(everyone_offline)
        windows = elapsed / window + 2
        lists = len(watcher.events("user-list")) - lists_before
        statuses = len(listener.socket.events("user-status")) - statuses_before
        assert 1 <= lists <= windows, (lists, windows)  # 100 changes happened
        assert len(cyclers) <= statuses <= len(cyclers) * windows
        assert listener.socket.events("user-list")[-1] is not last  # the subscriber got no lists
        await watcher.aclose()

    run(main(), timeout=120)
    chat.stop()


def test_subscribe_presence_is_acknowledged_with_the_list_then_user_status(tmp_path) -> None:
    chat = serve(tmp_path, "deltas")

    async def main() -> None:
        stranger = await EventClient.connect(chat.url)
        assert await code_of(stranger, "subscribe-presence", None) == "unauthorized"
        await stranger.aclose()
        pedro = await ChatUser("Pedro").sign_up(chat.url)
        socket = await EventClient.connect(chat.url)
        await socket.request("auth", {"token": pedro.token})
        lists = len(socket.events("user-list"))
        assert await socket.request("subscribe-presence") == [{"uid": pedro.uid, "name": "Pedro", "online": True}]
        ana = await ChatUser("Ana").sign_up(chat.url)
        online = await socket.wait_for("user-status", where=lambda s: s["uid"] == ana.uid and s["online"],
                                       timeout=GENEROUS)
        assert online == {"uid": ana.uid, "name": "Ana", "online": True}
        await ana.disconnect()
        offline = await socket.wait_for("user-status", where=lambda s: s["uid"] == ana.uid and not s["online"],
                                        timeout=GENEROUS)
        assert offline == {"uid": ana.uid, "name": "Ana", "online": False}
        assert len(socket.events("user-list")) == lists  # no more whole lists once subscribed
        assert pedro.online() == {"Pedro": True, "Ana": False}
        await socket.aclose()

    run(main())
    chat.stop()


def test_one_socket_too_many_closes_the_users_oldest_with_4001(tmp_path) -> None:
    chat = serve(tmp_path, "cap", limits=ChatLimits(max_sockets=3))

    async def main() -> None:
        pedro, ana = ChatUser("Pedro"), ChatUser("Ana")
        await pedro.sign_up(chat.url)
        await ana.sign_up(chat.url)
        tabs = []
        for _ in range(3):  # with the ChatUser's own socket: four, one over the cap
            tab = await EventClient.connect(chat.url)
            await tab.request("auth", {"token": pedro.token})
            tabs.append(tab)
        oldest = pedro.socket
        await asyncio.wait_for(oldest.connection.wait_closed(), GENEROUS)
        assert oldest.connection.close_code == CLOSE_TOO_MANY == 4001
        assert oldest.connection.close_reason == "too many connections for this user"
        assert len(chat.server.state.connections[pedro.uid]) == 3 and not any(tab.closed for tab in tabs)
        await ana.send(pedro, "to every open tab")
        for tab in tabs:
            assert (await tab.wait_for("personal-message"))["message"] == "to every open tab"
        assert ana.online()["Pedro"] is True
        for tab in tabs:
            await tab.aclose()

    run(main())
    chat.stop()


# ----- 3. files: owner-only database, WAL, SHM and secret; a loose secret is refused ----------


def mode(path: Any) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_database_its_side_files_and_the_secret_are_owner_only(tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        chat = serve(tmp_path, "files")
        run(ChatUser("Pedro").sign_up(chat.url))
        db = tmp_path / "files.db"
        for path in (db, f"{db}-wal", f"{db}-shm", f"{db}.secret"):
            assert mode(path) == 0o600, (path, oct(mode(path)))
        chat.stop()
        # Files left world-readable by an older version are tightened when the store opens.
        for path in (db, f"{db}-wal", f"{db}-shm"):
            if os.path.exists(path):
                os.chmod(path, 0o644)
        chat = serve(tmp_path, "files")
        run(ChatUser("Pedro").log_in(chat.url))
        for path in (db, f"{db}-wal", f"{db}-shm"):
            assert mode(path) == 0o600, (path, oct(mode(path)))
        chat.stop()
    finally:
        os.umask(previous)


def test_a_secret_others_can_read_or_write_or_own_is_refused(tmp_path) -> None:
    secret = tmp_path / "chat.db.secret"
    secret.write_text("s" * 43 + "\n")
    for loose in (0o644, 0o620, 0o604):
        secret.chmod(loose)
        with pytest.raises(UnsafeSecretFile, match="chmod 600"):
            load_secret(secret)
    with pytest.raises(UnsafeSecretFile):
        labtools.serve("chat", name="loose", db=str(tmp_path / "chat.db"), fast_hashing=True)
    secret.chmod(0o600)
    assert load_secret(secret) == "s" * 43
    link = tmp_path / "link.secret"
    link.symlink_to(secret)
    with pytest.raises(UnsafeSecretFile, match="symlink"):
        load_secret(link)
    if os.getuid() == 0:  # only root can give a file away; elsewhere the owner check is the same code
        os.chown(secret, 65534, -1)
        with pytest.raises(UnsafeSecretFile, match="belongs to uid 65534"):
            load_secret(secret)


# ----- 4 and 5. names, emails and ids --------------------------------------------------------


def test_names_are_normalised_and_hidden_characters_refused(tmp_path) -> None:
    chat = serve(tmp_path, "names")

    async def main() -> None:
        socket = await EventClient.connect(chat.url)

        def fields(name: str, i: int) -> dict[str, str]:
            return {"name": name, "email": f"n{i}@example.com", "password": "long enough"}

        hidden = ["Ana\x00", "Ana\nBob", "Ana\n", "\u202eanA", "A\u200bna", "Ana\u2066"]
        for i, name in enumerate(hidden):
            with pytest.raises(AckError) as caught:
                await socket.request("sign-up", fields(name, i))
            assert caught.value.code == "invalid-data" and "control or format" in caught.value.message
        with pytest.raises(AckError) as caught:
            await socket.request("sign-up", fields("x" + "\u0301" * 3, 10))
        assert caught.value.code == "invalid-data" and "combining marks" in caught.value.message
        account = await socket.request("sign-up", fields("  Jose\u0301 ", 11))
        assert account["user"]["name"] == "José" == "Jos\u00e9"  # NFC, stripped
        account = await socket.request("sign-up", fields("Ñandú e\u0301\u0302", 12))
        assert account["user"]["name"] == "Ñandú \u00e9\u0302"
        await socket.aclose()

    run(main())
    assert chat.server.errors == []
    chat.stop()


def test_trailing_newlines_and_ids_beyond_sqlite_are_invalid_data(tmp_path) -> None:
    chat = serve(tmp_path, "edges")

    async def main() -> None:
        pedro = await ChatUser("Pedro").sign_up(chat.url)
        ana = await ChatUser("Ana").sign_up(chat.url)
        for email in ("bob@example.com\n", "bob\n@example.com", "bob@example.com\r\n", "bob\x00@example.com"):
            fields = {"name": "Bob", "email": email, "password": "long enough"}
            assert await code_of(pedro.socket, "sign-up", fields) == "invalid-data"
        assert await code_of(pedro.socket, "login", {"email": pedro.email + "\n", "password": pedro.password}) == (
            "invalid-data")
        for after in (2**63, 2**64, 10**30):
            assert await code_of(pedro.socket, "history", {"with": ana.uid, "after": after}) == "invalid-data"
        assert await pedro.history(ana, after=2**63 - 1) == []

    run(main())
    assert chat.server.errors == []
    chat.stop()
