#!/usr/bin/env python3
"""An independent Settle client: aioquic (Python QUIC) and a protobuf codec written from
docs/protocol.md and wire/proto/settle.proto, sharing no code with the Rust side.

usage: aioquic_client.py HOST PORT CERT_PEM API_KEY PARTNER
Prints one JSON object with what it saw; exits 1 when an expectation fails.
"""

import asyncio
import datetime
import json
import struct
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived


# --- protobuf, just what the schema needs -------------------------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, value):
    return varint(num << 3 | 0) + varint(value)


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def decode(buf):
    """Message bytes -> {field number: [values]} (varints as int, length-delimited as bytes)."""
    fields, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            value, i = read_varint(buf, i)
        elif wt == 2:
            length, i = read_varint(buf, i)
            value, i = buf[i:i + length], i + length
        else:
            raise ValueError(f"wire type {wt} not used by settle.v1")
        fields.setdefault(num, []).append(value)
    return fields


def read_varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


def request(body_field, body, version=1):
    msg = field_varint(1, version) + field_bytes(body_field, body)
    return struct.pack(">I", len(msg)) + msg


# Request.body fields (settle.proto)
AUTHENTICATE, SUBMIT_BATCH, GET_BALANCE = 2, 3, 5
# Response.body fields
SUBMIT_RESULT, BALANCE, OK, ERROR = 2, 3, 4, 5
TX_KIND_SALE = 1


def sale(tx_id, partner, amount, currency):
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    return (field_bytes(1, tx_id) + field_bytes(2, partner) + field_varint(3, TX_KIND_SALE)
            + field_bytes(4, amount) + field_bytes(5, currency) + field_bytes(6, now))


# --- QUIC: one request per bidirectional stream -------------------------------------------

class Settle(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._buffers, self._waiters = {}, {}

    async def call(self, frame):
        stream_id = self._quic.get_next_available_stream_id()
        waiter = asyncio.get_running_loop().create_future()
        self._buffers[stream_id], self._waiters[stream_id] = bytearray(), waiter
        self._quic.send_stream_data(stream_id, frame, end_stream=True)
        self.transmit()
        data = await asyncio.wait_for(waiter, 10)
        (length,) = struct.unpack(">I", data[:4])
        assert length == len(data) - 4, "one whole frame per stream"
        response = decode(data[4:])
        assert response[1] == [1], f"response version {response.get(1)}"
        return response

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived) and event.stream_id in self._buffers:
            self._buffers[event.stream_id] += event.data
            if event.end_stream:
                self._waiters.pop(event.stream_id).set_result(bytes(self._buffers.pop(event.stream_id)))


def error_code(response):
    return decode(response[ERROR][0]).get(1, [0])[0] if ERROR in response else None


async def main(host, port, cert, api_key, partner):
    config = QuicConfiguration(is_client=True, alpn_protocols=["settle/1"], server_name="localhost")
    config.load_verify_locations(cert)
    seen = {}
    async with connect(host, port, configuration=config, create_protocol=Settle) as conn:
        r = await conn.call(request(GET_BALANCE, field_bytes(1, partner)))
        seen["before_auth"] = error_code(r)
        r = await conn.call(request(AUTHENTICATE, field_bytes(1, api_key)))
        seen["auth_ok"] = OK in r
        batch = field_bytes(1, sale("py-1", partner, "100.00", "EUR"))
        for attempt in ("first", "repeat"):
            r = await conn.call(request(SUBMIT_BATCH, batch))
            result = decode(decode(r[SUBMIT_RESULT][0])[1][0])
            applied = decode(result[1][0])
            seen[attempt] = {
                "payable_after": applied[1][0].decode(),
                "currency": applied[6][0].decode(),
                "duplicate": bool(result.get(3, [0])[0]),
            }
        r = await conn.call(request(GET_BALANCE, field_bytes(1, partner), version=2))
        seen["version_2"] = error_code(r)
        r = await conn.call(request(GET_BALANCE, field_bytes(1, partner)))
        seen["payable"] = decode(r[BALANCE][0])[3][0].decode()
    print(json.dumps(seen))
    ok = (seen["before_auth"] == 4 and seen["auth_ok"] and not seen["first"]["duplicate"]
          and seen["repeat"]["duplicate"] and seen["repeat"]["payable_after"] == seen["first"]["payable_after"]
          and seen["version_2"] == 2 and seen["payable"] == seen["first"]["payable_after"])
    return 0 if ok else 1


if __name__ == "__main__":
    host, port, cert, key, partner = sys.argv[1:6]
    sys.exit(asyncio.run(main(host, int(port), cert, key, partner)))
