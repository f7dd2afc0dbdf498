"""`lipnet simulate`: closed loop in one process, run folder (torch) or ONNX, same report layout as `hil run`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from toys import quick_onnx, seal_onnx  # a fast ONNX twin shared with the HIL tests

import plants
from hil.simulate import load_policy, simulate
from lipnet.cli import main as lipnet_main
from lipnet.nn import Controller
from lipnet.train.checkpoint import save_controller

PLANT = "double_integrator?dt=0.005"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    torch.manual_seed(2)
    ctrl = Controller(2, 1, hidden=(16, 16), u_low=[-1.0], u_high=[1.0], gains=2.0)
    folder = tmp_path_factory.mktemp("sim_run")
    save_controller(ctrl, folder, plant=PLANT, dt=0.005)
    # A quick ONNX twin with the metadata `lipnet export` writes (the full exporter is tested in the slow test).
    seal_onnx(quick_onnx(ctrl, folder / "controller.onnx", {"lipnet.plant": PLANT, "lipnet.dt": "0.005"}))
    return folder


def _cli(capsys, *argv) -> tuple[int, dict | str]:
    code = lipnet_main(["simulate", *map(str, argv)])
    out = capsys.readouterr()
    try:
        return code, json.loads(out.out)
    except ValueError:
        return code, out.err


def test_simulate_run_dir_and_onnx_agree(run_dir, tmp_path, capsys):
    code, rep_t = _cli(capsys, run_dir, "--x0", "1,-0.5", "--duration", "0.5", "--out", tmp_path / "t", "--json")
    assert code == 0 and rep_t["kind"] == "simulate" and rep_t["controller"]["kind"] == "torch"
    assert rep_t["steps"] == 100 and rep_t["plant"]["spec"] == PLANT  # the plant recorded in the checkpoint
    code, rep_o = _cli(capsys, run_dir / "controller.onnx", "--x0", "1,-0.5", "--duration", "0.5",
                       "--out", tmp_path / "o", "--json", "--no-plots")
    assert code == 0 and rep_o["controller"]["kind"] == "onnx" and rep_o["plant"]["spec"] == PLANT  # from metadata
    t, o = np.load(tmp_path / "t" / "trajectory.npz"), np.load(tmp_path / "o" / "trajectory.npz")
    assert t["x"].shape == (101, 2) and t["u"].shape == (100, 1)
    np.testing.assert_allclose(o["x"], t["x"], atol=1e-5)  # torch float32 vs onnxruntime float32
    assert np.abs(t["u"]).max() > 0.01
    assert rep_t["performance"]["cost"] == pytest.approx(rep_o["performance"]["cost"], rel=1e-4)
    assert (tmp_path / "t" / "trajectory.png").exists() and (tmp_path / "t" / "latency.png").exists()
    assert json.loads((tmp_path / "t" / "report.json").read_text())["files"]["trajectory"] == "trajectory.npz"


def test_simulate_is_the_closed_loop(run_dir):
    plant = plants.load(PLANT)
    policy = load_policy(run_dir)
    rec = simulate(plant, policy, [0.5, 0.2], 20)
    ctrl = Controller.from_config(torch.load(run_dir / "controller.pt", weights_only=True)["config"])
    ctrl.load_state_dict(torch.load(run_dir / "controller.pt", weights_only=True)["state_dict"])
    x = torch.tensor([[0.5, 0.2]], dtype=torch.float64)
    with torch.no_grad():
        for k in range(20):
            u = ctrl(x.float()).double()
            np.testing.assert_allclose(rec.u[k], u[0].numpy(), rtol=1e-6, atol=1e-7)
            x = plant.step(x, u)
    np.testing.assert_allclose(rec.x[-1], x[0].numpy(), rtol=1e-6, atol=1e-7)


def test_simulate_errors_are_clean(run_dir, tmp_path, capsys):
    code, err = _cli(capsys, tmp_path / "nothing.onnx", "--plant", PLANT)
    assert code == 2 and "no controller" in err
    code, err = _cli(capsys, run_dir, "--plant", "cartpole")
    assert code == 2 and "n_x=4" in err
    code, err = _cli(capsys, run_dir, "--x0", "1,2,3")
    assert code == 2 and "x0" in err


@pytest.mark.slow
def test_simulate_exported_controller(run_dir, tmp_path, capsys):
    from export import export_controller

    export_controller(run_dir, tmp_path / "exported.onnx", samples=500)
    code, rep = _cli(capsys, tmp_path / "exported.onnx", "--x0", "1,-0.5", "--duration", "0.5", "--json")
    code_t, rep_t = _cli(capsys, run_dir, "--x0", "1,-0.5", "--duration", "0.5", "--json")
    assert code == code_t == 0 and rep["plant"]["spec"] == PLANT
    assert rep["performance"]["cost"] == pytest.approx(rep_t["performance"]["cost"], rel=1e-4)
