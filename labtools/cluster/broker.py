"""Broker URLs: which forms a node accepts, and how its password travels.

Who can forge what: anyone who can send commands to the broker can publish any message on the
bus and append any entry to an app's log, so every node would deliver a forged message as its
own; what protects a deployment is that nobody else can talk to its Redis: a password (or a
unix socket only its user can open), and TLS once it leaves the machine.

The forms ``--broker`` accepts:

* ``redis://HOST:PORT[/DB]``, or with credentials ``redis://[USER]:PASSWORD@HOST:PORT[/DB]``;
* ``rediss://...``: the same over TLS;
* ``unix:///PATH/redis.sock[?db=N]``: a unix socket (its directory's permissions decide who may
  connect), with ``unix://[USER]:PASSWORD@/PATH...`` for credentials.

A password on a command line is readable by every user of the machine (``/proc/PID/cmdline``),
so a node also takes it from the environment variable ``LABTOOLS_BROKER_PASSWORD`` (only its own
user can read a process's environment): the deployments labtools starts pass it that way.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote, unquote

#: The environment variable a node reads its broker password from when the URL has none.
PASSWORD_ENV = "LABTOOLS_BROKER_PASSWORD"
_HOST = r"(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])"
_CREDENTIALS = r"(?:(?P<user>[^:@/\s]*):(?P<password>[^@/\s]+)@)?"
_TCP = re.compile(rf"(?P<scheme>rediss?)://{_CREDENTIALS}{_HOST}:(?P<port>[0-9]{{1,5}})(?:/(?P<db>[0-9]{{1,2}}))?/?")
_UNIX = re.compile(rf"unix://{_CREDENTIALS}(?P<path>/[^?\s]+)(?:\?db=(?P<db>[0-9]{{1,2}}))?")
FORMS = ("redis://[[USER]:PASSWORD@]HOST:PORT[/DB], rediss://... (TLS) or unix:///PATH/redis.sock[?db=N], "
         f"the password also from ${PASSWORD_ENV}")


def _match(url: str) -> re.Match[str] | None:
    match = _TCP.fullmatch(url) or _UNIX.fullmatch(url)
    if match is None:
        return None
    if "port" in match.groupdict() and not 0 < int(match["port"]) < 65536:
        return None
    return match


def check_broker_url(url: str) -> str:
    """``url`` when it is one of the accepted forms (``FORMS``); else ValueError saying them."""
    if _match(url) is None:
        raise ValueError(f"broker {redacted(url)!r} is not a Redis URL: {FORMS}; e.g. redis://127.0.0.1:6379/0")
    return url


def database(url: str) -> int:
    """The database number of a broker URL (0 when it names none)."""
    match = _match(url)
    return int(match["db"]) if match is not None and match["db"] else 0


def password_of(url: str) -> str | None:
    """The password a URL carries, or None."""
    match = _match(url)
    return unquote(match["password"]) if match is not None and match["password"] else None


def without_password(url: str) -> str:
    """``url`` with its credentials removed: what may appear on a command line or in a repr."""
    match = _match(url)
    if match is None or match["password"] is None:
        return url
    return url[:match.start("user")] + url[match.end("password") + 1:]  # drop "USER:PASSWORD@"


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in it (for a client in this process, never a command line)."""
    if password_of(url) is not None:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://:{quote(password, safe='')}@{rest}"


def connection_options(url: str) -> dict[str, Any]:
    """What ``Redis.from_url(url, **...)`` needs beyond the URL: the password from
    ``LABTOOLS_BROKER_PASSWORD`` when the URL carries none."""
    password = os.environ.get(PASSWORD_ENV)
    return {"password": password} if password and password_of(url) is None else {}


def redacted(url: str) -> str:
    """``url`` for messages: its password replaced by ``***``."""
    match = _match(url)
    if match is None or match["password"] is None:
        return re.sub(r":[^:@/\s]+@", ":***@", url)
    start, end = match.span("password")
    return url[:start] + "***" + url[end:]
