"""Hardware-in-the-loop on loopback: wire format, device agent, host loop, parity, faults, CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from toys import blocked_agent_script, exchange, quick_onnx, seal_onnx  # shared with the simulate tests

import plants
from hil import wire
from hil.api import run_hil, run_simulation
from hil.device import DeviceAgent, parse_address
from hil.fallback import Fallback, make_fallback
from hil.host import INJECTED, OK, SKIPPED, DeviceUnreachable, HilConfig, HilHost
from hil.stats import longest_burst, summary_us
from lipnet.cli import main as lipnet_main
from lipnet.exceptions import LipnetDimension
from lipnet.nn import Controller
from lipnet.train.checkpoint import save_controller

pytestmark = pytest.mark.hil

ROOT = Path(__file__).resolve().parents[1]
PLANT = "double_integrator?dt=0.005"
# The device side must run without these (a board has no torch): the subprocess makes importing them fail.
BLOCK_TORCH = blocked_agent_script("torch", "lipnet", "plants")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    ctrl = Controller(2, 1, hidden=(32, 32), u_low=[-1.0], u_high=[1.0], gains=2.0)
    folder = tmp_path_factory.mktemp("hil_model")
    save_controller(ctrl, folder, plant=PLANT, dt=0.005)
    return seal_onnx(quick_onnx(ctrl, folder / "controller.onnx"))  # with the export digest: served verified


@pytest.fixture(scope="module")
def plant():
    return plants.load(PLANT)


def _start_agent(model: Path, port: int = 0, block_torch: bool = False) -> tuple[subprocess.Popen, tuple]:
    code = BLOCK_TORCH if block_torch else "import sys, runpy; runpy.run_module('hil.device', run_name='__main__')"
    proc = subprocess.Popen([sys.executable, "-c", code, str(model), "--listen", f"127.0.0.1:{port}", "--json",
                             "--realtime"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"agent did not start: {line!r} {proc.stderr.read()}")
    return proc, parse_address(line.split("listening on ")[1].split()[0])


def _stop_agent(proc: subprocess.Popen) -> dict:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def torchless_agent(model):
    """The agent as a subprocess in which `import torch` (and lipnet, plants) fails."""
    proc, addr = _start_agent(model, block_torch=True)
    yield addr
    counters = _stop_agent(proc)
    assert counters["answered"] > 0 and counters["errors"] == 0


@pytest.fixture
def agent(model):
    """An in-process agent (thread) whose counters the test can read directly."""
    ag = DeviceAgent(model, ("127.0.0.1", 0))
    thread = ag.serve_in_thread()
    yield ag
    ag.stop()
    thread.join(5)
    ag.close()
    assert not thread.is_alive()


# --- wire format ------------------------------------------------------------------------------------
def test_wire_layout_and_roundtrip():
    assert wire.HEADER_SIZE == 40 and wire.packet_size(wire.STATE, 3, 2) == 52
    pkt = wire.PacketBuffer(wire.STATE, 3, 2)
    pkt.values[:] = [1.5, -2.0, 3.25]
    data = bytes(pkt.stamp(7, 123456789))
    assert data[:4] == b"LPNH" and data[4] == 1 and data[5] == wire.STATE
    h = wire.check_state(data, len(data), 3)
    assert (h.kind, h.n_x, h.n_u, h.seq, h.t_host_ns) == (wire.STATE, 3, 2, 7, 123456789)
    np.testing.assert_array_equal(np.frombuffer(data, "<f4", 3, 40), [1.5, -2.0, 3.25])
    act = wire.encode(wire.ACTION, 3, 2, 7, [0.5, -0.25], t_host_ns=5, t_device_ns=9, compute_ns=11)
    h = wire.check_action(act, len(act), 2)
    assert (h.seq, h.t_host_ns, h.t_device_ns, h.compute_ns) == (7, 5, 9, 11)
    assert wire.check_action(act, len(act), 3) == "wrong_dim"
    assert wire.encode(wire.STATE, 1, 1, 2**32 + 5)[12:16] == (5).to_bytes(4, "little")  # seq wraps


def test_stats_helpers():
    assert longest_burst([0, 1, 1, 0, 1, 1, 1, 0]) == 3 and longest_burst([0, 0]) == 0 and longest_burst([1]) == 1
    s = summary_us([1000.0, 2000.0, np.nan, 3000.0])
    assert s["n"] == 3 and s["p50"] == 2.0 and s["max"] == 3.0
    assert summary_us([])["p99"] is None


# --- device agent -----------------------------------------------------------------------------------
def _valid_state(seq: int, x=(0.1, -0.2)) -> bytes:
    return wire.encode(wire.STATE, 2, 1, seq, x, t_host_ns=42)


BAD_PACKETS = {
    "empty": (b"", "truncated"),
    "short_header": (_valid_state(1)[:20], "truncated"),
    "short_payload": (_valid_state(1)[:-2], "truncated"),
    "oversized": (_valid_state(1) + b"\0\0\0\0", "oversized"),
    "huge": (_valid_state(1) + bytes(60000), "oversized"),
    "bad_magic": (b"XXXX" + _valid_state(1)[4:], "bad_magic"),
    "bad_version": (_valid_state(1)[:4] + b"\x09" + _valid_state(1)[5:], "bad_version"),
    "bad_kind": (_valid_state(1)[:5] + b"\x63" + _valid_state(1)[6:], "bad_kind"),
    "action_to_device": (wire.encode(wire.ACTION, 2, 1, 1, [0.0]), "bad_kind"),
    "wrong_dim": (wire.encode(wire.STATE, 3, 1, 1, [0.1, 0.2, 0.3]), "wrong_dim"),
    "dim_too_large": (wire.encode(wire.STATE, 5000, 1, 1), "wrong_dim"),
    "nan": (_valid_state(1, (np.nan, 0.0)), "non_finite"),
    "inf": (_valid_state(1, (0.0, np.inf)), "non_finite"),
}


_exchange = exchange  # one request, one reply (tests/toys.py)


@pytest.mark.parametrize("name", sorted(BAD_PACKETS))
def test_agent_drops_malformed_and_keeps_serving(agent, name):
    data, reason = BAD_PACKETS[name]
    before = dict(agent.counters)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(agent.address)
        s.send(data)
        reply = _exchange(s, _valid_state(99))  # answered: the bad datagram produced no reply and no crash
    assert reply is not None
    h = wire.check_action(reply, len(reply), 1)
    assert h.kind == wire.ACTION and h.seq == 99 and h.t_host_ns == 42
    end = time.monotonic() + 2  # the agent counts an answer just after sending it
    while agent.counters["answered"] == before["answered"] and time.monotonic() < end:
        time.sleep(1e-3)
    assert agent.counters[reason] == before[reason] + 1
    assert agent.counters["answered"] == before["answered"] + 1
    assert agent.dropped() == sum(before[r] for r in wire.DROP_REASONS) + 1
    assert agent.counters["errors"] == 0


def test_agent_answers_with_the_model(agent, model):
    from export.runtime import session

    sess = session(str(model))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(agent.address)
        for seq, x in enumerate(np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)):
            reply = _exchange(s, wire.encode(wire.STATE, 2, 1, seq, x))
            assert wire.check_action(reply, len(reply), 1).seq == seq
            np.testing.assert_array_equal(np.frombuffer(reply, "<f4", 1, 40), sess(x))
        hello = _exchange(s, wire.encode(wire.HELLO, 0, 0, 0))
        info = wire.decode_json(hello, len(hello))
        assert hello[5] == wire.HELLO_ACK and info["n_x"] == 2 and info["n_u"] == 1 and info["provider"] == "cpu"
        stats = _exchange(s, wire.encode(wire.STATS, 0, 0, 0))
        assert wire.decode_json(stats, len(stats))["answered"] >= 5


def test_gpu_provider_passes_through_to_the_runtime(model):
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ag = DeviceAgent(model, ("127.0.0.1", 0), provider="cuda")
    try:
        info = ag.info()
        assert info["requested_provider"] == "cuda"
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            assert info["provider"] == "cpu" and "cuda" in info["fallback_reason"]
        else:
            assert info["provider"] == "cuda" and info["fallback_reason"] is None
    finally:
        ag.close()


def test_agent_rejects_missing_model(tmp_path, capsys):
    from hil.device import main

    assert main([str(tmp_path / "missing.onnx"), "--listen", "127.0.0.1:0"]) == 2
    assert "cannot serve" in capsys.readouterr().err


# --- host loop --------------------------------------------------------------------------------------
def _cleanest_run(run, attempts: int = 3):
    """The run with the fewest misses of up to `attempts` (stopping at a clean one). This shared VM stalls even
    a SCHED_FIFO process for a few ms about once in 300–1000 ticks when idle, and up to 3 % of ticks while CI
    installs packages beside it (measured); no loop can hide that. Zero misses on an idle machine is a
    performance figure, measured by `benchmarks/hil.py`; the tests check the loop's laws."""
    best = None
    for i in range(attempts):
        result = run(i)
        rep = result[0]
        if best is None or rep["misses"]["count"] < best[0]["misses"]["count"]:
            best = (rep, result)
        if rep["misses"]["count"] == 0:
            break
        warnings.warn(f"attempt {i + 1}: {rep['misses']} (scheduling {rep['timing']['scheduling']})", stacklevel=2)
    return best[1]


def test_cleanest_run_keeps_the_attempt_with_fewest_misses_and_stops_at_a_clean_one():
    def fake(counts):
        return lambda i: ({"misses": {"count": counts[i]}, "timing": {"scheduling": "test"}}, i)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert _cleanest_run(fake([3, 1, 2]))[1] == 1
        assert _cleanest_run(fake([2, 0]))[1] == 1  # a third attempt would raise IndexError
    assert [str(w.message).split(":")[0] for w in seen] == ["attempt 1", "attempt 2", "attempt 3", "attempt 1"]


def test_hil_run_torchless_device_keeps_rate_accounts_misses_and_matches_the_simulation(
        torchless_agent, model, plant, tmp_path):
    cfg = HilConfig(rate=200, duration=1.5, deadline=5e-3, realtime=True)

    def attempt(i):  # each attempt writes its own folder, so the files checked below are the chosen run's
        out = tmp_path / f"hil{i}"
        return (*run_hil(plant, torchless_agent, cfg, x0=[1.0, -0.5], out=out, model=model), out)

    rep, rec, ref, out = _cleanest_run(attempt)
    misses = rep["misses"]
    # A broken loop (agent too slow, replies dropped, wrong sequence numbers) misses most ticks; scheduler
    # stalls miss a few (up to 4 % of a run seen in CI, a third beside a CPU-bound process).
    assert misses["ratio"] <= 0.25, misses
    assert sum(misses["by_reason"].values()) == misses["count"] == int((rec.status != OK).sum())
    assert rep["packets"]["on_time"] == 300 - misses["count"] and rep["steps"] == 300 and rep["packets"]["lost"] == 0
    assert rep["timing"]["rtt_us"]["n"] == rep["packets"]["on_time"] and 0 < rep["timing"]["rtt_us"]["p50"] < 4500
    assert abs(rep["timing"]["rate_hz_achieved"] - 200) < 2
    # Parity: the same float32 model on the same float32 states, equal to float32 rounding (in fact exactly),
    # up to the first miss (after it the fallback action makes the trajectories differ by design).
    par = rep["reference"]["parity"]
    n = par["compared_steps"]
    first_miss = int(np.argmax(rec.status != OK)) if misses["count"] else 300
    assert n == first_miss and par["all_steps"] == (misses["count"] == 0)
    assert n == 0 or par["equal"]
    np.testing.assert_allclose(rec.x[: n + 1], ref.x[: n + 1], rtol=0, atol=1e-6 * max(1, np.abs(ref.x).max()))
    np.testing.assert_allclose(rec.u[:n], ref.u[:n], rtol=0, atol=1e-6)
    assert np.abs(rec.u).max() > 0.05  # the controller acted: parity is not trivial
    saved = json.loads((out / "report.json").read_text())
    assert saved["kind"] == "hil" and saved["misses"]["count"] == misses["count"]
    assert saved["device_counters"]["answered"] >= rep["packets"]["on_time"]
    assert {"trajectory.npz", "trajectory.png", "latency.png"} <= {p.name for p in out.iterdir()}
    data = np.load(out / "trajectory.npz")
    np.testing.assert_array_equal(data["x"], rec.x)
    np.testing.assert_array_equal(data["x_sim"], ref.x)


def test_simulate_matches_hil_report_format(model, plant, tmp_path):
    rep, sim = run_simulation(plant, model, x0=[1.0, -0.5], steps=50, out=tmp_path / "sim", plots=False)
    for key in ("kind", "format", "plant", "controller", "steps", "timing", "misses", "performance", "files"):
        assert key in rep
    assert rep["kind"] == "simulate" and rep["steps"] == 50 and sim.x.shape == (51, 2)
    assert json.loads((tmp_path / "sim" / "report.json").read_text())["performance"] == rep["performance"]


def test_cli_hil_run_against_served_model(torchless_agent, model, tmp_path, capsys):
    out = tmp_path / "cli"

    def cli():
        code = lipnet_main(["hil", "run", "--plant", PLANT, "--device", f"127.0.0.1:{torchless_agent[1]}",
                            "--rate", "200", "--duration", "1", "--deadline-ms", "5", "--out", str(out), "--model",
                            str(model), "--x0", "0.5,0", "--no-plots", "--json", "--realtime"])
        assert code == 0
        return json.loads(capsys.readouterr().out)

    rep = cli()  # the loop's laws are checked on the API run above; this checks the command's plumbing
    assert rep["steps"] == 200 and rep["misses"]["ratio"] < 0.5  # it ran against the agent (a broken one: ~1)
    assert rep["timing"]["rtt_us"]["n"] == rep["packets"]["on_time"] == 200 - rep["misses"]["count"]
    # equal over the steps before the first miss (None only if the very first tick missed: nothing to compare)
    assert rep["reference"]["parity"]["equal"] in (True, None) and (out / "report.json").exists()


def test_loss_injection_counts_every_drop(torchless_agent, plant):
    cfg = HilConfig(rate=200, duration=1.0, deadline=4.5e-3, loss=0.25, seed=3, fallback="zero", realtime=True)

    def attempt(i):  # a stall of the shared machine skips or delays ticks: those are timing, not this test's law
        with HilHost(plant, torchless_agent, cfg) as host:
            rec = host.run([0.3, 0.0])
        stalled = int((rec.status == SKIPPED).sum()) + rec.counters["late"]
        return {"misses": {"count": stalled}, "timing": {"scheduling": rec.counters["scheduling"]}}, rec

    _, rec = _cleanest_run(attempt)
    expected = np.random.default_rng(3).random(200) < 0.25
    skipped = rec.status == SKIPPED  # ticks the host itself started too late (none on an idle machine)
    # A stalled scheduler skips a burst (12 of 200 seen once in CI); a host that skipped its own schedule would
    # skip most ticks.
    assert skipped.sum() <= 50
    np.testing.assert_array_equal((rec.status == INJECTED)[~skipped], expected[~skipped])
    assert rec.counters["injected_loss"] == (expected & ~skipped).sum() > 20
    assert rec.counters["sent"] == (~expected & ~skipped).sum()
    c = rec.counters
    assert c["on_time"] + c["late"] + c["lost"] == c["sent"] and c["lost"] == 0  # every sent packet accounted
    assert c["on_time"] == (rec.status == OK).sum() >= 0.75 * c["sent"]  # (a stalled scheduler makes a few late)
    assert np.all(rec.u[rec.status != OK] == 0.0)  # the zero fallback was applied on each drop


def test_delay_injection_measured_and_late_replies_discarded(torchless_agent, plant):
    cfg = HilConfig(rate=200, duration=0.5, deadline=4.5e-3, delay=2e-3, realtime=True)
    with HilHost(plant, torchless_agent, cfg) as host:
        rec = host.run([0.3, 0.0])
    ok = rec.status == OK
    # Every reply is held back by the injected 2 ms, and a reply is used only inside the deadline. How many
    # ticks a shared machine's scheduler pushes past 4.5 ms varies (0-9 of 100 seen here), so the count of
    # on-time ticks is bounded loosely and every other tick must be accounted as a discarded late reply.
    assert np.nanmin(rec.rtt_ns) >= 2e6 and np.all(rec.rtt_ns[ok] <= 4.5e6) and np.isnan(rec.rtt_ns[~ok]).all()
    assert ok.sum() >= 50 and rec.counters["on_time"] == ok.sum()
    assert rec.counters["late"] + (rec.status == SKIPPED).sum() >= (~ok).sum() - rec.counters["lost"]
    assert rec.counters["unreachable"] == 0
    cfg = HilConfig(rate=200, duration=0.5, deadline=4.5e-3, delay=7e-3, realtime=True)  # all after the deadline
    with HilHost(plant, torchless_agent, cfg) as host:
        rec = host.run([0.3, 0.0])
    assert (rec.status != OK).all() and rec.counters["on_time"] == 0
    assert rec.counters["late"] == rec.counters["sent"] >= 96 and rec.counters["lost"] == 0


class _SlowPlant(plants.LinearPlant):
    """A plant whose step takes longer than the loop period: the host cannot keep the rate."""

    def step(self, x, u):
        time.sleep(3e-3)
        return super().step(x, u)


def test_host_overrun_is_reported(torchless_agent, plant):
    slow = _SlowPlant(plant.A, plant.B, dt=plant.dt) if hasattr(plant, "A") else None
    if slow is None:
        pytest.skip("LinearPlant without A, B attributes")
    cfg = HilConfig(rate=500, duration=0.2, deadline=1.5e-3)
    with HilHost(slow, torchless_agent, cfg) as host:
        rec = host.run([0.1, 0.0])
    from hil.report import hil_report

    rep = hil_report(rec, slow)
    assert rep["timing"]["overruns"] > 50 and not rep["timing"]["host_kept_rate"]
    assert rep["misses"]["host_overruns_skipped"] == int((rec.status == SKIPPED).sum()) > 10
    assert rep["timing"]["rate_hz_achieved"] < 400


def test_agent_killed_and_restarted_mid_run(model, plant):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, addr = _start_agent(model, port)
    events = {}

    def chaos():
        time.sleep(0.5)
        proc.kill()
        proc.wait()
        events["killed"] = time.perf_counter_ns()
        time.sleep(0.3)
        events["restarted"] = _start_agent(model, port)[0]

    cfg = HilConfig(rate=100, duration=4.0, deadline=7e-3, fallback="lqr", realtime=True)
    with HilHost(plant, addr, cfg) as host:
        host.connect()
        chaos_thread = threading.Thread(target=chaos)
        chaos_thread.start()
        rec = host.run([1.0, 0.0])
        chaos_thread.join()
    proc2 = events["restarted"]
    try:
        ok = rec.status == OK
        # The outage is the longest run of missed ticks (a scheduler stall elsewhere misses one or two).
        edges = np.flatnonzero(np.diff(np.concatenate([[0], (~ok).astype(int), [0]])))
        starts, ends = edges[::2], edges[1::2]
        longest = int(np.argmax(ends - starts))
        first_miss, resumed = int(starts[longest]), int(ends[longest])
        assert 20 <= first_miss <= 90, first_miss  # the loop ran on the agent, then lost it
        assert first_miss + 20 < resumed < 380, resumed  # an outage of at least the restart pause, then back
        # Back on the restarted agent: a shared machine's scheduler still pushes a few ticks past the 7 ms
        # deadline (up to 2.4 % seen under a competing process), so "resumed" means most, not all, ticks.
        assert ok[resumed:].mean() > 0.9, "the loop resumed with the restarted agent"
        assert rec.counters["unreachable"] + (rec.status == 1).sum() >= resumed - first_miss - 1
        lqr_u = make_fallback("lqr", plant)
        for k in range(first_miss, resumed):
            np.testing.assert_allclose(rec.u[k], lqr_u(rec.x[k], None))
        assert np.isfinite(rec.x).all() and len(rec.u) == 400
        assert rec.failure is None, rec.failure  # an outage the agent came back from is not a failure
    finally:
        _stop_agent(proc2)


def test_host_errors_are_clear(model, plant):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeviceUnreachable, match="lipnet hil serve"):
        with HilHost(plant, ("127.0.0.1", port), HilConfig(rate=100, duration=1, connect_timeout=0.3)) as host:
            host.connect()
    with pytest.raises(ValueError, match="deadline"):
        HilConfig(rate=1000, duration=1, deadline=2e-3)
    with pytest.raises(ValueError, match="fallback"):
        HilConfig(rate=10, duration=1, fallback="panic")
    ag = DeviceAgent(model, ("127.0.0.1", 0))
    thread = ag.serve_in_thread()
    try:
        with pytest.raises(LipnetDimension, match="n_x=4"):
            with HilHost(plants.load("cartpole"), ag.address, HilConfig(rate=50, duration=1)) as host:
                host.connect()
    finally:
        ag.stop()
        thread.join(5)
        ag.close()


def test_stepping_leaves_the_plant_usable_by_autograd(plant):
    from hil.stepper import PlantStepper

    stepper = PlantStepper(plant)
    with stepper.context():
        stepper(np.ones(2), np.ones(1))
    x = torch.ones(1, 2, dtype=torch.float64, requires_grad=True)
    plant.step(x, torch.zeros(1, 1, dtype=torch.float64)).sum().backward()
    assert x.grad is not None and plants.lqr(plant).K.shape == (1, 2)


def test_fallbacks_clip_and_follow_lqr(plant):
    fb = Fallback("hold", 1, u_eq=[0.0], u_low=[-1.0], u_high=[1.0])
    np.testing.assert_array_equal(fb(np.zeros(2), None), [0.0])
    np.testing.assert_array_equal(fb(np.zeros(2), np.array([3.0])), [1.0])
    np.testing.assert_array_equal(Fallback("zero", 2)(np.ones(2), np.ones(2)), [0.0, 0.0])
    lqr = make_fallback("lqr", plant)
    x = np.array([0.4, -0.1])
    np.testing.assert_allclose(lqr(x, None), -plants.lqr(plant).K @ x)


def test_device_modules_import_without_torch():
    code = ("import sys\nfor m in ('torch', 'lipnet', 'plants'):\n    sys.modules[m] = None\n"
            "import hil.device, hil.wire, export.runtime\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lipnet', 'plants', 'scipy') "
            "and sys.modules[m] is not None)\nprint(bad)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
