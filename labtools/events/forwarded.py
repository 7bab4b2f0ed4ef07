"""Who the client is behind the front door: ``X-Forwarded-For``, trusted only from the front door.

Behind a reverse proxy every socket comes from the proxy's address, so a limit per address (the
chat's login throttle) would lock everyone out for one attacker's failures. The proxy says who
the client is in ``X-Forwarded-For``; but any client can send that header too, directly to a
node or through the proxy. So it is trusted only on a request that also carries
``X-Labtools-Front-Door`` with the deployment's secret (``LABTOOLS_FRONT_DOOR_SECRET``, in the
environment of the nodes and in the front door's configuration, which sets the header on every
request, replacing any a client sent), and then only its last address: the one the front door
appended. It is read once, at the upgrade: a connection keeps no headers after its handshake.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from websockets.datastructures import Headers

FRONT_DOOR_HEADER = "X-Labtools-Front-Door"
FRONT_DOOR_SECRET_ENV = "LABTOOLS_FRONT_DOOR_SECRET"


def front_door_secret() -> str | None:
    """The deployment's secret, when this process is a node behind a labtools front door."""
    return os.environ.get(FRONT_DOOR_SECRET_ENV) or None


def forwarded_for(headers: Headers, secret: str | None) -> str | None:
    """The client's address as the front door saw it, or None (no front door, or not proven)."""
    if secret is None:
        return None
    proof = headers.get(FRONT_DOOR_HEADER, "")
    if not hmac.compare_digest(proof.encode(), secret.encode()):
        return None
    forwarded = headers.get_all("X-Forwarded-For")
    if not forwarded:
        return None
    last = forwarded[-1].rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return None
