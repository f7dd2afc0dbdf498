"""Issue 15's audit, CLI / run-folder / export side: each case failed before its fix (data lost, code run from a
file, a forged bound embedded, a traceback, a silent wrong result); here each must end in exit 2 with one line.

Plant-side cases are in test_audit_plants.py, HIL and simulate cases in test_audit_hil.py.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lipnet.cli import main
from lipnet.exceptions import TrainingFailed
from lipnet.train.config import RunConfig
from lipnet.train.loop import train

FAST = ["--plant", "double_integrator", "--steps", "2", "--hidden", "4", "--batch", "8", "--no-progress"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and "error:" in lines[0], err
    return lines[0]


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished small run folder (read-only for the tests: they copy it)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *FAST, "--out", str(out)]) == 0
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# --- data lost ------------------------------------------------------------------------------------------------


def test_overwrite_of_the_working_directory_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["train", *FAST, "--out", ".", "--overwrite"]) == 2
    assert "working directory" in _one_line_error(capsys)
    assert _tree(tmp_path) == before
    sub = tmp_path / "photos"
    monkeypatch.chdir(sub)
    assert main(["train", *FAST, "--out", "..", "--overwrite"]) == 2  # a parent of the working directory
    assert _tree(tmp_path) == before


def test_overwrite_of_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    target = tmp_path / "holiday"
    (target / "photos").mkdir(parents=True)
    (target / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    assert main(["train", *FAST, "--out", str(target), "--overwrite"]) == 2
    assert "not a lipnet run folder" in _one_line_error(capsys)
    assert (target / "photos" / "a.jpg").read_bytes() == b"\xff\xd8"


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--steps", "-5"], ["--batch", "-1"], ["--batch", "0"],
                                 ["--hidden", "-4"], ["--hidden", "0"], ["--hidden", ","],
                                 ["--lipschitz", "-1"], ["--lipschitz", "nan"], ["--lipschitz", "inf"],
                                 ["--seed", str(2**70)], ["--seed", "-1"], ["--threads", "0"]])
def test_bad_option_with_overwrite_keeps_the_old_run(trained, tmp_path, capsys, bad):
    run = _copy(trained, tmp_path / "run")
    before = _tree(run)
    assert main(["train", *FAST, *bad, "--out", str(run), "--overwrite"]) == 2
    msg = _one_line_error(capsys)
    assert bad[0] in msg or bad[0].strip("-") in msg, msg
    assert _tree(run) == before


def test_train_threads_last_only_for_the_command(trained, tmp_path, capsys):
    before = torch.get_num_threads()
    # refused after --threads was read (a bad --hidden), and a finished run: neither leaves its thread count behind
    assert main(["train", *FAST, "--threads", "7", "--hidden", "0", "--out", str(tmp_path / "bad")]) == 2
    assert torch.get_num_threads() == before
    assert main(["train", *FAST, "--threads", "3", "--out", str(tmp_path / "ok")]) == 0
    assert torch.get_num_threads() == before


def test_overwrite_removes_only_lipnets_files(trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    (run / "my-notes.md").write_text("keep me")
    old = (run / "controller.pt").read_bytes()
    assert main(["train", *FAST, "--seed", "3", "--out", str(run), "--overwrite"]) == 0
    assert (run / "my-notes.md").read_text() == "keep me"
    assert (run / "controller.pt").read_bytes() != old


@pytest.mark.parametrize("key,value", [("eval_every", 0), ("checkpoint_every", 0), ("eval_batch", 0),
                                       ("warmup", -1), ("horizon", -2), ("lr", float("nan"))])
def test_bad_config_values_are_one_line_errors(tmp_path, capsys, key, value):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'plant = "double_integrator"\n[train]\n{key} = {"nan" if value != value else value}\n')
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert key in _one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_lipschitz_factor_must_be_positive(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('plant = "double_integrator"\n[controller]\nlipschitz_factor = -4\n')
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "lipschitz_factor" in _one_line_error(capsys)


# --- security -------------------------------------------------------------------------------------------------


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_never_unpickles_code(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    marker = tmp_path / "pwned"
    state = torch.load(run / "train_state.pt", weights_only=True)
    state["metrics"].append(_Exploit(str(marker)))
    torch.save(state, run / "train_state.pt")
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 2
    assert "not a readable lipnet training state" in _one_line_error(capsys)
    assert not marker.exists()


@pytest.fixture(scope="module")
def certified(trained, tmp_path_factory):
    run = _copy(trained, tmp_path_factory.mktemp("cert") / "run")
    assert main(["certify", str(run), "--method", "spectral", "--method", "lipsdp-schur"]) == 0
    return run


def test_forged_certificate_bound_is_refused_at_export(certified, tmp_path, capsys):
    run = _copy(certified, tmp_path / "run")
    cert = json.loads((run / "certificate.json").read_text())
    true = cert["tightest_upper"]["value"]
    cert["tightest_upper"]["value"] = 0.5
    for b in cert["bounds"]:
        if b["value"] is not None:
            b["value"] = min(b["value"], 0.5)
    (run / "certificate.json").write_text(json.dumps(cert))
    out = tmp_path / "c.onnx"
    assert main(["export", str(run), "--out", str(out), "--samples", "200"]) == 2
    msg = _one_line_error(capsys)
    assert "0.5" in msg and "recomputed" in msg
    assert not out.exists() and list(tmp_path.glob("*.tmp")) == []
    assert true > 0.5


def test_forged_closed_loop_claim_is_refused_at_export(certified, tmp_path, capsys):
    run = _copy(certified, tmp_path / "run")
    cert = json.loads((run / "certificate.json").read_text())
    assert not cert["closed_loop"]["certified"]  # an untrained controller on the double integrator
    cert["closed_loop"]["certified"] = True
    (run / "certificate.json").write_text(json.dumps(cert))
    assert main(["export", str(run), "--out", str(tmp_path / "c.onnx"), "--samples", "200"]) == 2
    assert "closed loop" in _one_line_error(capsys)


def test_exported_bound_is_recomputed_and_certificate_re_verified(certified, tmp_path, capsys):
    out = tmp_path / "c.onnx"
    assert main(["export", str(certified), "--out", str(out), "--samples", "200", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["certificate_status"] == "verified"
    import export

    meta = export.read_metadata(out)
    cert = json.loads((certified / "certificate.json").read_text())
    assert meta["lipnet.lipschitz_upper"] <= cert["tightest_upper"]["value"] * (1 + 1e-4)
    assert meta["lipnet.certificate"]["source"].startswith("recomputed")


def test_construction_bound_covers_float32_rounding():
    """Adversarially tight layers (rank one, so ‖W‖₂ = ‖W‖_F = g): the computed weight's exact norm ≤ the bound."""
    from lipnet.nn.layers import FrobeniusLinear, SpectralLinear

    excess = 0.0
    for seed in range(40):
        torch.manual_seed(seed)
        for cls, shape in ((FrobeniusLinear, (1, 64)), (SpectralLinear, (32, 32))):
            lin = cls(shape[1], shape[0], gain=1.0 + seed * 1e-3)
            param = lin.direction if cls is FrobeniusLinear else lin.raw_weight
            with torch.no_grad():
                param.copy_(torch.randn_like(param) * float(torch.rand(1)) * 100)
            exact = float(np.linalg.norm(lin.weight.detach().double().numpy(), 2))
            excess = max(excess, exact / float(lin.gain) - 1)
            assert exact <= lin.lipschitz(), (seed, cls.__name__)
    assert excess > 0  # the rounding the margin is for does occur


# --- hangs and silent wrong results ---------------------------------------------------------------------------


def test_export_rejects_an_opset_it_cannot_produce_and_zero_samples(trained, tmp_path, capsys):
    out = tmp_path / "c.onnx"
    assert main(["export", str(trained), "--out", str(out), "--opset", "99", "--samples", "100"]) == 2
    assert "opset 99" in _one_line_error(capsys)
    assert not out.exists()
    assert main(["export", str(trained), "--out", str(out), "--samples", "0"]) == 2
    assert "samples" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


_NAN_PLANT = '''
import torch
calls = {"n": 0}

def f(x, u):
    calls["n"] += 1
    dx = torch.stack([x[:, 1], u[:, 0]], dim=1)
    return dx * float("nan") if calls["n"] > 3000 else dx

def make():
    calls["n"] = 0
    return {"f": f, "n_x": 2, "n_u": 1, "dt": 0.1, "horizon": 50}
'''


def test_training_that_goes_non_finite_stops_with_an_error(tmp_path, capsys):
    plant = tmp_path / "nanplant.py"
    plant.write_text(_NAN_PLANT)
    cfg = RunConfig(plant=f"{plant}:make")
    cfg.train.steps, cfg.train.warmup, cfg.train.batch, cfg.train.eval_batch = 60, 0, 8, 8
    cfg.controller.hidden = [4]
    with pytest.warns(UserWarning, match="undone"), pytest.raises(TrainingFailed, match="undone"):
        train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    ckpt = torch.load(tmp_path / "run" / "controller.pt", weights_only=True)
    weights = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("layers.")}
    assert weights and all(torch.isfinite(v).all() for v in weights.values())


def test_certify_on_a_zero_width_checkpoint_is_an_error(tmp_path, capsys):
    from lipnet.nn import Controller
    from lipnet.train.checkpoint import save_controller

    save_controller(Controller(2, 1, hidden=(4,)), tmp_path, plant="double_integrator", dt=0.1)
    ckpt = torch.load(tmp_path / "controller.pt", weights_only=True)
    ckpt["config"]["hidden"] = [0]
    torch.save(ckpt, tmp_path / "controller.pt")
    assert main(["certify", str(tmp_path)]) == 2
    assert "does not rebuild a controller" in _one_line_error(capsys)


def test_certify_default_skips_the_slow_sdp_and_all_adds_it(trained, tmp_path, capsys):
    from lipnet.certify import DEFAULT_METHODS, METHODS

    assert "lipsdp-neuron" not in DEFAULT_METHODS and "lipsdp-neuron" in METHODS
    run = _copy(trained, tmp_path / "run")
    assert main(["certify", str(run), "--method", "all", "--json", "--no-closed-loop"]) == 0
    methods = [b["method"] for b in json.loads(capsys.readouterr().out)["bounds"]]
    assert methods == list(METHODS)


# --- files ----------------------------------------------------------------------------------------------------


def test_stale_temporaries_of_killed_writers_are_cleaned(tmp_path):
    from lipnet.fileio import atomic_write

    dead = 2**22 + 12345  # above the default pid_max: no live process has it
    stale = tmp_path / f".controller.pt.lipnet-{dead}-abc123.tmp"
    stale.write_bytes(b"half")
    live = tmp_path / f".controller.pt.lipnet-{os.getpid()}-def456.tmp"
    live.write_bytes(b"being written")
    atomic_write(tmp_path / "summary.json", "{}")
    assert not stale.exists() and live.exists()
    assert (tmp_path / "summary.json").read_text() == "{}"


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    from lipnet.fileio import atomic_write

    target = tmp_path / "a.txt"
    target.write_text("old")

    def boom(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_train_headline_shows_both_ratios(tmp_path, capsys):
    assert main(["train", *FAST, "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "saturated LQR:" in out and "LQR optimum" in out and "cost / saturated LQR" in out
    assert math.isfinite(float(out.split("cost / saturated LQR ")[1].split()[0].rstrip(";")))


def test_export_replaces_only_a_model_it_made(trained, tmp_path, capsys):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8")
    assert main(["export", str(trained), "--out", str(photo), "--samples", "50"]) == 2
    assert "not a model lipnet exported" in _one_line_error(capsys)
    assert photo.read_bytes() == b"\xff\xd8"
    model = tmp_path / "c.onnx"
    assert main(["export", str(trained), "--out", str(model), "--samples", "50"]) == 0
    first = model.read_bytes()
    assert main(["export", str(trained), "--out", str(model), "--samples", "50", "--fp16"]) == 0
    assert model.read_bytes() != first


@pytest.fixture(scope="module")
def exported_model(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "c.onnx"
    assert main(["export", str(trained), "--out", str(out), "--samples", "50"]) == 0
    return out


def test_inspect_flags_a_flipped_weight(exported_model, tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(exported_model))
    w = max(model.graph.initializer, key=lambda i: numpy_helper.to_array(i).size)
    arr = numpy_helper.to_array(w).copy()
    arr.flat[0] = -1.9e25
    w.CopyFrom(numpy_helper.from_array(arr, w.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    capsys.readouterr()
    assert main(["export", "--inspect", str(bad)]) == 1
    captured = capsys.readouterr()
    assert "integrity: FAILED" in captured.out and "do not match the hash" in captured.err
    assert main(["simulate", str(bad), "--out", str(tmp_path / "sim")]) == 2
    assert "do not match the hash" in _one_line_error(capsys)


def test_inspect_flags_a_forged_bound_even_with_a_rewritten_hash(exported_model, tmp_path, capsys):
    import onnx

    from export.exporter import _seal
    from export.metadata import set_metadata

    model = onnx.load(str(exported_model))
    set_metadata(model, {"lipnet.lipschitz_upper": 0.5})
    _seal(model)  # an attacker who also rewrites the digest
    forged = tmp_path / "forged.onnx"
    onnx.save(model, str(forged))
    capsys.readouterr()
    assert main(["export", "--inspect", str(forged)]) == 1
    assert "below" in capsys.readouterr().err
    assert main(["export", "--inspect", str(exported_model)]) == 0


@pytest.mark.parametrize("argv", [["--duration", "inf"], ["--duration", "1e12"], ["--duration", "nan"]])
def test_simulate_duration_is_bounded(exported_model, tmp_path, capsys, argv):
    assert main(["simulate", str(exported_model), "--no-plots", "--out", str(tmp_path / "s"), *argv]) == 2
    assert "duration" in _one_line_error(capsys)


@pytest.mark.parametrize("argv", [["--rate", "inf"], ["--duration", "inf"], ["--rate", "1e9"]])
def test_hil_run_rate_and_duration_are_bounded(tmp_path, capsys, argv):
    assert main(["hil", "run", "--plant", "double_integrator", "--out", str(tmp_path / "h"),
                 "--connect-timeout", "0.2", *argv]) == 2
    assert _one_line_error(capsys)


@pytest.mark.parametrize("cmd", [["simulate", "RUN", "--no-plots"], ["hil", "run", "--plant", "pendulum"]])
@pytest.mark.parametrize("seed", [str(-(2**70)), str(2**64), "-1"])
def test_a_seed_out_of_range_is_a_usage_error_not_an_internal_one(trained, capsys, cmd, seed):
    args = [str(trained) if a == "RUN" else a for a in cmd]
    with pytest.raises(SystemExit) as stop:  # argparse's usage error, before any work
        main([*args, "--seed", seed])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "internal error" not in err
