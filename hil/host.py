"""The HIL host: steps the plant at a fixed rate and exchanges state/action datagrams with the device.

Tick k is released at the absolute time `t0 + k·T` (no drift): the host sleeps until shortly before the
release and busy-waits the rest, sends the state `x_k`, waits for the action until `release + deadline`
(sleeping in `select`, which wakes on arrival), applies it or, on a miss, the fallback, and steps the plant.
Every miss is counted with its reason; a reply that arrives after its deadline is discarded by sequence number
and counted late, a reply whose action is not finite is discarded at once (`invalid_action`). Loss (drop
before send) and delay (replies held back in a queue) are injected here. A run whose device stopped answering
(see `run_failure`) still runs to its end under the fallback and records why it failed in `HilRecord.failure`.
"""

from __future__ import annotations

import gc
import heapq
import math
import select
import socket
import time
from dataclasses import asdict, dataclass

import numpy as np

from hil import wire
from hil.fallback import FALLBACKS, make_fallback
from hil.realtime import realtime
from hil.stepper import PlantStepper
from lipnet.exceptions import LipnetDimension, LipnetError, LipnetValue

__all__ = ["HilConfig", "HilRecord", "HilHost", "DeviceUnreachable", "STATUS_NAMES", "run_failure",
           "OK", "TIMEOUT", "INJECTED", "UNREACHABLE", "SKIPPED", "INVALID"]

# Per-tick status: OK, or why the fallback was applied.
OK, TIMEOUT, INJECTED, UNREACHABLE, SKIPPED, INVALID = 0, 1, 2, 3, 4, 5
MAX_TICKS = 10**7  # a day at 100 Hz; the record keeps every tick in memory
STATUS_NAMES = {OK: "ok", TIMEOUT: "timeout", INJECTED: "injected_loss", UNREACHABLE: "unreachable",
                SKIPPED: "host_overrun", INVALID: "invalid_action"}
_DEVICE_MISSES = (TIMEOUT, UNREACHABLE, INVALID)  # the misses the device (or the network to it) is to blame for
_MASK = 0xFFFFFFFF


class DeviceUnreachable(LipnetError, ConnectionError):
    """The device agent did not answer the handshake."""


@dataclass
class HilConfig:
    """Settings of one HIL run.

    Parameters
    ----------
    rate : loop rate in Hz (one plant step per tick).
    duration : run length in seconds (`round(rate·duration)` ticks).
    deadline : seconds after each release by which the action must arrive (default 70% of the period).
    fallback : `hold`, `zero` or `lqr` (see `hil.fallback`).
    loss : probability of dropping each state datagram before sending (fault injection).
    delay : seconds added to every reply before the host sees it (fault injection).
    seed : seed of the loss draws and of the default initial state.
    connect_timeout : seconds to wait for the device's handshake.
    spin : seconds busy-waited before each release and deadline (the rest is slept).
    realtime : run the loop as SCHED_FIFO (or nice −10) where permitted; the report says what was granted.
    warmup : state/action exchanges before the first tick (not recorded): first calls fault pages in.
    stall : seconds of consecutive misses at the end of the run after which the device counts as stopped and
        the run fails (an outage it recovers from is not a failure); see `run_failure`.
    max_miss_ratio : the run also fails when more than this fraction of its ticks missed (None: no limit).
    """

    rate: float
    duration: float
    deadline: float | None = None
    fallback: str = "hold"
    loss: float = 0.0
    delay: float = 0.0
    seed: int = 0
    connect_timeout: float = 10.0
    spin: float = 200e-6
    realtime: bool = False
    warmup: int = 20
    stall: float = 1.0
    max_miss_ratio: float | None = None

    def __post_init__(self):
        if not (0 < self.rate <= 1e6 and self.duration > 0 and self.rate * self.duration <= MAX_TICKS):
            raise LipnetValue(f"rate must be in (0, 1e6] Hz and duration > 0 s with at most {MAX_TICKS} ticks in all, "
                             f"got rate={self.rate}, duration={self.duration}")
        if self.deadline is None:
            self.deadline = 0.7 / self.rate
        if not 0 < self.deadline <= 1.0 / self.rate:
            raise LipnetValue(f"deadline {self.deadline * 1e3:.3f} ms must be in (0, period = "
                             f"{1e3 / self.rate:.3f} ms]; lower the rate or the deadline")
        if self.fallback not in FALLBACKS:
            raise LipnetValue(f"unknown fallback {self.fallback!r}; valid: {', '.join(FALLBACKS)}")
        if not 0 <= self.loss < 1:
            raise LipnetValue(f"loss must be a probability in [0, 1), got {self.loss}")
        if not self.delay >= 0:
            raise LipnetValue(f"delay must be >= 0 s, got {self.delay}")
        if not self.stall > 0:
            raise LipnetValue(f"stall must be > 0 s (misses at the end that fail the run), got {self.stall}")
        if self.max_miss_ratio is not None and not 0 <= self.max_miss_ratio <= 1:
            raise LipnetValue(f"max_miss_ratio must be in [0, 1], got {self.max_miss_ratio}")

    @property
    def steps(self) -> int:
        """Number of ticks."""
        return max(1, round(self.rate * self.duration))


@dataclass
class HilRecord:
    """Everything one run measured: per-tick arrays (times in ns from the first release) and counters."""

    x: np.ndarray            # [N+1, n_x] states (float64)
    u: np.ndarray            # [N, n_u] applied actions
    status: np.ndarray       # [N] int8, see STATUS_NAMES
    release_ns: np.ndarray   # [N] scheduled release
    start_ns: np.ndarray     # [N] actual start (release jitter = start − release)
    rtt_ns: np.ndarray       # [N] round trip send → reply (NaN on a miss)
    apply_ns: np.ndarray     # [N] action applied, from release (sensor → actuator latency)
    compute_ns: np.ndarray   # [N] device inference time reported in the reply (NaN on a miss)
    step_ns: np.ndarray      # [N] plant step time on the host
    end_ns: np.ndarray       # [N] end of the tick's work
    counters: dict
    config: dict
    device_info: dict
    device_stats: dict
    failure: str | None = None  # why the run failed (`run_failure`), None when it did not


def _reasons(status: np.ndarray) -> str:
    codes, counts = np.unique(status, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return ", ".join(f"{STATUS_NAMES.get(int(codes[i]), int(codes[i]))} {int(counts[i])}" for i in order)


def _stopped(status: np.ndarray, rate: float, stall: float) -> str | None:
    n, missed = len(status), status != OK
    answered = np.flatnonzero(~missed)
    tail = n - (int(answered[-1]) + 1 if answered.size else 0)
    if tail == 0 or (tail < n and tail < max(1, math.ceil(stall * rate - 1e-9))):
        return None  # answering at the end (an earlier outage it recovered from is not a failure)
    start, streak = n - tail, status[n - tail:]
    device = np.isin(streak, _DEVICE_MISSES)
    if not device.any():
        what = "no action was applied from"  # host overruns or injected loss only: not the device's doing
    elif np.all(streak[device] == INVALID):
        what = "the device answered only invalid (non-finite) actions from"
    else:
        what = "device stopped answering at"
    return (f"{what} t={start / rate:.2f} s: the last {tail} ticks ({tail / rate:.2f} s) missed "
            f"({_reasons(streak)}); {int(missed.sum())} of {n} ticks missed in all")


def run_failure(status, x, rate: float, stall: float = 1.0, max_miss_ratio: float | None = None) -> str | None:
    """Why a finished run failed, in one line, or None: the device was not answering for its last `stall`
    seconds (or at all), the plant state became non-finite, or more than `max_miss_ratio` of the ticks missed."""
    status, x = np.asarray(status).reshape(-1), np.asarray(x, dtype=np.float64)
    problems = [_stopped(status, rate, stall)] if len(status) else []
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        problems.append(f"non-finite plant state x_{k} at t={k / rate:.2f} s")
    ratio = float((status != OK).mean()) if len(status) else 0.0
    if max_miss_ratio is not None and ratio > max_miss_ratio:
        problems.append(f"miss ratio {ratio:.1%} above {max_miss_ratio:.1%} allowed (max_miss_ratio)")
    return "; ".join(p for p in problems if p) or None


class HilHost:
    """The plant-side loop against one device.

    Parameters
    ----------
    plant : a `plants.Plant`.
    device : `(host, port)` of the agent.
    config : `HilConfig`.
    """

    def __init__(self, plant, device: tuple[str, int], config: HilConfig):
        self.plant, self.config = plant, config
        self.n_x, self.n_u = int(plant.n_x), int(plant.n_u)
        self.device = (str(device[0]), int(device[1]))
        self.stepper = PlantStepper(plant)
        self.fallback = make_fallback(config.fallback, plant)
        family = socket.AF_INET6 if ":" in self.device[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.connect(self.device)  # connected: ICMP "port unreachable" surfaces as ConnectionRefusedError
        self.sock.setblocking(False)
        self._buf = bytearray(wire.MAX_DATAGRAM + 1)
        self._action = np.frombuffer(self._buf, np.dtype("<f4"), self.n_u, wire.HEADER_SIZE)
        self.device_info: dict = {}

    def close(self) -> None:
        """Release the socket."""
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- control datagrams (off the hot path) ---------------------------------------------------------
    def _request(self, kind: int, reply: int, timeout: float, interval: float = 0.1) -> dict | None:
        end = time.monotonic() + timeout
        seq = 0
        while time.monotonic() < end:
            try:
                self.sock.send(wire.encode(kind, self.n_x, self.n_u, seq))
            except OSError:
                pass
            wait_end = min(end, time.monotonic() + interval)
            while (left := wait_end - time.monotonic()) > 0:
                select.select([self.sock], [], [], left)
                try:
                    n = self.sock.recv_into(self._buf)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                header = wire.parse_header(self._buf, n)
                if not isinstance(header, str) and header.kind == reply:
                    out = wire.decode_json(self._buf, n)
                    out.setdefault("n_x", header.n_x)
                    out.setdefault("n_u", header.n_u)
                    return out
            seq += 1
        return None

    def connect(self) -> dict:
        """Handshake (HELLO → HELLO_ACK) and dimension check; returns the device's info."""
        info = self._request(wire.HELLO, wire.HELLO_ACK, self.config.connect_timeout)
        if info is None:
            raise DeviceUnreachable(f"no device answered at {self.device[0]}:{self.device[1]} within "
                                    f"{self.config.connect_timeout:g} s; start it with `lipnet hil serve "
                                    f"controller.onnx --listen {self.device[0]}:{self.device[1]}`")
        if (info["n_x"], info["n_u"]) != (self.n_x, self.n_u):
            raise LipnetDimension(f"the device's model maps {info['n_x']} states to {info['n_u']} actions but "
                                  f"plant {getattr(self.plant, 'name', '')!r} has n_x={self.n_x}, n_u={self.n_u}")
        self.device_info = info
        return info

    def device_stats(self, timeout: float = 0.5) -> dict:
        """The agent's counters (STATS → STATS_ACK), or {} if it does not answer."""
        return self._request(wire.STATS, wire.STATS_ACK, timeout) or {}

    # --- the loop ------------------------------------------------------------------------------------
    def _await(self, seq: int, deadline: int, c: dict) -> int:
        """Wait for the ACTION of `seq` until `deadline` (ns); OK leaves it in `self._action`."""
        clock, recv, buf, pending = time.perf_counter_ns, self.sock.recv_into, self._buf, self._pending
        spin, seq = self._spin_ns, seq & _MASK
        while True:
            if pending and pending[0][0] <= clock():  # a delayed reply becomes visible now
                _, hseq, action, comp, t_host, invalid = heapq.heappop(pending)
                t_recv = clock()
                if hseq == seq and t_recv <= deadline:
                    if invalid:
                        c["invalid"] += 1
                        return INVALID
                    self._action[:] = action
                    self._reply = (t_recv, t_recv - t_host, comp)
                    return OK
                c["late"] += 1
                continue
            try:
                nbytes = recv(buf)
            except BlockingIOError:
                now = clock()
                if now >= deadline:
                    return TIMEOUT
                wake = min(deadline, pending[0][0]) if pending else deadline
                if wake - now > spin:
                    select.select((self.sock,), (), (), (wake - now - spin) * 1e-9)
                continue
            except ConnectionRefusedError:
                c["unreachable"] += 1
                return UNREACHABLE
            t_recv = clock()
            header = wire.check_action(buf, nbytes, self.n_u)
            invalid = False
            if isinstance(header, str):
                c["dropped"][header] += 1
                if header != "non_finite":
                    continue
                # A well-formed ACTION carrying NaN or inf: the device answered, but with nothing usable.
                header, invalid = wire.parse_header(buf, nbytes), True
            if header.kind != wire.ACTION:
                c["stray"] += 1
                continue
            if self._delay_ns:
                heapq.heappush(pending, (t_recv + self._delay_ns, header.seq, self._action.copy(),
                                         header.compute_ns, header.t_host_ns, invalid))
                continue
            if header.seq == seq and t_recv <= deadline:
                if invalid:  # the fallback now, not at the deadline: waiting longer cannot bring a valid one
                    c["invalid"] += 1
                    return INVALID
                self._reply = (t_recv, t_recv - header.t_host_ns, header.compute_ns)
                return OK
            if (seq - header.seq) & _MASK < 0x80000000:
                c["late"] += 1  # an earlier tick's reply (or this one's after the deadline): discarded
            else:
                c["stray"] += 1

    def _warmup(self, x0: np.ndarray, pkt: wire.PacketBuffer) -> None:
        scratch = {"late": 0, "stray": 0, "unreachable": 0, "invalid": 0,
                   "dropped": dict.fromkeys(wire.DROP_REASONS, 0)}
        pkt.values[:] = x0
        for i in range(self.config.warmup):
            seq = _MASK - i  # far from the run's sequence numbers: a straggler is counted late, never used
            try:
                self.sock.send(pkt.stamp(seq, time.perf_counter_ns()))
                self._await(seq, time.perf_counter_ns() + 100_000_000, scratch)
            except OSError:
                pass

    def _drain(self, seconds: float, c: dict) -> None:
        """After the last tick: count the replies still in flight as late."""
        end = time.perf_counter_ns() + int(seconds * 1e9) + self._delay_ns
        while self._await(-1, end, c) == OK:  # seq −1 never matches: every reply counts as late
            pass
        c["late"] += len(self._pending)
        self._pending.clear()

    def run(self, x0) -> HilRecord:
        """Run the loop from initial state `x0` for `config.steps` ticks; returns the record."""
        cfg, n = self.config, self.config.steps
        if not self.device_info:
            self.connect()
        x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
        if x0.size != self.n_x:
            raise LipnetDimension(f"x0 has {x0.size} entries, plant {self.plant.name!r} has n_x={self.n_x}")
        T, D = round(1e9 / cfg.rate), round(cfg.deadline * 1e9)
        self._spin_ns, self._delay_ns, self._pending = round(cfg.spin * 1e9), round(cfg.delay * 1e9), []
        x = np.empty((n + 1, self.n_x))
        u = np.empty((n, self.n_u))
        status = np.zeros(n, np.int8)
        start, end, step_ns, apply_ns = (np.zeros(n, np.int64) for _ in range(4))
        rtt, comp = np.full(n, np.nan), np.full(n, np.nan)
        drop = np.random.default_rng(cfg.seed).random(n) < cfg.loss
        c = {"sent": 0, "on_time": 0, "late": 0, "invalid": 0, "unreachable": 0, "stray": 0, "injected_loss": 0,
             "dropped": dict.fromkeys(wire.DROP_REASONS, 0)}
        x[0] = x0
        pkt, fallback, stepper = wire.PacketBuffer(wire.STATE, self.n_x, self.n_u), self.fallback, self.stepper
        self._warmup(x0, pkt)
        send, clock, sleep, spin, await_ = self.sock.send, time.perf_counter_ns, time.sleep, self._spin_ns, self._await
        u_last = None
        gc_enabled = gc.isenabled()
        gc.disable()  # a collection inside the loop is a multi-ms stall
        try:
            with stepper.context(), realtime(cfg.realtime) as scheduling:
                c["scheduling"] = scheduling
                t0 = clock() + 20_000_000
                for k in range(n):
                    release = t0 + k * T
                    if (left := release - clock()) > spin:
                        sleep((left - spin) * 1e-9)
                    while clock() < release:
                        pass
                    ts = start[k] = clock()
                    deadline, xk = release + D, x[k]
                    if ts >= deadline:
                        st = SKIPPED  # the host itself is too late for this tick: nothing is sent
                    else:
                        pkt.values[:] = xk
                        st = INJECTED
                        try:
                            if not drop[k]:
                                t_send = clock()
                                send(pkt.stamp(k, t_send))
                                c["sent"] += 1
                            st = await_(k, deadline, c)
                            if st == TIMEOUT and drop[k]:
                                st = INJECTED
                        except OSError:  # ConnectionRefused from an earlier ICMP error, or a send failure
                            c["unreachable"] += 1
                            st = UNREACHABLE
                    if st == OK:
                        uk = self._action.astype(np.float64)
                        rtt[k], comp[k] = self._reply[1], self._reply[2]
                        c["on_time"] += 1
                    else:
                        uk = fallback(xk, u_last)
                    status[k] = st
                    u[k] = uk
                    t1 = clock()
                    x[k + 1] = stepper(xk, uk)
                    t2 = end[k] = clock()
                    step_ns[k], apply_ns[k] = t2 - t1, t1 - release
                    u_last = uk
            self._drain(0.05, c)
        finally:
            if gc_enabled:
                gc.enable()
        c["injected_loss"] = int((status == INJECTED).sum())  # a planned drop on a skipped tick dropped nothing
        c["lost"] = max(0, c["sent"] - c["on_time"] - c["late"] - c["invalid"])  # each reply is counted once
        release_ns = np.arange(n, dtype=np.int64) * T
        return HilRecord(x=x, u=u, status=status, release_ns=release_ns, start_ns=start - t0, rtt_ns=rtt,
                         apply_ns=apply_ns, compute_ns=comp, step_ns=step_ns, end_ns=end - t0, counters=c,
                         config=asdict(cfg), device_info=dict(self.device_info), device_stats=self.device_stats(),
                         failure=run_failure(status, x, cfg.rate, cfg.stall, cfg.max_miss_ratio))
