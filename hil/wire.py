"""The HIL wire format: one UDP datagram = a 40-byte little-endian header + a float32 payload.

Torch-free (numpy + standard library) so the device agent can use it on a board; see `hil/PROTOCOL.md`
for the byte layout that a C implementation must follow.
"""

from __future__ import annotations

import json
import struct

import numpy as np

__all__ = [
    "MAGIC", "VERSION", "HEADER", "HEADER_SIZE", "MAX_DIM", "MAX_DATAGRAM",
    "STATE", "ACTION", "HELLO", "HELLO_ACK", "STATS", "STATS_ACK", "KINDS",
    "DROP_REASONS", "Header", "packet_size", "parse_header", "check_state", "check_action",
    "encode", "encode_json", "decode_json", "PacketBuffer",
]

MAGIC = b"LPNH"
VERSION = 1
# magic, version, kind, n_x, n_u, flags, seq, t_host_ns, t_device_ns, compute_ns, reserved
HEADER = struct.Struct("<4sBBHHHIQQII")
HEADER_SIZE = HEADER.size  # 40
MAX_DIM = 1024  # largest n_x or n_u either side accepts; bounds every buffer
MAX_DATAGRAM = 65507  # largest UDP payload over IPv4: the receive buffer, so oversize is always seen

STATE, ACTION, HELLO, HELLO_ACK, STATS, STATS_ACK = 1, 2, 3, 4, 5, 6
KINDS = {STATE: "state", ACTION: "action", HELLO: "hello", HELLO_ACK: "hello_ack", STATS: "stats",
         STATS_ACK: "stats_ack"}

# Why a received datagram was dropped (the agent and the host count each separately).
DROP_REASONS = ("truncated", "oversized", "bad_magic", "bad_version", "bad_kind", "wrong_dim", "non_finite")

_F32 = np.dtype("<f4")


class Header:
    """A decoded header (plain attributes; built only off the hot path)."""

    __slots__ = ("kind", "n_x", "n_u", "flags", "seq", "t_host_ns", "t_device_ns", "compute_ns")

    def __init__(self, kind, n_x, n_u, flags, seq, t_host_ns, t_device_ns, compute_ns):
        self.kind, self.n_x, self.n_u, self.flags = kind, n_x, n_u, flags
        self.seq, self.t_host_ns, self.t_device_ns, self.compute_ns = seq, t_host_ns, t_device_ns, compute_ns

    def __repr__(self) -> str:
        return (f"Header({KINDS.get(self.kind, self.kind)}, n_x={self.n_x}, n_u={self.n_u}, seq={self.seq}, "
                f"t_host_ns={self.t_host_ns}, t_device_ns={self.t_device_ns}, compute_ns={self.compute_ns})")


def packet_size(kind: int, n_x: int, n_u: int) -> int:
    """Exact datagram length of a STATE (`n_x` floats) or ACTION (`n_u` floats) packet."""
    if kind == STATE:
        return HEADER_SIZE + 4 * n_x
    if kind == ACTION:
        return HEADER_SIZE + 4 * n_u
    return HEADER_SIZE


def parse_header(buf, nbytes: int) -> Header | str:
    """The header of `buf[:nbytes]`, or the drop reason (a string of `DROP_REASONS`) if it is not one of ours."""
    if nbytes < HEADER_SIZE:
        return "truncated"
    magic, version, kind, n_x, n_u, flags, seq, t_host, t_dev, comp, _ = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        return "bad_magic"
    if version != VERSION:
        return "bad_version"
    if kind not in KINDS:
        return "bad_kind"
    if n_x > MAX_DIM or n_u > MAX_DIM:
        return "wrong_dim"
    return Header(kind, n_x, n_u, flags, seq, t_host, t_dev, comp)


def _check_payload(header: Header, nbytes: int, want_x: int, want_u: int) -> str | None:
    size = packet_size(header.kind, header.n_x, header.n_u)
    if nbytes < size:
        return "truncated"
    if nbytes > size:
        return "oversized"
    if (header.kind == STATE and header.n_x != want_x) or (header.kind == ACTION and header.n_u != want_u):
        return "wrong_dim"
    return None


def check_state(buf, nbytes: int, n_x: int) -> Header | str:
    """Validate a datagram the device received: a header, or the drop reason.

    STATE packets are also checked for size, dimension and finite payload; other kinds are returned for the
    caller to dispatch (HELLO and STATS carry no payload and any `n_x`, `n_u`).
    """
    header = parse_header(buf, nbytes)
    if isinstance(header, str) or header.kind != STATE:
        return header
    reason = _check_payload(header, nbytes, n_x, header.n_u)
    if reason:
        return reason
    if not np.isfinite(np.frombuffer(buf, _F32, n_x, HEADER_SIZE)).all():
        return "non_finite"
    return header


def check_action(buf, nbytes: int, n_u: int) -> Header | str:
    """Validate a datagram the host received: the header of an ACTION (or other kind), or the drop reason."""
    header = parse_header(buf, nbytes)
    if isinstance(header, str) or header.kind != ACTION:
        return header
    reason = _check_payload(header, nbytes, header.n_x, n_u)
    if reason:
        return reason
    if not np.isfinite(np.frombuffer(buf, _F32, n_u, HEADER_SIZE)).all():
        return "non_finite"
    return header


def encode(kind: int, n_x: int, n_u: int, seq: int, payload=None, t_host_ns: int = 0, t_device_ns: int = 0,
           compute_ns: int = 0, flags: int = 0) -> bytes:
    """One whole datagram (off the hot path: tests, handshakes); `payload` is float32-cast or raw bytes."""
    head = HEADER.pack(MAGIC, VERSION, kind, n_x, n_u, flags, seq & 0xFFFFFFFF, t_host_ns, t_device_ns,
                       compute_ns & 0xFFFFFFFF, 0)
    if payload is None:
        return head
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return head + bytes(payload)
    return head + np.ascontiguousarray(payload, dtype=_F32).tobytes()


def encode_json(kind: int, n_x: int, n_u: int, seq: int, obj) -> bytes:
    """A HELLO_ACK / STATS_ACK datagram whose payload is UTF-8 JSON (truncated never: kept small)."""
    return encode(kind, n_x, n_u, seq, json.dumps(obj, separators=(",", ":")).encode())


def decode_json(buf, nbytes: int) -> dict:
    """The JSON payload of a HELLO_ACK / STATS_ACK datagram ({} if empty or not JSON)."""
    raw = bytes(buf[HEADER_SIZE:nbytes])
    try:
        obj = json.loads(raw.decode()) if raw else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


class PacketBuffer:
    """A preallocated outgoing packet: fill `values` (a float32 view of the payload) and call `stamp`.

    The hot path writes the header in place with `struct.pack_into` and the payload through a numpy view, so
    sending allocates nothing.
    """

    def __init__(self, kind: int, n_x: int, n_u: int):
        if not (0 < n_x <= MAX_DIM and 0 < n_u <= MAX_DIM):
            raise ValueError(f"dimensions n_x={n_x}, n_u={n_u} must be in 1..{MAX_DIM}")
        self.kind, self.n_x, self.n_u = kind, n_x, n_u
        n = n_x if kind == STATE else n_u
        self.data = bytearray(HEADER_SIZE + 4 * n)
        self.values = np.frombuffer(self.data, _F32, n, HEADER_SIZE)
        self._pack = HEADER.pack_into
        self.stamp(0, 0)

    def stamp(self, seq: int, t_host_ns: int, t_device_ns: int = 0, compute_ns: int = 0) -> bytearray:
        """Write the header for sequence number `seq`; returns the datagram to send."""
        self._pack(self.data, 0, MAGIC, VERSION, self.kind, self.n_x, self.n_u, 0, seq & 0xFFFFFFFF, t_host_ns,
                   t_device_ns, compute_ns & 0xFFFFFFFF, 0)
        return self.data
