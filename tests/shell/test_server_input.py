"""Bad input never kills the daemon or other connections; each gets the documented answer."""

from __future__ import annotations

import random
import struct

import msgspec
import pytest
import trio

from routerd_client import framing

enc = msgspec.msgpack.encode


@pytest.fixture
async def daemon(start_daemon):
    return await start_daemon(max_frame_size=4096)


async def test_random_bytes_never_break_the_daemon(daemon, connect, serves):
    rng = random.Random(1234)
    for size in (1, 3, 7, 64, 1000, 5000):
        wire = await connect(daemon)
        await wire.send_raw(bytes(rng.randrange(256) for _ in range(size)))
        await wire.stream.send_eof()
        frames = await wire.expect_eof()
        for f in frames:  # whatever came back is a connection-level error
            assert f["type"] == "error" and f["id"] is None
            assert f["code"] in ("bad_frame", "bad_request", "frame_too_large")
        await serves(daemon)


async def test_random_msgpack_bodies_are_answered_and_the_connection_stays(daemon, connect):
    rng = random.Random(99)
    wire = await connect(daemon)
    for i in range(200):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        await wire.send_raw(framing.frame(body))
        reply = await wire.recv()
        assert reply["type"] == "error" and reply["code"] in ("bad_frame", "bad_request"), (i, body)
    assert (await wire.call(1, "ping"))["type"] == "result"


async def test_truncated_frame_then_close(daemon, connect, serves):
    wire = await connect(daemon)
    whole = framing.frame(enc({"type": "request", "id": 1, "method": "ping"}))
    await wire.send_raw(whole[:-3])
    await wire.aclose()
    wire = await connect(daemon)
    await wire.send_raw(whole[:2])
    await wire.aclose()
    await serves(daemon)
    await trio.sleep(0.05)
    assert daemon.counters.connections_open == 0


@pytest.mark.parametrize(
    ("prefix", "code"),
    [(struct.pack(">I", 0), "bad_frame"), (struct.pack(">I", 4097), "frame_too_large"),
     (b"\xff\xff\xff\xff", "frame_too_large")],
)
async def test_bad_length_prefix_gets_an_error_and_a_close(daemon, connect, serves, prefix, code):
    wire = await connect(daemon)
    await wire.request(1, "test.sleep", {"seconds": 30})
    await wire.send_raw(prefix + b"\x80" * 16)
    frames = await wire.expect_eof()
    # The request in flight is dropped with the connection; only the connection error is sent.
    assert frames == [{"type": "error", "id": None, "code": code, "message": frames[0]["message"]}]
    assert "closing the connection" in frames[0]["message"]
    await serves(daemon)
    assert daemon.counters.requests_in_flight == 0


async def test_largest_allowed_frame_is_accepted(daemon, connect):
    wire = await connect(daemon)
    msg = {"type": "request", "id": 1, "method": "ping", "params": {"pad": ""}}
    pad = 4096 - len(enc(msg)) - 2  # str8 header grows by 2 bytes once the string is long
    msg["params"]["pad"] = "x" * pad
    assert len(enc(msg)) == 4096
    await wire.send(msg)
    assert (await wire.recv())["type"] == "result"


CASES = [
    # (body, expected id, expected code, text in message)
    (enc([1, 2]), None, "bad_request", "map"),
    (enc("request"), None, "bad_request", "map"),
    (enc(None), None, "bad_request", "map"),
    (b"\xc1", None, "bad_frame", "msgpack"),
    (b"\x81\xa4type", None, "bad_frame", "msgpack"),  # truncated map inside a whole frame
    (enc({"type": "request", "id": 1, "method": "ping"}) + b"\x00", None, "bad_frame", "msgpack"),
    (enc({"type": "request", "method": "ping"}), None, "bad_request", "id"),
    (enc({"type": "request", "id": "1", "method": "ping"}), None, "bad_request", "id"),
    (enc({"type": "request", "id": 1.0, "method": "ping"}), None, "bad_request", "id"),
    (enc({"type": "request", "id": -1, "method": "ping"}), None, "bad_request", "id"),
    (enc({"type": "request", "id": True, "method": "ping"}), None, "bad_request", "id"),
    (enc({"type": "request", "id": None, "method": "ping"}), None, "bad_request", "id"),
    (enc({"type": "request", "id": [1], "method": "ping"}), None, "bad_request", "id"),
    (enc({"type": "request", "id": 2**53, "method": "ping"}), None, "bad_request", "id"),
    (enc({"type": "request", "id": 2**64 - 1, "method": "ping"}), None, "bad_request", "id"),
    (enc({"type": "cancel", "id": "x"}), None, "bad_request", "id"),
    (enc({"id": 5, "method": "ping"}), 5, "bad_request", "type"),
    (enc({"type": 3, "id": 5, "method": "ping"}), 5, "bad_request", "type"),
    (enc({"type": "result", "id": 5, "result": {}}), 5, "bad_request", "'result'"),
    (enc({"type": "hello", "id": 2**53 + 1}), None, "bad_request", "'hello'"),
    (enc({"type": "request", "id": 6}), 6, "bad_request", "method"),
    (enc({"type": "request", "id": 6, "method": 12}), 6, "bad_request", "method"),
    (enc({"type": "request", "id": 7, "method": "no.such"}), 7, "unknown_method", "'no.such'"),
    (enc({"type": "request", "id": 8, "method": "x" * 1000}), 8, "unknown_method", "..."),
    (enc({"type": "request", "id": 9, "method": "hello", "params": {"protocol": "1.0"}}), 9,
     "bad_request", "$.protocol"),
    (enc({"type": "request", "id": 9, "method": "hello", "params": {"client": {"name": 3}}}), 9,
     "bad_request", "$.client.name"),
    (enc({"type": "request", "id": 9, "method": "test.sleep", "params": {"seconds": "1"}}), 9,
     "bad_request", "$.seconds"),
    (enc({"type": "request", "id": 9, "method": "ping", "params": 5}), 9, "bad_request",
     "object"),
    (enc({"type": "request", "id": 9, "method": "ping", "params": [1]}), 9, "bad_request",
     "object"),
]


@pytest.mark.parametrize(("body", "rid", "code", "text"), CASES)
async def test_bad_message_is_answered_and_the_connection_stays(daemon, connect, body, rid,
                                                                code, text):
    wire = await connect(daemon)
    await wire.send_raw(framing.frame(body))
    reply = await wire.recv()
    assert reply["type"] == "error"
    assert reply["id"] == rid
    assert reply["code"] == code
    assert text in reply["message"]
    assert "\n" not in reply["message"] and "Traceback" not in reply["message"]
    assert (await wire.call(1000, "ping"))["type"] == "result"
    assert daemon.counters.errors[code] >= 1


async def test_largest_id_is_accepted(daemon, connect):
    wire = await connect(daemon)
    assert (await wire.call(2**53 - 1, "ping"))["id"] == 2**53 - 1
    assert (await wire.call(0, "ping"))["id"] == 0


async def test_empty_array_is_accepted_as_an_empty_map(daemon, connect):
    wire = await connect(daemon)
    assert (await wire.call(1, "ping", []))["result"] == {}
    assert (await wire.call(2, "hello", []))["type"] == "result"
    assert (await wire.call(3, "hello", {"client": [], "agent": []}))["type"] == "result"
    assert (await wire.call(4, "status", []))["type"] == "result"


async def test_unknown_fields_are_ignored(daemon, connect):
    wire = await connect(daemon)
    await wire.send({"type": "request", "id": 1, "method": "ping", "params": {"x": 1}, "y": 2})
    assert (await wire.recv())["result"] == {}


async def test_cancel_of_an_unknown_id_gets_no_reply(daemon, connect):
    wire = await connect(daemon)
    await wire.send({"type": "cancel", "id": 12345})
    await wire.request(1, "ping")
    assert await wire.recv() == {"type": "result", "id": 1, "result": {}}


async def test_duplicate_id_in_flight(daemon, connect, probe):
    wire = await connect(daemon)
    await wire.request(1, "test.sleep", {"seconds": 0.2})
    await probe.wait_started(1)
    await wire.request(1, "ping")
    dup = await wire.recv()
    assert dup["type"] == "error" and dup["id"] == 1 and dup["code"] == "bad_request"
    assert dup["data"] == {"duplicate": True}
    first = await wire.recv()
    assert first == {"type": "result", "id": 1, "result": {"slept": 0.2}}
    # Once its final frame is out, the id may be reused.
    assert (await wire.call(1, "ping"))["type"] == "result"


async def test_other_connections_are_unaffected_by_a_bad_one(daemon, connect):
    good = await connect(daemon)
    await good.request(1, "test.sleep", {"seconds": 0.2})
    bad = await connect(daemon)
    await bad.send_raw(b"\x00\x00\x00\x00")
    await bad.expect_eof()
    assert await good.recv() == {"type": "result", "id": 1, "result": {"slept": 0.2}}


DEEP = b"\x91" * 4000 + b"\x80"


@pytest.mark.parametrize(
    "body",
    [
        DEEP,  # a deep array as the whole message
        b"\x83\xa4type\xa7request\xa2id\x01\xa1x" + DEEP,  # deep unknown field
        b"\x84\xa4type\xa7request\xa2id\x01\xa6method\xa4ping\xa6params" + DEEP,
        b"\x84\xa4type\xa7request\xa2id\x01\xa6method\xa5hello\xa6params"
        + b"\x81\xa6client" + DEEP,
    ],
)
async def test_deeply_nested_input_is_an_error_not_a_crash(daemon, connect, serves, body):
    wire = await connect(daemon)
    await wire.send_raw(framing.frame(body))
    reply = await wire.recv()
    assert reply["type"] == "error" and reply["code"] in ("bad_frame", "bad_request")
    assert (await wire.call(2, "ping"))["type"] == "result"
    await serves(daemon)


async def test_deeply_nested_params_are_named_as_such(daemon, connect):
    wire = await connect(daemon)
    head = b"\x84\xa4type\xa7request\xa2id\x01\xa6method\xa4ping\xa6params"
    await wire.send_raw(framing.frame(head + DEEP))
    reply = await wire.recv()
    assert reply["id"] in (1, None) and "nested too deeply" in reply["message"]
