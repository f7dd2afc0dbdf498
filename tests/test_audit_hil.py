"""Issue 15 (reliability and security) on the serving side: model integrity on load, a HIL run whose device
stopped answering, non-finite actions and states, and atomic report files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from toys import quick_onnx, seal_onnx

import plants
from export.runtime import DIGEST_KEY, ModelError, graph_digest, session
from hil import host as hil_host
from hil.device import DeviceAgent
from hil.host import OK, TIMEOUT, UNREACHABLE, HilConfig, HilHost
from lipnet.cli import main as lipnet_main
from lipnet.nn import Controller

ROOT = Path(__file__).resolve().parents[1]
PLANT = "double_integrator?dt=0.005"
WEIGHT = -0.0157  # the weight the tests corrupt, as in the audit: two bytes flipped turn it into about -1.9e25


def _gemm_onnx(path: Path, w, b, tail: tuple[str, ...] = ()) -> Path:
    """`action = tail(state @ wᵀ + b)` (`tail`: unary ONNX ops applied in order, e.g. Sqrt, Neg)."""
    w, b = np.asarray(w, np.float32), np.asarray(b, np.float32)
    names = ["g", *(f"t{i}" for i in range(len(tail)))]
    names[-1] = "action"
    nodes = [helper.make_node("Gemm", ["state", "w", "b"], [names[0]], transB=1)]
    nodes += [helper.make_node(op, [names[i]], [names[i + 1]]) for i, op in enumerate(tail)]
    graph = helper.make_graph(nodes, "controller",
                              [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", w.shape[1]])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", w.shape[0]])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return Path(path)


def _flip_weight(src: Path, dst: Path) -> Path:
    """A copy of `src` with two bytes of the weight `WEIGHT` flipped (its exponent: a huge finite value)."""
    data = bytearray(src.read_bytes())
    pattern = np.float32(WEIGHT).tobytes()
    assert data.count(pattern) == 1
    i = data.find(pattern)
    data[i + 2] ^= 0x01
    data[i + 3] ^= 0x55
    assert abs(np.frombuffer(bytes(data[i:i + 4]), "<f4")[0]) > 1e20
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture
def sealed(tmp_path) -> Path:
    """A 2-state, 1-action linear controller carrying the export metadata and its graph hash."""
    path = _gemm_onnx(tmp_path / "sealed.onnx", [[WEIGHT, -0.8]], [0.01])
    return seal_onnx(path, {"lipnet.plant": PLANT, "lipnet.dt": 0.005})


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- 1. integrity of exported models ------------------------------------------------------------------
def _props(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def test_sealed_model_is_verified_and_the_hash_covers_graph_and_metadata(sealed, tmp_path):
    s = session(sealed)
    on_disk = onnx.load(str(sealed))
    assert s.integrity == "verified"
    assert s.metadata[DIGEST_KEY] == graph_digest(sealed.read_bytes(), _props(on_disk))
    np.testing.assert_allclose(s([1.0, 0.5]), [WEIGHT - 0.4 + 0.01], rtol=1e-6)
    assert session(sealed.read_bytes()).integrity == "verified"  # bytes input is verified too
    # an edited metadata entry (say, a smaller Lipschitz bound) is caught like a flipped weight
    model = onnx.load(str(sealed))
    p = model.metadata_props.add()
    p.key, p.value = "lipnet.lipschitz_upper", "0.5"
    edited = tmp_path / "edited.onnx"
    onnx.save(model, str(edited))
    assert graph_digest(edited.read_bytes(), _props(model)) != graph_digest(sealed.read_bytes(), _props(on_disk))
    with pytest.raises(ModelError, match="do not match the hash recorded at export"):
        session(edited)


def test_flipped_weight_bytes_are_refused_from_a_file_and_from_bytes(sealed, tmp_path):
    bad = _flip_weight(sealed, tmp_path / "flipped.onnx")
    with pytest.raises(ModelError, match=r"do not match the hash recorded at export.*corrupted or was modified.*"
                                         r"lipnet export"):
        session(bad)
    with pytest.raises(ModelError, match="do not match the hash recorded at export"):
        session(bad.read_bytes())
    with pytest.raises(ModelError, match="do not match the hash recorded at export"):
        session(bad, provider="cuda")  # checked before any GPU session is built
    # The opt-out for tools that inspect broken files: it loads, and says it was not checked.
    s = session(bad, verify=False)
    assert s.integrity.startswith("not checked") and abs(s([1.0, 0.0])[0]) > 1e20


def test_lipnet_model_without_hash_is_refused_foreign_model_is_unverified(tmp_path):
    path = _gemm_onnx(tmp_path / "plain.onnx", [[WEIGHT, -0.8]], [0.0])
    s = session(path)
    assert s.integrity == "unverified (no lipnet metadata)"  # a foreign model: served, and it says so
    model = onnx.load(str(path))
    p = model.metadata_props.add()
    p.key, p.value = "lipnet.format", json.dumps("lipnet-onnx/1")
    onnx.save(model, str(tmp_path / "nohash.onnx"))
    with pytest.raises(ModelError, match="without an integrity hash.*re-export"):
        session(tmp_path / "nohash.onnx")
    model = onnx.load(str(path))  # a hash that is not one (wrong length, garbage) is a mismatch
    p = model.metadata_props.add()
    p.key, p.value = DIGEST_KEY, json.dumps("abc")
    onnx.save(model, str(tmp_path / "badhash.onnx"))
    with pytest.raises(ModelError, match="do not match the hash"):
        session(tmp_path / "badhash.onnx")


def test_hil_serve_refuses_a_tampered_model_in_one_line(sealed, tmp_path):
    bad = _flip_weight(sealed, tmp_path / "flipped.onnx")
    # In subprocesses with a timeout: an agent that accepts the model serves forever.
    for command in (["hil.device"], ["lipnet.cli", "hil", "serve"]):
        res = subprocess.run([sys.executable, "-m", *command, str(bad), "--listen", "127.0.0.1:0", "--no-realtime"],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        line = _one_line(res.stderr)
        assert res.returncode == 2 and "hash recorded at export" in line and "lipnet export" in line, res.stderr
        assert "listening" not in res.stdout


def test_agent_reports_integrity_in_the_handshake(sealed, tmp_path):
    agent = DeviceAgent(sealed, ("127.0.0.1", 0))
    try:
        assert agent.info()["integrity"] == "verified"
    finally:
        agent.close()
    agent = DeviceAgent(_gemm_onnx(tmp_path / "plain.onnx", [[0.1, 0.2]], [0.0]), ("127.0.0.1", 0))
    try:
        assert agent.info()["integrity"].startswith("unverified")
    finally:
        agent.close()


def test_simulate_refuses_a_tampered_model_and_reports_integrity(sealed, tmp_path, capsys):
    bad = _flip_weight(sealed, tmp_path / "flipped.onnx")
    code = lipnet_main(["simulate", str(bad), "--x0", "1,0", "--duration", "0.05", "--out", str(tmp_path / "o")])
    assert code == 2 and "hash recorded at export" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "o" / "report.json").exists()
    code = lipnet_main(["simulate", str(sealed), "--x0", "1,0", "--duration", "0.05", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["controller"]["integrity"] == "verified"


# --- 2. a device that stopped answering ------------------------------------------------------------------
def test_run_failure_rule():
    fail = hil_host.run_failure
    x = np.zeros((251, 2))
    status = np.full(250, OK, np.int8)
    assert fail(status, x, rate=100) is None
    outage = status.copy()
    outage[50:200] = UNREACHABLE  # a 1.5 s outage, then the device is back: not a failure
    assert fail(outage, x, rate=100) is None
    dead = status.copy()
    dead[100:] = UNREACHABLE
    dead[100] = TIMEOUT
    msg = fail(dead, x, rate=100)
    assert msg.startswith("device stopped answering at t=1.00 s") and "150 of 250 ticks missed" in msg
    assert "unreachable 149" in msg and "timeout 1" in msg
    short = status.copy()
    short[-50:] = TIMEOUT  # 0.5 s of misses at the end: shorter than the 1 s stall
    assert fail(short, x, rate=100) is None and fail(short, x, rate=100, stall=0.4) is not None
    assert "stopped answering at t=0.00 s" in fail(np.full(30, TIMEOUT, np.int8), x[:31], rate=100)  # never answered
    assert "miss ratio 20.0% above 10.0%" in fail(np.r_[status[:200], short[-50:]], x, 100, max_miss_ratio=0.1)
    diverged = x.copy()
    diverged[7:] = np.inf
    assert "non-finite plant state x_7 at t=0.07 s" in fail(status, diverged, rate=100)


@pytest.fixture(scope="module")
def hil_model(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    ctrl = Controller(2, 1, hidden=(8,), u_low=[-1.0], u_high=[1.0], gains=2.0)
    folder = tmp_path_factory.mktemp("audit_hil")
    return seal_onnx(quick_onnx(ctrl, folder / "controller.onnx"))


@pytest.mark.hil
def test_cli_hil_run_fails_when_the_agent_is_killed(hil_model, tmp_path, capsys):
    agent = DeviceAgent(hil_model, ("127.0.0.1", 0))
    thread = agent.serve_in_thread()

    def kill_after_ticks():  # stop it once the loop is running (its 20 warm-up exchanges and 30 ticks answered)
        end = time.monotonic() + 20
        while agent.counters["answered"] < 50 and time.monotonic() < end:
            time.sleep(1e-3)
        agent.stop()
        thread.join(5)
        agent.close()  # the port is closed: the host sees ICMP port unreachable, as with a killed process

    killer = threading.Thread(target=kill_after_ticks)
    killer.start()
    out = tmp_path / "dead"
    code = lipnet_main(["hil", "run", "--plant", PLANT, "--device", f"127.0.0.1:{agent.address[1]}", "--rate", "200",
                        "--duration", "2", "--deadline-ms", "4.5", "--out", str(out), "--no-plots", "--no-realtime",
                        "--x0", "0.5,0"])
    killer.join()
    err = capsys.readouterr().err
    assert code == 1, err
    line = _one_line(err)
    m = re.search(r"device stopped answering at t=([\d.]+) s", line)
    assert m and float(m.group(1)) <= 2 - 1.0 and ("unreachable" in line or "timeout" in line), line
    rep = json.loads((out / "report.json").read_text())  # the report is finished and records why
    assert rep["result"]["ok"] is False and rep["result"]["failure"] in line
    assert rep["steps"] == 400 and rep["misses"]["count"] >= 200


# --- 3. non-finite actions from the device -------------------------------------------------------------
class _NanPolicy:
    n_x, n_u = 2, 1

    def __call__(self, state):
        return np.array([np.nan], np.float32)


@pytest.mark.hil
def test_nan_actions_are_invalid_not_timeouts(tmp_path):
    from hil.report import hil_report

    invalid = hil_host.INVALID
    assert hil_host.STATUS_NAMES[invalid] == "invalid_action"
    plant = plants.load(PLANT)
    agent = DeviceAgent(_NanPolicy(), ("127.0.0.1", 0))
    thread = agent.serve_in_thread()
    try:
        for delay in (0.0, 1e-3):  # immediate replies, and replies held back by injected delay
            cfg = HilConfig(rate=200, duration=0.5, deadline=4.5e-3, delay=delay, fallback="zero")
            with HilHost(plant, agent.address, cfg) as host:
                rec = host.run([0.3, 0.0])
            c, st = rec.counters, rec.status
            # The law, not a scheduler-dependent share: nothing was applied as on time, every invalid reply is
            # counted once and as invalid (a loaded machine makes more of them late, measured 34 of 76 under 3 jobs).
            assert c["on_time"] == 0 and (st == OK).sum() == 0 and (st == invalid).sum() == c["invalid"] > 0
            assert c["on_time"] + c["late"] + c["invalid"] + c["lost"] == c["sent"]  # each reply counted once
            assert np.all(rec.u[st != OK] == 0.0)  # the fallback replaced every invalid action
            rep = hil_report(rec, plant)
            assert rep["misses"]["by_reason"]["invalid_action"] == c["invalid"]
            assert rep["misses"]["by_reason"]["timeout"] == int((st == TIMEOUT).sum()) < c["invalid"]
            assert "invalid" in rec.failure  # every tick missed: the run failed, and says why
        # Through run_hil with a reference that fails at once (the same NaN policy): the report and plots are
        # still written, parity is over the steps the reference has.
        from hil.api import run_hil
        from hil.simulate import Policy

        cfg = HilConfig(rate=200, duration=0.2, deadline=4.5e-3)
        nan = Policy(_NanPolicy(), 2, 1, "nan", "torch")
        rep, rec, ref = run_hil(plant, agent.address, cfg, x0=[0.3, 0.0], out=tmp_path, model=nan)
        assert ref.failure["step"] == 0 and rep["reference"]["failure"]["what"] == "action"
        assert rep["reference"]["parity"]["compared_steps"] == 0 and rep["result"]["ok"] is False
        written = {p.name for p in tmp_path.iterdir()}
        assert {"report.json", "trajectory.npz", "trajectory.png", "latency.png"} <= written
    finally:
        agent.stop()
        thread.join(5)
        agent.close()


# --- 4. simulate with non-finite actions or states -----------------------------------------------------
def test_simulate_nan_action_writes_the_report_and_exits_1(tmp_path, capsys):
    model = seal_onnx(_gemm_onnx(tmp_path / "sqrt.onnx", [[0.0, 1.0]], [0.0], ("Sqrt", "Neg")),
                      {"lipnet.plant": PLANT, "lipnet.dt": 0.005})  # u = -sqrt(v): NaN once v < 0
    for x0, plots in (("0,0.01", ["--no-plots"]), ("0,-0.01", [])):
        out = tmp_path / x0
        code = lipnet_main(["simulate", str(model), "--x0", x0, "--duration", "0.5", "--out", str(out), *plots])
        captured = capsys.readouterr()
        assert code == 1, captured.err
        m = re.search(r"non-finite action at step (\d+)", _one_line(captured.err))
        assert m, captured.err
        k = int(m.group(1))
        rep = json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON {c}"))
        assert rep["result"]["ok"] is False and rep["result"]["step"] == k and rep["steps"] == k
        data = np.load(out / "trajectory.npz")
        assert data["u"].shape == (k, 1) and data["x"].shape == (k + 1, 2) and np.isfinite(data["x"]).all()
        assert np.isnan(session(model)(data["x"][k].astype(np.float32))).all()  # the state the model failed on
    assert k == 0 and (tmp_path / "0,-0.01" / "trajectory.png").exists()


def test_simulate_non_finite_state_is_recorded(tmp_path):
    from hil.api import run_simulation
    from hil.simulate import Policy

    plant = plants.LinearPlant([[1e200]], [[1.0]], dt=0.1)
    policy = Policy(lambda s: np.zeros(1, np.float32), 1, 1, "zero", "torch")
    rep, sim = run_simulation(plant, policy, x0=[1.0], steps=10, out=tmp_path, plots=False)
    assert rep["result"]["ok"] is False and rep["result"]["what"] == "state"
    assert "non-finite plant state x_2 after step 1" in rep["result"]["failure"]
    assert sim.x.shape == (2, 1) and np.isfinite(sim.x).all() and sim.u.shape == (1, 1)
    json.loads((tmp_path / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON {c}"))


def test_hil_report_with_a_diverged_state_is_still_written(tmp_path):
    from hil.report import hil_report, write_report

    plant = plants.load(PLANT)
    n = 20
    x = np.zeros((n + 1, 2))
    x[12:] = np.nan
    zeros = np.zeros(n, np.int64)
    rec = hil_host.HilRecord(x=x, u=np.zeros((n, 1)), status=np.zeros(n, np.int8), release_ns=zeros,
                             start_ns=np.arange(n) * 5_000_000, rtt_ns=np.full(n, 1e5), apply_ns=zeros,
                             compute_ns=np.full(n, 1e4), step_ns=zeros, end_ns=zeros,
                             counters={"sent": n, "on_time": n, "late": 0, "lost": 0, "invalid": 0,
                                       "unreachable": 0, "injected_loss": 0},
                             config={**HilConfig(rate=200, duration=0.1).__dict__}, device_info={},
                             device_stats={}, failure=hil_host.run_failure(np.zeros(n, np.int8), x, 200))
    rep = hil_report(rec, plant)
    write_report(tmp_path, rep, {"x": x, "u": rec.u}, plant, plots=False)
    saved = json.loads((tmp_path / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON {c}"))
    assert saved["result"]["ok"] is False and "non-finite plant state x_12" in saved["result"]["failure"]
    assert saved["performance"]["finite"] is False


# --- 5. atomic writes ----------------------------------------------------------------------------------
def test_report_files_are_written_through_the_atomic_writer(tmp_path, monkeypatch):
    from hil.api import run_simulation
    from hil.simulate import Policy

    replaced, real_replace = [], os.replace

    def spy(src, dst, *a, **k):
        replaced.append(Path(dst).name)
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", spy)
    plant = plants.load(PLANT)
    policy = Policy(lambda s: -0.5 * s[:1], 2, 1, "p", "torch")
    run_simulation(plant, policy, x0=[1.0, 0.0], steps=20, out=tmp_path / "r")
    files = {"report.json", "trajectory.npz", "trajectory.png", "latency.png"}
    assert files <= set(replaced), replaced  # each written to a temporary beside it, then renamed
    assert {p.name for p in (tmp_path / "r").iterdir()} == files  # no temporaries left behind


def test_hil_host_modules_write_no_file_directly():
    # The device side (hil/device.py) must not import lipnet; the host side writes only through lipnet.fileio.
    root = Path(__file__).resolve().parents[1]
    for name in ("api", "host", "report", "simulate"):
        source = (root / "hil" / f"{name}.py").read_text()
        for call in ("os.replace(", "np.savez(out", ".write_text(", ".write_bytes(", "savefig(path"):
            assert call not in source, f"hil/{name}.py: {call}"


def test_device_side_has_no_lipnet_import():
    root = Path(__file__).resolve().parents[1]
    for path in (root / "hil" / "device.py", root / "export" / "runtime.py"):
        imports = [line for line in path.read_text().splitlines() if line.lstrip().startswith(("import ", "from "))]
        assert not [line for line in imports if "lipnet" in line], path
