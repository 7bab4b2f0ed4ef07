"""The opening handshake by hand: the RFC's accept example, building and checking both sides."""

from __future__ import annotations

import base64

import pytest

from labtools.handmade import handshake
from labtools.handmade.handshake import HandshakeError

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3 ("the sample nonce")
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_accept_key_of_the_rfc_example() -> None:
    assert handshake.accept_key(RFC_KEY) == RFC_ACCEPT


def test_make_key_is_16_random_bytes_in_base64() -> None:
    keys = {handshake.make_key() for _ in range(10)}
    assert len(keys) == 10
    for key in keys:
        assert len(key) == 24 and len(base64.b64decode(key)) == 16 and handshake.is_valid_key(key)


def test_request_round_trip() -> None:
    raw = handshake.build_request("127.0.0.1:8765", "/chat?room=1", key=RFC_KEY)
    assert raw.startswith(b"GET /chat?room=1 HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n")
    assert raw.endswith(b"\r\n\r\n")
    request = handshake.parse_request(raw)
    assert (request.method, request.path, request.key) == ("GET", "/chat?room=1", RFC_KEY)
    assert request.headers["upgrade"] == "websocket"


def test_response_round_trip() -> None:
    raw = handshake.build_response(RFC_KEY)
    assert raw == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )
    response = handshake.parse_response(raw, RFC_KEY)
    assert response.status == 101 and response.reason == "Switching Protocols"


def test_header_names_and_tokens_are_case_insensitive() -> None:
    raw = (
        b"GET / HTTP/1.1\r\nhost: x\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, upgrade\r\n"
        b"sec-websocket-key: " + RFC_KEY.encode() + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert handshake.parse_request(raw).key == RFC_KEY


def _request(**changes: str | None) -> bytes:
    headers = {
        "Host": "x",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": RFC_KEY,
        "Sec-WebSocket-Version": "13",
    }
    first = changes.pop("first", None) or "GET / HTTP/1.1"
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    lines = [first] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"first": "POST / HTTP/1.1"}, 405),
        ({"first": "GET / HTTP/1.0"}, 400),
        ({"Host": None}, 400),
        ({"Upgrade": None}, 426),
        ({"Upgrade": "h2c"}, 426),
        ({"Connection": "keep-alive"}, 426),
        ({"Sec-WebSocket-Version": "8"}, 426),
        ({"Sec-WebSocket-Key": None}, 400),
        ({"Sec-WebSocket-Key": "c2hvcnQ="}, 400),  # base64, but of 5 bytes
        ({"Sec-WebSocket-Key": "not base64 at all!!!!!!!"}, 400),
    ],
)
def test_a_server_refuses_bad_requests(changes: dict, status: int) -> None:
    with pytest.raises(HandshakeError) as info:
        handshake.parse_request(_request(**changes))
    assert info.value.status == status
    answer = handshake.build_error_response(info.value)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())
    assert (b"Sec-WebSocket-Version: 13" in answer) == (status == 426)


def test_the_good_request_of_those_tests_passes() -> None:
    assert handshake.parse_request(_request()).key == RFC_KEY


def test_a_client_refuses_a_wrong_accept() -> None:
    raw = handshake.build_response(handshake.make_key())
    with pytest.raises(HandshakeError, match="Accept"):
        handshake.parse_response(raw, RFC_KEY)


def test_a_client_refuses_a_non_101() -> None:
    with pytest.raises(HandshakeError) as info:
        handshake.parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", RFC_KEY)
    assert info.value.status == 200


def test_a_client_refuses_an_extension_it_did_not_offer() -> None:
    raw = handshake.build_response(RFC_KEY, headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    with pytest.raises(HandshakeError, match="extension"):
        handshake.parse_response(raw, RFC_KEY)


def test_garbage_heads() -> None:
    too_long = b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * 5000
    for raw in [b"\xff\xfe\r\n\r\n", b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", too_long]:
        with pytest.raises(HandshakeError):
            handshake.parse_request(raw)
