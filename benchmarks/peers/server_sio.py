"""The Python peer: python-socketio (on aiohttp) and aiosqlite, the same two apps as server.mjs.

    .venv-peers/bin/python server_sio.py [--port N] [--db PATH]

Runs in benchmarks/peers/.venv-peers (requirements-peers.txt), never in the course's venv.
One server serves both workloads: ``msg-to-server`` is broadcast as ``msg-from-server`` to
everyone, and the private chat works as in server.mjs (handshake ``auth: {uid}``, the user
registered before the connection is accepted, ``personal-message`` inserted with aiosqlite on
its own thread in WAL / synchronous=NORMAL with UNIQUE(sender, client_id), acknowledged with the
stored row, emitted to the rooms of both parties). Prints ``http://127.0.0.1:PORT/`` once
listening; SIGTERM or SIGINT closes it and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosqlite
import socketio
from aiohttp import web

MAX_TEXT = 2000
MAX_CLIENT_ID = 100
SCHEMA = """
CREATE TABLE IF NOT EXISTS users (uid TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pair TEXT NOT NULL,
    sender TEXT NOT NULL REFERENCES users(uid),
    recipient TEXT NOT NULL REFERENCES users(uid),
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    client_id TEXT,
    UNIQUE (sender, client_id)
);
CREATE INDEX IF NOT EXISTS messages_by_pair ON messages (pair, id);
"""
COLUMNS = "id, sender, recipient, body, created_at, client_id"


def failure(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def as_message(row: Any) -> dict[str, Any]:
    id_, sender, recipient, body, created_at, client_id = row
    message = {"id": id_, "from": sender, "to": recipient, "message": body, "createdAt": created_at}
    if client_id is not None:
        message["clientId"] = client_id
    return message


async def main(port: int, db_path: str) -> None:
    db = await aiosqlite.connect(db_path, isolation_level=None)  # autocommit: one statement, one commit
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute("PRAGMA foreign_keys=ON")
    await db.executescript(SCHEMA)
    users = {row[0] for row in await db.execute_fetchall("SELECT uid FROM users")}

    sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"], cors_allowed_origins=None)
    app = web.Application()
    sio.attach(app)

    @sio.event
    async def connect(sid: str, environ: dict, auth: Any) -> None:
        uid = auth.get("uid") if isinstance(auth, dict) else None
        if uid is None:  # a minichat client: no user
            return
        if not isinstance(uid, str) or not 0 < len(uid) <= 100:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized")
        if uid not in users:
            await db.execute("INSERT OR IGNORE INTO users (uid, name) VALUES (?, ?)", (uid, uid))
            users.add(uid)
        await sio.save_session(sid, {"uid": uid})
        await sio.enter_room(sid, uid)

    @sio.on("msg-to-server")
    async def message(sid: str, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("text"), str) or not data["text"].strip():
            return
        reply = {"text": data["text"], "at": time.time()}
        if isinstance(data.get("sentAt"), (int, float)):
            reply["sentAt"] = data["sentAt"]
        await sio.emit("msg-from-server", reply)

    @sio.on("personal-message")
    async def personal_message(sid: str, data: Any) -> dict[str, Any]:
        session = await sio.get_session(sid)
        sender = session.get("uid")
        if sender is None:
            return failure("unauthorized", "name a user in the handshake")
        if not isinstance(data, dict):
            return failure("invalid-data", "takes {to, message}")
        to, text, client_id = data.get("to"), data.get("message"), data.get("clientId")
        if not isinstance(to, str) or to not in users:
            return failure("invalid-data", "'to' must be a user")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            return failure("invalid-data", "'message' must be a non-empty string")
        if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID):
            return failure("invalid-data", "'clientId' must be a short string")
        pair = f"{sender}|{to}" if sender <= to else f"{to}|{sender}"
        rows = await db.execute_fetchall(
            "INSERT INTO messages (pair, sender, recipient, body, created_at, client_id) VALUES (?, ?, ?, ?, ?, ?)"
            f" ON CONFLICT (sender, client_id) DO NOTHING RETURNING {COLUMNS}",
            (pair, sender, to, text, int(time.time() * 1000), client_id),
        )
        if rows:
            stored = as_message(next(iter(rows)))
            await sio.emit("personal-message", stored, to=[sender, to])
            return stored
        rows = await db.execute_fetchall(
            f"SELECT {COLUMNS} FROM messages WHERE sender = ? AND client_id = ?", (sender, client_id)
        )
        return as_message(next(iter(rows)))

    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0]
    print(f"http://{bound[0]}:{bound[1]}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    if args.db:
        asyncio.run(main(args.port, args.db))
    else:
        with tempfile.TemporaryDirectory(prefix="sio-peer-") as folder:
            asyncio.run(main(args.port, str(Path(folder) / "chat.db")))
