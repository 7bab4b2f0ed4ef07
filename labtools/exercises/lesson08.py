"""Lesson 08 (the private chat): exercises and their solutions, and private notes of the learner's
own whose every note needs a login token."""

from __future__ import annotations

from typing import Any

from ..events import AckError, EventClient
from .registry import AppUnderCheck, call, drive, exercise, file_exercise, learner_file, not_a_function


def check_duplicates(answer: Any) -> None:
    assert isinstance(answer, int) and not isinstance(answer, bool), f"answer with a number of rows, not {answer!r}"
    assert answer == 1, (
        f"{answer} rows? The server keeps one row per (sender, clientId): the retries find the first row and "
        "acknowledge it, they insert nothing"
    )


@exercise("08.1", check_duplicates, value=True)
def rows_after_two_retries() -> int:
    # Pedro's client sent "¿Cenamos?" with clientId "m-7", lost the acknowledgement twice and sent
    # it again each time: UNIQUE (sender, client_id) turns the two retries into lookups.
    return 1


def check_catch_up(answer: Any) -> None:
    assert isinstance(answer, dict), (
        f'answer with the data of the history request, a dict like {{"with": ...}}, not {answer!r}'
    )
    assert answer.get("with") == "u-pedro", "'with' is the other person's uid: Pedro's, 'u-pedro'"
    assert answer.get("after") != 42, (
        "'after' is the id of the last message Ana saw (41): the server sends the ones after it"
    )
    assert answer.get("after") == 41, "'after' is the id of the last message Ana saw, 41"
    extra = sorted(set(answer) - {"with", "after"})
    assert not extra, f"only 'with' and 'after' are needed, not {extra}"


@exercise("08.2", check_catch_up, value=True)
def catch_up_request() -> dict:
    # Ana's last message from Pedro had id 41; she asks for what came after it.
    return {"with": "u-pedro", "after": 41}


def check_presence(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "announce(before, after)")
    cases = {(0, 1): True, (1, 2): False, (2, 1): False, (1, 0): True, (3, 3): False, (0, 0): False}
    for (before, after), expected in cases.items():
        got = call(answer, before, after)
        why = ("the first connection opened or the last one closed: the user came or went"
               if expected else "the user was online before and still is (or still is not): nobody needs to know")
        assert isinstance(got, bool) or got != expected, f"return a bool (True or False), not {got!r}"
        assert got is expected, f"announce({before}, {after}) should be {expected}, not {got!r}: {why}"


@exercise("08.3", check_presence)
def announce(before: int, after: int) -> bool:
    # A user's open connections went from before to after: does everyone need a user-list?
    return (before == 0) != (after == 0)


#: 08.4: the accounts the check makes.
ANA, PEDRO = ("ana", "ana's password"), ("pedro", "pedro's password")


def unauthorized(error: AckError, what: str) -> None:
    assert error.code == "unauthorized", (
        f"{what} was refused with {error.code!r}; refuse it with the code 'unauthorized' "
        "(raise EventError(\"unauthorized\", ...))"
    )


def token_of(ack: Any, name: str) -> str:
    """The token of a ``login`` acknowledgement ``{"token": TOKEN}``, checked unguessable-looking."""
    assert isinstance(ack, dict) and isinstance(ack.get("token"), str), (
        f'{name}\'s login should be acknowledged with {{"token": TOKEN}}, TOKEN a str, not {ack!r}'
    )
    token = ack["token"]
    assert len(token) >= 16, (
        f"{name}'s token {token!r} can be guessed: make it a long random string (secrets.token_urlsafe()), "
        "never the name or a counter"
    )
    return token


def tampered(token: str) -> str:
    """``token`` with its middle character changed: the same length, not the same token."""
    middle = len(token) // 2
    return token[:middle] + ("B" if token[middle] == "A" else "A") + token[middle + 1:]


async def as_user(app: AppUnderCheck, name: str, token: str) -> EventClient:
    """A new socket, authenticated with ``token``."""
    client = await app.client(name)
    ack = await app.ask(client, "auth", {"token": token}, f"auth with {name}'s token")
    assert isinstance(ack, dict) and ack.get("name") == name, (
        f'auth with {name}\'s token should be acknowledged with {{"name": {name!r}}}, not {ack!r}'
    )
    return client


async def notes_need_a_token(app: AppUnderCheck) -> None:
    """No note without a valid token; each user's notes are theirs alone."""
    stranger = await app.client("stranger")
    for event, data in (("add-note", {"text": "hello"}), ("my-notes", None)):
        unauthorized(await app.refused(stranger, event, data, f"{event} on a socket that never authenticated"),
                     f"{event} before auth")
    ana_token = token_of(await app.ask(stranger, "login", {"name": ANA[0], "password": ANA[1]}, "ana's login"), "ana")
    unauthorized(await app.refused(stranger, "login", {"name": ANA[0], "password": "a guess"},
                                   "ana's login with a wrong password"), "a login with a wrong password")
    pedro_token = token_of(await app.ask(stranger, "login", {"name": PEDRO[0], "password": PEDRO[1]},
                                         "pedro's login"), "pedro")
    assert pedro_token != ana_token, "ana and pedro got the same token: each login gets a token of its own"
    for label, forged in (("a made-up token", "let-me-in-please-let-me-in"), ("the name as a token", ANA[0]),
                          ("ana's token with one letter changed", tampered(ana_token))):
        unauthorized(await app.refused(stranger, "auth", {"token": forged}, f"auth with {label}"), f"auth with {label}")
        unauthorized(await app.refused(stranger, "add-note", {"text": "sneaky"},
                                       f"add-note after a refused auth with {label}"), "add-note after a refused auth")
    ana, pedro = await as_user(app, "ana", ana_token), await as_user(app, "pedro", pedro_token)
    for notes, text in ((["buy milk"], "buy milk"), (["buy milk", "call mum"], "call mum")):
        got = await app.ask(ana, "add-note", {"text": text}, f"ana's add-note {text!r}")
        assert got == notes, f"ana's add-note {text!r} should be acknowledged with her notes {notes}, not {got!r}"
    got = await app.ask(pedro, "add-note", {"text": "feed the cat"}, "pedro's add-note")
    assert got == ["feed the cat"], (
        f"pedro's first note should be acknowledged with ['feed the cat'], not {got!r}: each user sees only their "
        "own notes, the user taken from the socket's token, never from the data"
    )
    again = await as_user(app, "ana", ana_token)  # another tab of Ana's, with the same token
    got = await app.ask(again, "my-notes", None, "my-notes on another socket of ana's")
    assert got == ["buy milk", "call mum"], (
        f"my-notes on another socket authenticated as ana should be answered with her notes, not {got!r}"
    )


def check_my_notes(answer: Any) -> None:
    drive(learner_file(answer, "my_notes.py"), notes_need_a_token)


file_exercise("08.4", check_my_notes, name="my_notes.py", solution="08_my_notes.py")
