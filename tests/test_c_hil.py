"""HIL with the C controller: `lipnet hil serve controller.c` (ctypes, no torch and no onnxruntime on the device
side), a built `.so`, and the standalone C agent `hil/c/agent.c` in a loopback session (same wire format)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from toys import blocked_agent_script, exchange

from export.c_build import CModelError, build_agent, compile_shared, find_compiler, load_c_policy
from export.c_export import export_c
from hil import wire
from hil.api import run_hil
from hil.device import DeviceAgent, parse_address
from hil.host import OK, HilConfig, HilHost
from hil.simulate import load_policy
from lipnet.cli import main as lipnet_main
from lipnet.nn import Controller

pytestmark = [pytest.mark.hil, pytest.mark.skipif(find_compiler()[0] is None, reason="no C compiler here")]

ROOT = Path(__file__).resolve().parents[1]
PLANT = "double_integrator?dt=0.005"
# The device side must run without torch, lipnet and plants; serving C it needs no onnxruntime either.
BLOCK = blocked_agent_script("torch", "lipnet", "plants", "onnxruntime", "onnx")


@pytest.fixture(scope="module")
def c_model(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    ctrl = Controller(2, 1, hidden=(32, 32), u_low=[-1.0], u_high=[1.0], gains=2.0).eval()
    path = tmp_path_factory.mktemp("c_model") / "controller.c"
    export_c(ctrl, path, plant=PLANT, dt=0.005, samples=500)
    return path


@pytest.fixture(scope="module")
def plant():
    import plants

    return plants.load(PLANT)


def _start(cmd: list[str]) -> tuple[subprocess.Popen, tuple[str, int], str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"agent did not start: {line!r} {proc.stderr.read()}")
    return proc, parse_address(line.split("listening on ")[1].split()[0]), line


def _stop(proc: subprocess.Popen) -> dict:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


_exchange = exchange  # one request, one reply (tests/toys.py)


def _session(plant, addr, model, tmp_path, name):
    """A short 200 Hz loopback run; the cleanest of three attempts (a shared VM stalls now and then)."""
    cfg = HilConfig(rate=200, duration=1.0, deadline=5e-3, realtime=True)
    best = None
    for i in range(3):
        rep, rec, ref = run_hil(plant, addr, cfg, x0=[1.0, -0.5], out=tmp_path / f"{name}{i}", model=model,
                                plots=False)
        if best is None or rep["misses"]["count"] < best[0]["misses"]["count"]:
            best = (rep, rec, ref)
        if rep["misses"]["count"] == 0:
            break
    return best


def _check_session(rep, rec, ref):
    assert rep["misses"]["ratio"] <= 0.25, rep["misses"]
    assert rep["steps"] == 200 and rep["packets"]["lost"] == 0
    par = rep["reference"]["parity"]
    n = par["compared_steps"]
    assert n == (int(np.argmax(rec.status != OK)) if rep["misses"]["count"] else 200)
    assert n == 0 or par["equal"]
    np.testing.assert_allclose(rec.u[:n], ref.u[:n], rtol=0, atol=1e-6)  # the same C function on both sides
    assert np.abs(rec.u).max() > 0.05


def test_agent_serves_controller_c_through_ctypes(c_model):
    ag = DeviceAgent(c_model, ("127.0.0.1", 0))
    thread = ag.serve_in_thread()
    policy = load_c_policy(c_model)
    try:
        info = ag.info()
        assert info["provider"] == "c" and info["integrity"] == "verified"
        assert info["plant"] == PLANT and info["dt"] == 0.005 and (info["n_x"], info["n_u"]) == (2, 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(ag.address)
            for seq, x in enumerate(np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)):
                reply = _exchange(s, wire.encode(wire.STATE, 2, 1, seq, x, t_host_ns=42))
                h = wire.check_action(reply, len(reply), 1)
                assert (h.seq, h.t_host_ns) == (seq, 42)
                np.testing.assert_array_equal(np.frombuffer(reply, "<f4", 1, 40), policy(x))
            s.send(wire.encode(wire.STATE, 2, 1, 9, [np.nan, 0.0]))  # dropped, counted, no reply
            assert _exchange(s, wire.encode(wire.STATE, 2, 1, 10, [0.1, 0.2])) is not None
        assert ag.counters["non_finite"] == 1 and ag.counters["errors"] == 0
    finally:
        ag.stop()
        thread.join(5)
        ag.close()


def test_torchless_and_ortless_agent_runs_a_loopback_session_with_c(c_model, plant, tmp_path):
    proc, addr, line = _start([sys.executable, "-c", BLOCK, str(c_model), "--listen", "127.0.0.1:0", "--json",
                               "--realtime"])
    try:
        assert "provider=c" in line and "integrity=verified" in line
        rep, rec, ref = _session(plant, addr, c_model, tmp_path, "py")
        assert rep["controller"]["device"]["provider"] == "c"
        assert rep["controller"]["reference_integrity"] == "verified"  # the reference simulation ran the same C
        _check_session(rep, rec, ref)
    finally:
        counters = _stop(proc)
    assert counters["answered"] > 0 and counters["errors"] == 0


def test_served_shared_library_and_refused_sources(c_model, tmp_path, capsys):
    so = tmp_path / "controller.so"
    compile_shared(c_model, so, harness=False)
    ag = DeviceAgent(so, ("127.0.0.1", 0))
    try:
        assert ag.info()["integrity"].startswith("unverified (a compiled library")
        x = np.array([0.3, -0.1], np.float32)
        np.testing.assert_array_equal(ag.session(x), load_c_policy(c_model)(x))
    finally:
        ag.close()
    tampered = tmp_path / "tampered.c"
    tampered.write_text(c_model.read_text().replace("return LIPNET_OK;", "action[0] = 0.5f; return LIPNET_OK;"))
    with pytest.raises(CModelError, match="sha256"):
        DeviceAgent(tampered, ("127.0.0.1", 0))
    from hil.device import main as device_main

    assert device_main([str(tampered), "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert "cannot serve" in err and "sha256" in err and "re-export" in err
    assert lipnet_main(["hil", "serve", str(tmp_path / "missing.c"), "--listen", "127.0.0.1:0"]) == 2
    assert "no C controller" in capsys.readouterr().err
    pol = load_policy(c_model)  # simulate and hil run --model take the C controller too
    assert pol.kind == "c" and pol.plant_spec == PLANT and pol.dt == 0.005 and pol.integrity == "verified"


BAD = {
    "truncated": [b"", wire.encode(wire.STATE, 2, 1, 1, [0.1, 0.2])[:-2]],
    "oversized": [wire.encode(wire.STATE, 2, 1, 1, [0.1, 0.2]) + b"\0" * 4,
                  wire.encode(wire.STATE, 2, 1, 1, [0.1, 0.2]) + bytes(60000)],
    "bad_magic": [b"XXXX" + wire.encode(wire.STATE, 2, 1, 1, [0.1, 0.2])[4:]],
    "bad_version": [wire.encode(wire.STATE, 2, 1, 1, [0.1, 0.2])[:4] + b"\x09"
                    + wire.encode(wire.STATE, 2, 1, 1, [0.1, 0.2])[5:]],
    "bad_kind": [wire.encode(wire.ACTION, 2, 1, 1, [0.0]), wire.encode(wire.STATE, 2, 1, 1)[:5] + b"\x63"
                 + wire.encode(wire.STATE, 2, 1, 1)[6:]],
    "wrong_dim": [wire.encode(wire.STATE, 3, 1, 1, [0.1, 0.2, 0.3]), wire.encode(wire.STATE, 5000, 1, 1)],
    "non_finite": [wire.encode(wire.STATE, 2, 1, 1, [np.nan, 0.0]), wire.encode(wire.STATE, 2, 1, 1, [0.0, -np.inf])],
}


def test_standalone_c_agent_follows_the_protocol_and_runs_a_loopback_session(c_model, plant, tmp_path):
    exe = tmp_path / "lipnet-agent"
    build = build_agent(c_model, exe)
    assert build["warnings"] == ""  # -Wall -Wextra -pedantic
    proc, addr, line = _start([str(exe), "--listen", "127.0.0.1:0", "--json"])
    try:
        assert "provider=c" in line and "integrity=verified" in line and "n_x=2 n_u=1" in line
        policy = load_c_policy(c_model)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            hello = _exchange(s, wire.encode(wire.HELLO, 0, 0, 7))
            h = wire.parse_header(hello, len(hello))
            info = wire.decode_json(hello, len(hello))
            assert (h.kind, h.n_x, h.n_u, h.seq) == (wire.HELLO_ACK, 2, 1, 7)
            assert info["provider"] == "c" and info["plant"] == PLANT and info["dt"] == 0.005
            assert info["integrity"].startswith("verified at build") and info["format"] == "lipnet-c/1"
            assert info["source_sha256"] in c_model.read_text().splitlines()[-1]
            for seq, x in enumerate(np.random.default_rng(3).normal(size=(20, 2)).astype(np.float32) * 3):
                t_host = 2**40 + seq  # a 64-bit value is echoed unchanged
                reply = _exchange(s, wire.encode(wire.STATE, 2, 1, 2**32 - 10 + seq, x, t_host_ns=t_host))
                h = wire.check_action(reply, len(reply), 1)
                assert len(reply) == 44 and (h.seq, h.t_host_ns) == ((2**32 - 10 + seq) & 0xFFFFFFFF, t_host)
                assert h.t_device_ns > 0 and 0 < h.compute_ns < 10**8 and (h.n_x, h.n_u) == (2, 1)
                np.testing.assert_array_equal(np.frombuffer(reply, "<f4", 1, 40), policy(x))
            for datagrams in BAD.values():
                for data in datagrams:
                    s.send(data)
            assert _exchange(s, wire.encode(wire.STATE, 2, 1, 99, [0.1, 0.1])) is not None  # still serving
            stats = _exchange(s, wire.encode(wire.STATS, 0, 0, 0))
            counters = wire.decode_json(stats, len(stats))
        for reason, datagrams in BAD.items():
            assert counters[reason] == len(datagrams), (reason, counters)
        assert counters["answered"] == 21 and counters["hello"] == 1 and counters["errors"] == 0
        rep, rec, ref = _session(plant, addr, c_model, tmp_path, "c")
        assert rep["controller"]["device"]["provider"] == "c"
        _check_session(rep, rec, ref)
        with HilHost(plant, addr, HilConfig(rate=100, duration=0.1)) as host:  # the host's own checks pass too
            assert host.connect()["n_x"] == 2 and host.device_stats()["answered"] > 200
    finally:
        final = _stop(proc)
    assert final["answered"] >= 221 and final["non_finite"] == 2
    assert set(wire.DROP_REASONS) <= set(final)
