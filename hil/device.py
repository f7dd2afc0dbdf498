"""The HIL device agent: answers each STATE datagram with the controller's ACTION (onnxruntime + numpy only).

Runs on the board: `python -m hil.device controller.onnx --listen 0.0.0.0:9870 --provider cpu`
(or `lipnet hil serve ...` where lipnet is installed). Imports nothing but the standard library, numpy,
onnxruntime, `hil.wire` and `export.runtime`, so it installs without torch (see `hil/PROTOCOL.md`).
Malformed datagrams are counted by reason and dropped; the agent never stops on bad input. The model is checked
against the graph digest recorded at export before serving: a corrupted or modified file is refused.
A C controller (`controller.c` from `lipnet export --out controller.c`, checked against its sha256 and compiled
here, or a built `.so`) is served through ctypes by `export.c_build` instead: numpy and a C compiler, no
onnxruntime. `hil/c/agent.c` is the same agent in C, for boards without Python.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time

import numpy as np

from hil import wire
from hil.realtime import realtime

__all__ = ["DeviceAgent", "parse_address", "main", "DEFAULT_PORT", "PROVIDERS"]

DEFAULT_PORT = 9870
# `export.runtime.PROVIDERS`' names, restated so that `--help` needs no onnxruntime (a test keeps them equal).
PROVIDERS = ("cpu", "cuda", "tensorrt")
C_SUFFIXES = (".c", ".so", ".dylib")  # a C controller: served through ctypes (export.c_build)


def parse_address(text: str, default_host: str = "127.0.0.1", default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """`HOST:PORT`, `HOST` or `:PORT` → `(host, port)`; raises ValueError naming the expected form."""
    host, sep, port = str(text).rpartition(":")
    if not sep:
        host, port = port, ""
    host = host.strip("[]") or default_host
    try:
        port_num = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}") from None
    if not 0 <= port_num <= 65535:
        raise ValueError(f"bad port {port_num} in {text!r}: expected 0..65535")
    return host, port_num


class DeviceAgent:
    """UDP server around one controller session.

    Parameters
    ----------
    model : path to `controller.onnx`, `controller.c` or a built `.so`, or an object with
        `__call__(state) -> action`, `n_x`, `n_u`.
    listen : `(host, port)`; loopback by default, port 0 picks a free port (see `address`).
    provider : onnxruntime provider, `cpu`, `cuda` or `tensorrt` (passed to `export.runtime.session`; a C
        controller runs on the CPU through ctypes and reports provider `c`).
    threads : intra-op threads of the session (1 is fastest for controller-sized models).
    busy_poll : spin on a non-blocking socket instead of sleeping in `recvfrom` (lower latency, burns a core).
    """

    def __init__(self, model, listen=("127.0.0.1", DEFAULT_PORT), provider: str = "cpu", threads: int = 1,
                 busy_poll: bool = False):
        if (isinstance(model, str) or hasattr(model, "__fspath__")) and str(model).endswith(C_SUFFIXES):
            from export.c_build import load_c_policy  # numpy + ctypes + the C compiler; no onnxruntime

            model = load_c_policy(str(model))
        elif isinstance(model, str) or hasattr(model, "__fspath__"):
            from export.runtime import session  # onnxruntime: imported only when serving, not for --help

            model = session(str(model), provider=provider, threads=threads)
        self.session = model
        # `export.runtime.session` has verified the graph against its export digest (or raised ModelError).
        self.integrity = str(getattr(model, "integrity", "not checked (a Python policy object)"))
        self.n_x, self.n_u = int(self.session.n_x), int(self.session.n_u)
        self.provider = getattr(self.session, "provider", provider)
        self.busy_poll = busy_poll
        self.counters = dict.fromkeys(("received", "answered", "hello", "stats", "errors", "send_errors"), 0)
        self.counters.update(dict.fromkeys(wire.DROP_REASONS, 0))
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET6 if ":" in listen[0] else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(tuple(listen))
        self.address = self.sock.getsockname()[:2]
        # Warm up: the first onnxruntime calls allocate; do them before the first real packet.
        for _ in range(10):
            self.session(np.zeros(self.n_x, np.float32))

    # ------------------------------------------------------------------------------------------------
    def info(self) -> dict:
        """What HELLO_ACK reports: dimensions, provider, the model's integrity check and its lipnet metadata."""
        meta = getattr(self.session, "metadata", {}) or {}
        return {"n_x": self.n_x, "n_u": self.n_u, "provider": self.provider, "protocol": wire.VERSION,
                "requested_provider": getattr(self.session, "requested_provider", self.provider),
                "fallback_reason": getattr(self.session, "fallback_reason", None),
                "integrity": self.integrity,
                "plant": str(meta.get("lipnet.plant") or ""), "dt": meta.get("lipnet.dt")}

    def dropped(self) -> int:
        """Datagrams dropped so far, all reasons together."""
        return sum(self.counters[r] for r in wire.DROP_REASONS)

    def stop(self) -> None:
        """Ask `serve_forever` to return (wakes a blocking receive with an empty datagram to itself)."""
        self._stop.set()
        try:
            with socket.socket(self.sock.family, socket.SOCK_DGRAM) as s:
                host = self.address[0]
                host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
                s.sendto(b"", (host, self.address[1]))
        except OSError:
            pass

    def close(self) -> None:
        """Release the socket."""
        self.sock.close()

    # ------------------------------------------------------------------------------------------------
    def _reply_control(self, header, addr) -> None:
        if header.kind == wire.HELLO:
            self.counters["hello"] += 1
            pkt = wire.encode_json(wire.HELLO_ACK, self.n_x, self.n_u, header.seq, self.info())
        elif header.kind == wire.STATS:
            self.counters["stats"] += 1
            pkt = wire.encode_json(wire.STATS_ACK, self.n_x, self.n_u, header.seq, self.counters)
        else:  # an ACTION or an ACK sent to the device: not for us
            self.counters["bad_kind"] += 1
            return
        self.sock.sendto(pkt, addr)

    def serve_forever(self) -> dict:
        """Answer datagrams until `stop()` (or SIGINT/SIGTERM in `main`); returns the counters."""
        n_x, n_u = self.n_x, self.n_u
        sess, counters, stopped = self.session, self.counters, self._stop.is_set
        buf = bytearray(wire.MAX_DATAGRAM + 1)
        state = np.frombuffer(buf, np.dtype("<f4"), n_x, wire.HEADER_SIZE)  # zero-copy view of the payload
        out = wire.PacketBuffer(wire.ACTION, n_x, n_u)
        recv, send, clock, check = self.sock.recvfrom_into, self.sock.sendto, time.perf_counter_ns, wire.check_state
        unpack, isfinite, state_size = wire.HEADER.unpack_from, np.isfinite, wire.packet_size(wire.STATE, n_x, n_u)
        magic, version, kind_state, max_dim = wire.MAGIC, wire.VERSION, wire.STATE, wire.MAX_DIM
        self.sock.setblocking(not self.busy_poll)
        while not stopped():
            try:
                nbytes, addr = recv(buf)
            except BlockingIOError:
                continue
            except OSError:  # e.g. ICMP errors surfaced on the socket: never fatal
                counters["errors"] += 1
                continue
            t_recv = clock()
            if stopped():
                break
            counters["received"] += 1
            try:
                if nbytes == state_size:  # fast path: a well-formed STATE, checked without building a Header
                    mg, ver, kind, hx, hu, _, seq, t_host, _, _, _ = unpack(buf, 0)
                    if (mg == magic and ver == version and kind == kind_state and hx == n_x and hu <= max_dim
                            and isfinite(state).all()):
                        out.values[:] = sess(state)
                        t_done = clock()
                        send(out.stamp(seq, t_host, t_recv, min(t_done - t_recv, 0xFFFFFFFF)), addr)
                        counters["answered"] += 1
                        continue
                header = check(buf, nbytes, n_x)  # the slow path classifies what is wrong
                if isinstance(header, str):
                    counters[header] += 1
                    continue
                if header.kind != wire.STATE:
                    self._reply_control(header, addr)
                    continue
                out.values[:] = sess(state)
                t_done = clock()
                send(out.stamp(header.seq, header.t_host_ns, t_recv, min(t_done - t_recv, 0xFFFFFFFF)), addr)
                counters["answered"] += 1
            except OSError:
                counters["send_errors"] += 1
            except Exception:  # a model or runtime failure on one packet must not kill the agent
                counters["errors"] += 1
        return dict(counters)

    def serve_in_thread(self) -> threading.Thread:
        """Start `serve_forever` in a daemon thread (tests, in-process benchmarks)."""
        thread = threading.Thread(target=self.serve_forever, name="hil-device", daemon=True)
        thread.start()
        return thread


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of the agent (shared by `python -m hil.device` and `lipnet hil serve`)."""
    parser = parser or argparse.ArgumentParser(prog="python -m hil.device", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="controller.onnx to serve, or controller.c (checked against its sha256, "
                        "compiled here) or a built .so, run through ctypes")
    parser.add_argument("--listen", default=f"127.0.0.1:{DEFAULT_PORT}",
                        help="HOST:PORT to bind (default loopback 127.0.0.1:%(default)s; 0.0.0.0 for all "
                             "interfaces; port 0 picks a free one)")
    parser.add_argument("--provider", choices=PROVIDERS, default="cpu",
                        help="onnxruntime execution provider (cuda/tensorrt fall back to cpu with a warning "
                             "where unavailable; the handshake reports the provider actually running)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--busy-poll", action="store_true", help="spin on the socket (lower latency, one core)")
    parser.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                        help="serve as SCHED_FIFO (or nice -10) where permitted: root or CAP_SYS_NICE "
                             "(default on; it sleeps in recvfrom between packets)")
    parser.add_argument("--json", action="store_true", help="print the final counters as JSON")
    return parser


def serve(args) -> int:
    """Run the agent from parsed arguments until SIGINT/SIGTERM; prints the ready line and final counters."""
    try:
        host, port = parse_address(args.listen)
    except ValueError as exc:
        print(f"hil device: error: {exc}", file=sys.stderr)
        return 2
    try:
        agent = DeviceAgent(args.model, (host, port), args.provider, args.threads, args.busy_poll)
    except (OSError, RuntimeError, ValueError) as exc:  # ModelError is a ValueError
        where = "" if str(args.model) in str(exc) else f" {args.model}"
        print(f"hil device: error: cannot serve{where}: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: agent.stop())
    if agent.integrity != "verified":  # a foreign model is served, but not silently
        print(f"hil device: warning: {args.model}: integrity {agent.integrity}: the weights cannot be checked "
              "against an export; serve a model written by `lipnet export`", file=sys.stderr, flush=True)
    with realtime(args.realtime) as scheduling:
        print(f"hil device: listening on {agent.address[0]}:{agent.address[1]} n_x={agent.n_x} n_u={agent.n_u} "
              f"provider={agent.provider} scheduling={scheduling.split()[0]} "
              f"integrity={agent.integrity.split()[0]}", flush=True)
        counters = agent.serve_forever()
    agent.close()
    if args.json:
        print(json.dumps(counters), flush=True)
    else:
        print("hil device: stopped; " + " ".join(f"{k}={v}" for k, v in counters.items() if v), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m hil.device`."""
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
