"""One HTTP request to the polling server from a test, on the labtools loop (shared by the
polling server's contract and limits tests)."""

from __future__ import annotations

import json
from typing import Any

import labtools as lt
from labtools.polling.client import HttpClient, Response


def request(url: str, method: str, target: str, body: bytes = b"", headers: dict | None = None) -> Response:
    async def main() -> Response:
        client = HttpClient(url)
        try:
            return await client.request(method, target, body=body, headers=headers or {})
        finally:
            await client.aclose()

    return lt.run(main(), timeout=20)


def post(url: str, payload: Any, headers: dict | None = None) -> Response:
    """``POST /messages`` with a JSON body (``payload`` as bytes: sent as given)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request(url, "POST", "/messages", body, {"Content-Type": "application/json", **(headers or {})})
