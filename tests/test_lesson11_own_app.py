"""Lesson 11·2's own app (``_deploy/my_app.py``, read from the notebook) and exercise 11.3's check,
over real sockets: what the check rejects, and the by-hand deployment the lesson shows, run the
way the lesson runs it (``lt.launch``: redis-server with its password in a 0600 file, nodes given
it in ``LABTOOLS_BROKER_PASSWORD``, never on a command line)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_redis
from lesson11_files import learner_files, write_learner_files

import labtools as lt
from labtools.cluster.broker import PASSWORD_ENV

SPEC = "_deploy/my_app.py:build"


@pytest.fixture
def lesson_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder holding what lesson 11·2 writes beside itself, as the working directory."""
    write_learner_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    lt.stop_all()


def test_the_lesson_writes_its_app_into_the_deploy_folder() -> None:
    files = learner_files()
    assert set(files) == {"_deploy/my_app.py"}, set(files)
    assert "def build()" in files["_deploy/my_app.py"] and "@server.change" in files["_deploy/my_app.py"]


def test_three_servers_that_share_no_broker_are_rejected(lesson_folder: Path) -> None:
    """The mistake 11.3 invites: three plain servers of the app, each its own wall."""
    urls = [lt.serve(SPEC, name=f"wall-alone-{k}").url for k in range(3)]
    with pytest.raises(AssertionError, match=r"were counted \[1, 1, 1\]") as info:
        lt.check("11.3", urls)
    assert "share one broker" in str(info.value)


def test_the_by_hand_deployment_passes_and_a_node_without_the_password_does_not_start(lesson_folder: Path) -> None:
    require_redis()
    deploy = lesson_folder / "_deploy"
    password = secrets.token_urlsafe(24)
    fd = os.open(deploy / "redis.conf", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as config:
        config.write(f"requirepass {password}\n")
    redis = lt.launch("redis-server", "redis.conf", "--port", "{port}", "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", cwd=deploy, name="test-my-redis")
    broker = f"redis://127.0.0.1:{redis.port}"

    def node(name: str, env: dict[str, str] | None) -> lt.deploy.Launched:
        return lt.launch("python", "-m", "labtools", "serve", "my_app.py:build", "--broker", broker,
                         "--node", name, "--port", "{port}", cwd=deploy, name=f"test-my-{name}", env=env, timeout=60)

    nodes = [node(f"node{k}", {PASSWORD_ENV: password}) for k in (1, 2, 3)]
    assert not any(password in n.command for n in (redis, *nodes))
    lt.check("11.3", [n.url for n in nodes])
    with pytest.raises(RuntimeError, match="exited before it listened"):
        node("no-password", None)
