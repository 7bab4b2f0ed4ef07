"""Which browser pages may open a server's socket, and the headers every HTTP answer carries.

Without the Origin check, any page the learner visits could open the socket of a server in
their kernel and act in their name (cross-site WebSocket hijacking); without the headers, a
page could be sniffed as another type or framed by any site.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from websockets.datastructures import Headers

#: Extra origins a browser page may open sockets from (comma-separated), beside the server's own.
ORIGINS_ENV = "LABTOOLS_ALLOWED_ORIGINS"
HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


#: An origin as a browser sends it: http or https, a host name or address, an optional port.
ORIGIN = re.compile(r"https?://(?:[a-z0-9.\-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


def checked_origins(origins: Iterable[str], source: str) -> frozenset[str]:
    """``origins`` normalised (lower case, no trailing slash), each ``http(s)://host[:port]``;
    anything else (``null``, ``*``, a path, ``;`` or a line break that would break into the CSP
    header where allowed origins are listed) is refused with ValueError, naming ``source``."""
    checked = set()
    for origin in origins:
        normal = origin.strip().rstrip("/").lower()
        if not ORIGIN.fullmatch(normal):
            raise ValueError(f"{source}: {origin.strip()[:80]!r} is not an origin: scheme://host[:port], "
                             "e.g. https://hub.example or http://localhost:8888 (no *, null, path or ;)")
        checked.add(normal)
    return frozenset(checked)


def allowed_origins_from_env() -> frozenset[str]:
    """``LABTOOLS_ALLOWED_ORIGINS``: origins (``scheme://host[:port]``) allowed on every server."""
    return checked_origins((o for o in os.environ.get(ORIGINS_ENV, "").split(",") if o.strip()), ORIGINS_ENV)


def origin_host(origin: str) -> str:
    """``https://hub.example:443`` -> ``hub.example``: the host[:port] a browser's Origin names,
    default port dropped, so that it compares with a ``Host`` header."""
    scheme, _, host = origin.lower().partition("://")
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and host.endswith(default):
        host = host.removesuffix(default)
    return host


def header_hosts(value: str | None, scheme: str) -> list[str]:
    """The hosts a ``Host`` or ``X-Forwarded-Host`` header names (proxies may list several)."""
    if not value:
        return []
    return [origin_host(f"{scheme}://{h.strip()}") for h in value.split(",") if h.strip()]


def origin_allowed(headers: Headers, port: int, allowed: Iterable[str]) -> bool:
    """Whether a WebSocket upgrade's ``Origin`` may open a connection to the server on ``port``.

    Allowed: no ``Origin`` (a non-browser client), the server's own origin on 127.0.0.1 or
    localhost, an origin whose host is the request's ``Host`` or ``X-Forwarded-Host`` (the
    page's own server, also through jupyter-server-proxy), and the ``allowed`` origins.
    """
    origins = headers.get_all("Origin")
    if not origins:
        return True
    if len(origins) > 1:
        return False
    origin = origins[0].strip().rstrip("/").lower()
    if origin in allowed or origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        return True
    scheme = origin.partition("://")[0]
    if scheme not in ("http", "https"):
        return False
    hosts = header_hosts(", ".join(headers.get_all("Host")), scheme)
    hosts += header_hosts(", ".join(headers.get_all("X-Forwarded-Host")), scheme)
    return origin_host(origin) in hosts


def security_headers(headers: Headers, allowed: Iterable[str]) -> list[tuple[str, str]]:
    """Headers on every HTTP answer: no MIME sniffing, and a CSP that lets the page load only
    its own modules, open sockets, and be framed by a notebook (JupyterLab on localhost or
    127.0.0.1, the proxy's host on Binder, or an allowed origin) and by no other site."""
    ancestors = ["'self'", "http://localhost:*", "http://127.0.0.1:*", *sorted(allowed)]
    for host in ", ".join(headers.get_all("X-Forwarded-Host")).split(","):
        host = host.strip()
        if HOST.fullmatch(host):
            ancestors += [f"http://{host}", f"https://{host}"]
    # 'unsafe-eval': the pages never eval, but Playwright's string predicates (the browser
    # tests) do; inline and foreign scripts, the XSS vectors, stay refused.
    policy = (f"default-src 'self'; script-src 'self' 'unsafe-eval'; connect-src 'self' ws: wss:; "
              f"frame-ancestors {' '.join(ancestors)}")
    return [("X-Content-Type-Options", "nosniff"), ("Content-Security-Policy", policy)]
