"""Slow clients are cut: a real uvicorn server, with the options `jivapay serve` runs the role
servers with (`uvicorn_options`, whose protocol is `DeadlineHttpToolsProtocol`), closes a
connection whose headers or body trickle in past their deadlines, refuses a header block beyond its
limit, and serves normal requests, kept-alive and pipelined ones included, as before."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from jivapay.config import get_settings
from jivapay.servers import serving
from jivapay.servers.http_protocol import MAX_HEADER_BYTES

DEADLINE = 0.6
KEEP_ALIVE = 2  # production's 5 s would only slow these tests down


async def echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body and answers its length (`?slow`: after longer than any deadline)."""
    assert scope["type"] == "http"
    if scope["query_string"] == b"slow":
        await asyncio.sleep(DEADLINE * 2.5)
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(get_settings(), "HTTP_HEADER_TIMEOUT_SECONDS", DEADLINE)
    monkeypatch.setattr(get_settings(), "HTTP_BODY_TIMEOUT_SECONDS", DEADLINE)
    monkeypatch.setattr(serving, "KEEP_ALIVE_SECONDS", KEEP_ALIVE)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        echo_length, log_level="warning", lifespan="off", **serving.uvicorn_options("")
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        instance.should_exit = True
        thread.join(10)
        sock.close()


def connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    return client


def closed_by_server(client: socket.socket, within: float) -> bool:
    """True when the server closes the connection (recv returns b"") within `within` seconds."""
    client.settimeout(within)
    try:
        return client.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def post(body: bytes, target: bytes = b"/") -> bytes:
    length = str(len(body)).encode()
    return (
        b"POST "
        + target
        + b" HTTP/1.1\r\nHost: t\r\nContent-Length: "
        + length
        + b"\r\n\r\n"
        + body
    )


def request(client: socket.socket, body: bytes) -> bytes:
    client.sendall(post(body))
    client.settimeout(5)
    return client.recv(4096)


def read_answers(client: socket.socket, count: int) -> list[bytes]:
    """The bodies of the next `count` responses (one digit each: the length of a short body)."""
    client.settimeout(5)
    data = b""
    while len(bodies := re.findall(rb"\r\n\r\n(\d)", data)) < count:
        chunk = client.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return bodies


def test_normal_requests_are_served_on_a_kept_alive_connection(server: int) -> None:
    with connect(server) as client:
        assert request(client, b"hello").endswith(b"\r\n\r\n5")
        time.sleep(DEADLINE * 1.5)  # idle, within keep-alive: still open
        assert request(client, b"hello again").endswith(b"\r\n\r\n11")


def test_a_connection_that_sends_nothing_is_cut(server: int) -> None:
    with connect(server) as client:
        assert closed_by_server(client, within=DEADLINE * 4)


def trickle_headers_until_cut(client: socket.socket) -> None:
    client.sendall(b"GET / HTTP/1.1\r\n")
    started = time.monotonic()
    # One byte at a time keeps uvicorn's own keep-alive timer from ever firing.
    while time.monotonic() - started < DEADLINE * 3:
        try:
            client.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.1)
    assert closed_by_server(client, within=DEADLINE * 3)
    assert time.monotonic() - started < DEADLINE * 6


def test_headers_that_trickle_in_are_cut(server: int) -> None:
    with connect(server) as client:
        trickle_headers_until_cut(client)


def test_a_later_request_whose_headers_trickle_in_is_cut(server: int) -> None:
    with connect(server) as client:
        assert request(client, b"hello").endswith(b"\r\n\r\n5")
        trickle_headers_until_cut(client)


def test_a_body_that_trickles_in_is_cut(server: int) -> None:
    with connect(server) as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab")
        assert not closed_by_server(client, within=DEADLINE / 3)  # still within its deadline
        assert closed_by_server(client, within=DEADLINE * 4)


def _with_header_of(size: int) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: t\r\nX-Padding: " + b"a" * size + b"\r\n\r\n"


def test_a_header_block_far_beyond_the_limit_is_refused(server: int) -> None:
    with connect(server) as client:
        client.sendall(_with_header_of(MAX_HEADER_BYTES - 1024))
        client.settimeout(5)
        assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
    with connect(server) as client:
        try:
            client.sendall(_with_header_of(16 * MAX_HEADER_BYTES))
        except (BrokenPipeError, ConnectionResetError):
            return  # refused before the whole block was read
        client.settimeout(5)
        answer = client.recv(4096)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 ")


def test_a_slow_answer_is_not_cut(server: int) -> None:
    with connect(server) as client:
        client.sendall(post(b"abc", b"/?slow"))
        assert read_answers(client, 1) == [b"3"]


def test_pipelined_requests_are_answered_in_order(server: int) -> None:
    with connect(server) as client:
        # Longer together (2 x 2.5 deadlines) than the idle deadline the first answer would arm.
        client.sendall(post(b"ab") + post(b"abcd", b"/?slow") + post(b"abcdef", b"/?slow"))
        assert read_answers(client, 3) == [b"2", b"4", b"6"]


def test_empty_lines_after_a_response_do_not_keep_a_connection_open(server: int) -> None:
    with connect(server) as client:
        assert request(client, b"hello").endswith(b"\r\n\r\n5")
        started = time.monotonic()
        # httptools skips empty lines without starting a request; each cancels the keep-alive timer.
        while time.monotonic() - started < DEADLINE + KEEP_ALIVE + 2:
            try:
                client.sendall(b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.2)
        assert closed_by_server(client, within=1)


def test_a_request_pipelined_behind_a_slow_answer_must_not_trickle(server: int) -> None:
    with connect(server) as client:
        client.sendall(post(b"abc", b"/?slow"))
        # Cut at its own deadline, before the slow answer is sent (that answer is not b"").
        trickle_headers_until_cut(client)
