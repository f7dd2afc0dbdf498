import math

import numpy as np
import pytest
import torch

from lipnet.exceptions import LipnetDimension, RunFolderError
from lipnet.train.checkpoint import load_controller
from lipnet.train.config import RunConfig, dump_toml, load_config
from lipnet.train.loop import train


def _cfg(**train_kw) -> RunConfig:
    cfg = RunConfig(plant="double_integrator")
    cfg.controller.hidden = [16, 16]
    cfg.train.steps = 6
    cfg.train.batch = 32
    cfg.train.eval_batch = 32
    cfg.train.eval_every = 3
    cfg.train.checkpoint_every = 3
    cfg.train.optimizer = "adam"
    cfg.train.horizon = 30
    for k, v in train_kw.items():
        setattr(cfg.train, k, v)
    return cfg


def test_resume_equals_uninterrupted(tmp_path):
    full = train(_cfg(), tmp_path / "full", progress=False, log=lambda *a: None)
    part = train(_cfg(), tmp_path / "part", progress=False, log=lambda *a: None, stop_after=3)
    assert len(part.metrics) == 3 and not part.summary
    rest = train(_cfg(), tmp_path / "part", resume=True, progress=False, log=lambda *a: None)
    assert [r["loss"] for r in rest.metrics] == [r["loss"] for r in full.metrics]
    a, b = full.controller.state_dict(), rest.controller.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert load_controller(tmp_path / "part").lipschitz_bound() == pytest.approx(full.controller.lipschitz_bound())


def test_existing_run_folder_is_refused_and_kept(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match="--resume.*--overwrite"):
        train(_cfg(), out, progress=False)
    assert (out / "precious.txt").read_text() == "keep me"


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(RunFolderError, match="writable|not a folder"):
        train(_cfg(), blocker / "run", progress=False)


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(RunFolderError, match="nothing to resume"):
        train(_cfg(), tmp_path / "none", resume=True, progress=False)


def test_dimension_contradiction(tmp_path):
    cfg = _cfg()
    cfg.controller.n_x = 5
    with pytest.raises(LipnetDimension, match="n_x = 5"):
        train(cfg, tmp_path / "r", progress=False)


def test_non_finite_loss_is_skipped_and_never_checkpointed(tmp_path, monkeypatch):
    import lipnet.train.loop as loop

    real = loop.make_objective
    calls = {"n": 0}

    def poisoned(*a, **k):
        obj = real(*a, **k)

        def f(policy, x0):
            calls["n"] += 1
            value = obj(policy, x0)
            return value * math.nan if calls["n"] == 2 else value
        return f

    monkeypatch.setattr(loop, "make_objective", poisoned)
    with pytest.warns(UserWarning, match="non-finite loss"):
        res = train(_cfg(), tmp_path / "r", progress=False, log=lambda *a: None)
    assert [r["skipped"] for r in res.metrics].count("non-finite loss") == 1
    ctrl = load_controller(tmp_path / "r")
    assert all(torch.isfinite(p).all() for p in ctrl.parameters())


def test_config_toml_round_trip(tmp_path):
    cfg = _cfg()
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg.to_dict()))
    assert load_config(path).to_dict() == cfg.to_dict()
    path.write_text("[train]\nlearning_rate = 3\n")
    with pytest.raises(TypeError, match="learning_rate.*valid"):
        load_config(path)


def test_run_folder_contents_and_construction_bound(tmp_path):
    cfg = _cfg()
    cfg.controller.lipschitz = 7.5
    cfg.train.optimizer = "sphere-mm"  # the default, which measures through forward hooks
    res = train(cfg, tmp_path / "r", progress=False, log=lambda *a: None)
    for name in ("controller.pt", "config.toml", "metrics.csv", "train_state.pt"):
        assert (tmp_path / "r" / name).exists()
    assert 7.5 <= res.controller.lipschitz_bound() <= 7.5 * (1 + 1e-3)  # + the float32 rounding margin
    assert np.isfinite(res.summary["evaluation"]["cost_ratio_to_lqr_optimum"])
    assert not any(m._forward_hooks for m in res.controller.modules())  # the optimiser took its hooks back


def test_cli_trains_an_npz_plant_and_writes_the_report(tmp_path, capsys):
    from lipnet.cli import main

    npz = tmp_path / "motor.npz"
    # A continuous-time DC motor (position, speed): discretised by zero-order hold at the default rate.
    np.savez(npz, A=np.array([[0.0, 1.0], [0.0, -2.0]]), B=np.array([[0.0], [3.0]]), u_max=5.0)
    out = tmp_path / "run"
    code = main(["train", "--plant", str(npz), "--steps", "6", "--batch", "16", "--hidden", "8,8", "--out", str(out),
                 "--no-progress", "--optimizer", "sphere-mm"])
    assert code == 0
    text = capsys.readouterr().out
    assert "report:" in text and (out / "report.md").exists()
    for name in ("loss.png", "responses.png", "summary.json", "config.toml"):
        assert (out / name).exists(), name
    assert "cost / LQR optimum" in (out / "report.md").read_text()


def test_rescale_path_at_initialisation_and_relu_only(tmp_path):
    cfg = _cfg(rescale="path")
    cfg.controller.activation = "relu"
    res = train(cfg, tmp_path / "r", progress=False, log=lambda *a: None)
    assert res.summary["rescale"]["iterations"] >= 1
    cfg.controller.activation = "tanh"
    with pytest.raises(ValueError, match="ReLU"):
        train(cfg, tmp_path / "t", progress=False)
