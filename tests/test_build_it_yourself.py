"""The "build it yourself" exercises of lessons 05-08 really check, over real sockets.

For each one: the solution file (``notebooks/solutions/``) passes; plausible wrong apps, each
the solution with one mistake a learner makes, written to a file as the learner's
``%%writefile`` cell would, are rejected with a message that names the mistake; the skeleton the
lesson's own ``%%writefile`` cell writes says "not attempted yet"; ``lt.solution`` prints the
solution as that cell; an answer that is no file is told so; and the check leaves no server
listening, whether the app passed or failed.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import psutil
import pytest

import labtools as lt
from labtools.exercises.registry import FileExercise, all_file_exercises, get

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {"05.3": "05_band_votes.ipynb", "06.3": "06_ticket_queue.ipynb", "07.3": "07_live_map.ipynb",
             "08.4": "08_private_chat.ipynb"}
IDS = sorted(NOTEBOOKS)

RACE_VOTE = '''        count = server.state.counts[option]
        await asyncio.sleep(0.01)  # saving the vote somewhere, say
        server.state.counts[option] = count + 1
        server.broadcast("poll", server.state.as_data())
        return server.state.as_data()'''
RACE_COAT = '''        number = server.state.last_number + 1
        await asyncio.sleep(0.01)  # printing the ticket, say
        server.state.last_number = number
        server.state.hooks[number] = coat
        return {"number": number}'''
ANY_LONG_TOKEN = '''        require(isinstance(token, str) and len(token) >= 16, "that is not a token")
        name = server.state.tokens.get(token, "someone")'''

#: id -> [(the mistake, edits of the solution's text (old, new), a fragment of the message)]
WRONG: dict[str, list[tuple[str, list[tuple[str, str]], str]]] = {
    "05.3": [
        ("counts kept per connection",
         [('EventServer("my-poll", Poll())', 'EventServer("my-poll", Poll(), session=Poll)'),
          ('client.emit("poll", server.state.as_data())', 'client.emit("poll", client.session.as_data())'),
          ("        return await server.update(vote, option, sender=client)",
           '        client.session.counts[option] += 1\n        return client.session.as_data()')],
         "not to each connection"),
        ("awaits between reading and writing a count",
         [("from dataclasses import", "import asyncio\nfrom dataclasses import"),
          ("        return await server.update(vote, option, sender=client)", RACE_VOTE)],
         "votes were lost"),
        ("only the voter hears of a vote", [('        server.broadcast("poll", poll.as_data())\n', "")],
         "everyone, the voter included"),
        ("everyone but the voter hears of a vote",
         [("def vote(poll: Poll, option: str)", "def vote(poll: Poll, option: str, sender: Client | None)"),
          ('server.broadcast("poll", poll.as_data())', 'server.broadcast("poll", poll.as_data(), exclude=sender)')],
         "the voter included"),
        ("an unknown option not refused",
         [("        require(isinstance(option, str)", "        (isinstance(option, str)")], "refuse it instead"),
    ],
    "06.3": [
        ("numbers counted per connection",
         [('Cloakroom())', "Cloakroom(), session=Cloakroom)"),
          ('        return {"number": await server.update(hang, coat, sender=client)}',
           "        client.session.last_number += 1\n"
           "        server.state.hooks[client.session.last_number] = coat\n"
           '        return {"number": client.session.last_number}')],
         "the same number more than once"),
        ("awaits between reading and bumping the counter",
         [("from dataclasses import", "import asyncio\nfrom dataclasses import"),
          ('        return {"number": await server.update(hang, coat, sender=client)}', RACE_COAT)],
         "the same number more than once"),
        ("the next number is len(hooks) + 1", [("room.last_number += 1", "room.last_number = len(room.hooks) + 1")],
         "never given twice"),
        ("the number emitted, not acknowledged",
         [('return {"number": await server.update(hang, coat, sender=client)}',
           'client.emit("your-number", {"number": await server.update(hang, coat, sender=client)})')],
         "no data (None)"),
        ("a collected coat stays on its hook", [("return room.hooks.pop(number)", "return room.hooks[number]")],
         "a second collect"),
    ],
    "07.3": [
        ("broadcast to everyone, the sender too", [(", exclude=client)", ")")], "everyone but the sender"),
        ("sent back to the sender only",
         [('server.broadcast("reaction", {"name": name, "emoji": emoji}, exclude=client)',
           'client.emit("reaction", {"name": name, "emoji": emoji})')],
         "should receive reaction"),
        ("any emoji let through", [("        require(emoji in EMOJIS", "        (emoji in EMOJIS")],
         "expected a refusal"),
    ],
    "08.4": [
        ("notes without a token",
         [('        if client.session.name is None:\n'
           '            raise EventError("unauthorized", "log in, then auth with your token")\n'
           "        return client.session.name",
           '        return client.session.name or "guest"')],
         "never authenticated"),
        ("refused with invalid-data, not unauthorized",
         [('            raise EventError("unauthorized", "log in, then auth with your token")',
           '            require(False, "log in, then auth with your token")')],
         "with the code 'unauthorized'"),
        ("the name as the token", [("token = secrets.token_urlsafe(24)", "token = name")], "can be guessed"),
        ("auth believes any long token",
         [("        name = server.state.tokens.get(token) if isinstance(token, str) else None", ANY_LONG_TOKEN)],
         "auth with a made-up token"),
        ("the password never checked",
         [("        if not await password_matches(stored, password):\n"
           '            raise EventError("unauthorized", "wrong name or password")\n', "")],
         "wrong password"),
        ("everyone's notes in one list",
         [('notes.notes.setdefault(note["name"], [])', 'notes.notes.setdefault("everyone", [])')],
         "only their own notes"),
    ],
}
CASES = [pytest.param(id, edits, fragment, id=f"{id}-{what}") for id, wrongs in WRONG.items()
         for what, edits, fragment in wrongs]


def file_exercise(id: str) -> FileExercise:
    exercise = get(id)
    assert isinstance(exercise, FileExercise)
    return exercise


def skeleton(id: str) -> str:
    """What the lesson's ``%%writefile NAME`` cell writes, from the committed notebook."""
    magic = f"%%writefile {file_exercise(id).name}\n"
    cells = json.loads((ROOT / "notebooks" / NOTEBOOKS[id]).read_text(encoding="utf-8"))["cells"]
    sources = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    found = [source.removeprefix(magic) for source in sources if source.startswith(magic)]
    assert len(found) == 1, f"{NOTEBOOKS[id]} should have one cell starting with {magic!r}"
    return found[0] + "\n"


def functions(text: str) -> set[str]:
    """The names of the functions a file defines, at any depth."""
    return {node.name for node in ast.walk(ast.parse(text)) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def listening() -> int:
    """How many TCP sockets this process listens on."""
    return sum(c.status == psutil.CONN_LISTEN for c in psutil.Process().net_connections(kind="tcp"))


def test_the_exercises_of_lessons_05_to_08() -> None:
    assert [exercise.id for exercise in all_file_exercises()] == IDS
    assert set(WRONG) == set(IDS)
    for id in IDS:
        assert file_exercise(id).solution_file.is_file()


@pytest.mark.parametrize("id", IDS)
def test_solution_passes_and_stops_what_it_started(id: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = listening()
    lt.check(id, file_exercise(id).answer())
    assert f"Exercise {id}: ✓ correct." in capsys.readouterr().out
    assert listening() == before, "the check left a server listening"


@pytest.mark.parametrize(("id", "edits", "fragment"), CASES)
def test_wrong_app_is_rejected_with_a_message(id: str, edits: list[tuple[str, str]], fragment: str,
                                              tmp_path: Path) -> None:
    exercise = file_exercise(id)
    text = exercise.solution_file.read_text(encoding="utf-8")
    for old, new in edits:
        assert text.count(old) == 1, f"the solution changed: {old!r} is no longer in it once"
        text = text.replace(old, new)
    path = tmp_path / exercise.name
    path.write_text(text, encoding="utf-8")
    before = listening()
    with pytest.raises(AssertionError) as info:
        lt.check(id, str(path))
    assert fragment in str(info.value), f"the message should say {fragment!r}: {info.value}"
    assert listening() == before, "a failed check left a server listening"


@pytest.mark.parametrize("id", IDS)
def test_the_lessons_skeleton_is_not_attempted_yet(id: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / file_exercise(id).name
    path.write_text(skeleton(id), encoding="utf-8")
    lt.check(id, str(path))
    out = capsys.readouterr().out
    assert f"Exercise {id}: not attempted yet: {path.name} still has `...`" in out, out
    solution = functions(file_exercise(id).solution_file.read_text(encoding="utf-8"))
    assert functions(skeleton(id)) <= solution, "the skeleton asks for functions the solution does not write"


@pytest.mark.parametrize("id", IDS)
def test_solution_is_the_cell_that_writes_the_file(id: str, capsys: pytest.CaptureFixture[str]) -> None:
    exercise = file_exercise(id)
    lt.solution(id)
    shown = capsys.readouterr().out
    assert shown == f"%%writefile {exercise.name}\n" + exercise.solution_file.read_text(encoding="utf-8") + "\n"


@pytest.mark.parametrize("id", IDS)
def test_an_answer_that_is_no_file_is_told_so(id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = file_exercise(id).name
    for answer, fragment in ((object(), f'"{name}"'), (str(tmp_path / name), f"%%writefile {name}")):
        with pytest.raises(AssertionError) as info:
            lt.check(id, answer)
        assert fragment in str(info.value), str(info.value)
    lt.check(id, ...)
    assert f"Exercise {id}: not attempted yet" in capsys.readouterr().out


def test_a_file_that_does_not_build_is_told_so(tmp_path: Path) -> None:
    path = tmp_path / "my_poll.py"
    for text, fragment in (("def build(:\n", "not valid Python"),
                           ("def build():\n    return 1 / 0\n", "build() failed"),
                           ("def build():\n    return None\n", "build() failed")):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(AssertionError) as info:
            lt.check("05.3", str(path))
        assert fragment in str(info.value), str(info.value)
