"""`lipnet sweep`: keys and values, expansion and ids, bad input, local and Ray execution, resume, failures, Ctrl-C."""

import contextlib
import csv
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lipnet.cli import main
from lipnet.exceptions import LipnetArgument
from lipnet.sweep import (
    RAY_MISSING,
    SweepSpec,
    expand,
    parse_grid,
    parse_set,
    resolve_key,
    run_sweep,
    run_trial,
    trial_mode,
)
from lipnet.sweep.runner import _store_files, read_run
from lipnet.train import loop

REPO = Path(__file__).resolve().parents[1]
# Trials small enough for the fast suite: ~1 s each in this process.
TINY = ["--set", "plant=double_integrator", "--set", "hidden=4", "--set", "steps=3", "--set", "batch=8",
        "--set", "eval_batch=16"]
TINY_BASE = {"plant": "double_integrator", "hidden": [4], "steps": 3, "batch": 8, "eval_batch": 16}


def _rows(out: Path) -> list[dict]:
    with (out / "summary.csv").open() as fh:
        return list(csv.DictReader(fh))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_ray(monkeypatch):
    """Ray cannot be imported (as without the sweep extra)."""
    monkeypatch.setitem(sys.modules, "ray", None)


# ------------------------------------------------------------------------------------------ keys and values
def test_keys_resolve_from_short_dotted_and_flag_spellings():
    assert resolve_key("optimizer") == "train.optimizer"
    assert resolve_key("train.optimizer") == "train.optimizer"
    assert resolve_key("hidden") == "controller.hidden"
    assert resolve_key("eval-batch") == "train.eval_batch"
    assert resolve_key("--lipschitz") == "controller.lipschitz"
    assert resolve_key("plant") == "plant" and resolve_key("seed") == "seed"
    with pytest.raises(LipnetArgument, match=r"unknown configuration key 'optimiser'.*did you mean 'optimizer'"):
        resolve_key("optimiser")
    with pytest.raises(LipnetArgument, match="unknown configuration key"):
        resolve_key("train.hidden")


def test_grid_values_are_typed_split_and_checked():
    grid = parse_grid(["lr=1e-3,0.01", "hidden=4x4,[8,8],16", 'plant="pendulum?x0_box=1,2",cartpole',
                       "compile=false,true", "seed=0,1"])
    assert grid["train.lr"] == [0.001, 0.01]
    assert grid["controller.hidden"] == [[4, 4], [8, 8], [16]]
    assert grid["plant"] == ["pendulum?x0_box=1,2", "cartpole"]
    assert grid["train.compile"] == [False, True]
    assert grid["seed"] == [0, 1]
    assert parse_set(["steps=5", "activation=relu"]) == {"train.steps": 5, "controller.activation": "relu"}
    for bad, message in (("lr=abc", "takes a number"), ("steps=1.5", "takes an integer"),
                         ("optimizer=", "empty value list"), ("seed=1,1", "listed twice"),
                         ("optimizer", "KEY=VALUES"), ("lr=nan", "finite"), ("compile=maybe", "true or false"),
                         ("hidden=4x", "takes widths like 64x64"), ("plant=\"a,b", "unbalanced")):
        with pytest.raises(LipnetArgument, match=message):
            parse_grid([bad])
    with pytest.raises(LipnetArgument, match="given twice"):
        parse_grid(["seed=0", "seed=1"])


# ------------------------------------------------------------------------------------ expansion and trial ids
def test_expand_product_seeds_random_and_stable_readable_ids():
    spec = SweepSpec(base=dict(TINY_BASE), grids=[parse_grid(["optimizer=agd,sphere-mm", "lipschitz=10,30"])],
                     seeds=2)
    trials = expand(spec)
    assert len(trials) == 8 and len({t.id for t in trials}) == 8
    first = trials[0]
    assert first.id.startswith("optimizer-agd__lipschitz-10__seed-0-")
    assert first.config["train"]["optimizer"] == "agd" and first.config["controller"]["lipschitz"] == 10.0
    assert first.config["controller"]["hidden"] == [4] and first.config["train"]["steps"] == 3
    assert [t.id for t in expand(spec)] == [t.id for t in trials]  # stable: a re-run finds its folders
    # Anything else in the configuration changes the id: another base never reuses these folders.
    other = expand(SweepSpec(base={**TINY_BASE, "steps": 4}, grids=spec.grids, seeds=2))
    assert not {t.id for t in other} & {t.id for t in trials}
    sample = expand(SweepSpec(base=dict(TINY_BASE), grids=spec.grids, seeds=2, random=3))
    assert len(sample) == 3 and {t.id for t in sample} <= {t.id for t in trials}
    assert [t.id for t in sample] == [t.id for t in expand(SweepSpec(base=dict(TINY_BASE), grids=spec.grids,
                                                                     seeds=2, random=3))]
    assert len(expand(SweepSpec(base=dict(TINY_BASE), grids=spec.grids, random=100))) == 4
    with pytest.raises(LipnetArgument, match="nothing to sweep"):
        expand(SweepSpec(base=dict(TINY_BASE)))
    with pytest.raises(LipnetArgument, match="seeds are given twice"):
        expand(SweepSpec(grids=[{"seed": [0, 1]}], seeds=2))
    with pytest.raises(LipnetArgument, match="both fixed"):
        expand(SweepSpec(base={"steps": 3}, grids=[{"steps": [3, 4]}]))
    # Every trial is validated before anything runs: the optimizer name, the plant.
    with pytest.raises(LipnetArgument, match=r"trial optimizer=nope: --optimizer must be one of"):
        expand(SweepSpec(base=dict(TINY_BASE), grids=[{"optimizer": ["agd", "nope"]}]))
    with pytest.raises(ValueError, match="no_such_plant"):
        expand(SweepSpec(grids=[{"plant": ["double_integrator", "no_such_plant"]}]))


def test_sweep_file_with_set_and_several_grids(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('seeds = 2\n[set]\nplant = "double_integrator"\nhidden = [4, 4]\nsteps = 3\n'
                    '[[grid]]\noptimizer = ["agd", "sphere-mm"]\n'
                    '[[grid]]\noptimizer = ["adam"]\nlr = [1e-3, 1e-2]\n')
    spec = SweepSpec.from_toml(path)
    assert spec.base["controller.hidden"] == [4, 4] and spec.seeds == 2
    trials = expand(spec)
    assert len(trials) == 2 * 2 + 2 * 2
    adam = [t for t in trials if t.config["train"]["optimizer"] == "adam"]
    assert {t.config["train"]["lr"] for t in adam} == {1e-3, 1e-2}
    assert all("lr-" in t.id for t in adam) and not any("lr-" in t.id for t in trials if t not in adam)
    (tmp_path / "bad.toml").write_text('[grid]\noptimizer = ["agd"]\n[sweeep]\n')
    with pytest.raises(LipnetArgument, match=r"unknown key\(s\) \['sweeep'\]"):
        SweepSpec.from_toml(tmp_path / "bad.toml")
    (tmp_path / "empty.toml").write_text("[grid]\noptimizer = []\n")
    with pytest.raises(LipnetArgument, match="empty value list"):
        SweepSpec.from_toml(tmp_path / "empty.toml")


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("argv, message", [
    (["--grid", "optimiser=agd,adam"], "unknown configuration key 'optimiser'"),
    (["--grid", "optimizer="], "empty value list"),
    (["--grid", "lr=fast"], "takes a number"),
    (["--grid", "optimizer=agd,nope"], "--optimizer must be one of"),
    ([], "nothing to sweep"),
    (["--grid", "seed=0,1", "--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["--grid", "seed=0,1", "--seeds", "0"], "--seeds must be"),
    (["--grid", "seed=0,1", "--roa"], "add --certify"),
    (["--grid", "seed=0,1", "--backend", "local", "--address", "127.0.0.1:6379"], "needs the Ray backend"),
])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "sweep"
    assert main(["sweep", *argv, *TINY, "--out", str(out), "--backend", "local", "--no-progress"]
                if "--backend" not in argv else ["sweep", *argv, *TINY, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_dry_run_lists_the_trials_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--grid", "optimizer=agd,sphere-mm", "--seeds", "2", *TINY, "--out", str(out),
                 "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "4 trials (dry run: nothing written)"
    assert [line.rsplit("-", 1)[0] for line in lines[:4]] == [
        "optimizer-agd__seed-0", "optimizer-agd__seed-1", "optimizer-sphere-mm__seed-0", "optimizer-sphere-mm__seed-1"]
    assert not out.exists()


def test_out_that_is_not_a_sweep_folder_is_refused_untouched(tmp_path, capsys):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    run = tmp_path / "run"
    loop.train(loop.RunConfig.from_dict({"plant": "double_integrator", "controller": {"hidden": [4]},
                                         "train": {"steps": 1, "batch": 8, "eval_batch": 8}}),
               run, progress=False, log=lambda *a: None)
    for out, what in ((other, "not a lipnet sweep folder"), (run, "a lipnet run folder")):
        before = sorted(p.name for p in out.iterdir())
        assert main(["sweep", "--grid", "seed=0,1", *TINY, "--out", str(out), "--backend", "local"]) == 2
        err = capsys.readouterr().err
        assert what in err and "choose a new or empty folder" in err
        assert sorted(p.name for p in out.iterdir()) == before
    assert (other / "notes.txt").read_text() == "keep me"


def test_unreachable_address_fails_before_anything_starts(tmp_path, capsys):
    pytest.importorskip("ray")
    out = tmp_path / "sweep"
    port = _free_port()
    t0 = time.perf_counter()
    assert main(["sweep", "--grid", "seed=0,1", *TINY, "--out", str(out), "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in err and "ray start --head" in err
    assert time.perf_counter() - t0 < 30 and not out.exists()
    assert main(["sweep", "--grid", "seed=0,1", *TINY, "--out", str(out), "--address", "nohost"]) == 2
    assert "--address must be HOST:PORT" in capsys.readouterr().err


def test_ray_missing_names_the_extra(tmp_path, capsys, no_ray, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "sweep"
    assert main(["sweep", "--grid", "seed=0,1", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[sweep]"' in err and "--backend local" in err and RAY_MISSING in err
    assert not out.exists()


# ------------------------------------------------------------------------------- running, locally and on Ray
def test_local_sweep_writes_run_folders_summary_and_skips_finished(tmp_path, capsys, no_ray):
    out = tmp_path / "sweep"
    argv = ["sweep", "--grid", "seed=0,1", "--grid", "optimizer=sphere-mm", *TINY, "--out", str(out),
            "--backend", "local", "--no-progress"]
    assert main(argv) == 0  # no Ray needed for --backend local
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert [r["seed"] for r in rows] == ["0", "1"] and {r["plant"] for r in rows} == {"double_integrator"}
    for r in rows:
        run = out / r["trial"]
        assert r["trial"].startswith(f"seed-{r['seed']}__optimizer-sphere-mm-")
        for name in (".lipnet-run", "config.toml", "controller.pt", "metrics.csv", "report.md", "summary.json"):
            assert (run / name).is_file(), name
        summary = json.loads((run / "summary.json").read_text())
        assert float(r["cost_vs_lqr_optimum"]) == pytest.approx(summary["evaluation"]["cost_ratio_to_lqr_optimum"])
        assert float(r["cost_vs_saturated_lqr"]) == pytest.approx(summary["evaluation"]["cost_ratio_to_lqr_policy"])
        assert float(r["lipschitz_bound"]) == pytest.approx(summary["lipschitz_bound_by_construction"])
        assert 0 <= float(r["success_rate"]) <= 1 and r["threads"] == "1" and r["error"] == ""
        assert "certified_bound" not in r
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stamps = {r["trial"]: (out / r["trial"] / "controller.pt").stat().st_mtime_ns for r in rows}
    capsys.readouterr()
    # The same command again: nothing is retrained; adding a seed runs only the new trial.
    assert main(argv) == 0
    assert "2 finished before" in capsys.readouterr().out
    argv[2] = "seed=0,1,2"
    assert main(argv) == 0
    assert "2 finished before" in capsys.readouterr().out
    assert {r["trial"]: (out / r["trial"] / "controller.pt").stat().st_mtime_ns for r in _rows(out)[:2]} == stamps
    assert [r["status"] for r in _rows(out)] == ["done"] * 3


def test_certify_adds_the_certified_bound_and_certifies_finished_trials(tmp_path, no_ray):
    out = tmp_path / "sweep"
    argv = ["sweep", "--grid", "seed=0", *TINY, "--out", str(out), "--backend", "local", "--no-progress"]
    assert main(argv) == 0
    calls = []
    original = loop.train

    def spy(*a, **kw):
        calls.append(kw)
        return original(*a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "train", spy)
        assert main([*argv, "--certify"]) == 0  # trained before: only certified now
    assert calls == []
    (row,) = _rows(out)
    cert = json.loads((out / row["trial"] / "certificate.json").read_text())
    assert float(row["certified_bound"]) == pytest.approx(cert["tightest_upper"]["value"])
    assert float(row["certified_bound"]) <= float(row["lipschitz_bound"]) * (1 + 1e-6)
    assert row["closed_loop_certified"] in ("true", "false") and row["certified_method"]
    assert cert["closed_loop"].get("region") is None  # no region of attraction unless --roa


def test_failed_trial_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys, no_ray):
    original = loop.train

    def flaky(cfg, out, **kw):
        if cfg.seed == 1:
            raise RuntimeError("boom in seed 1")
        return original(cfg, out, **kw)

    monkeypatch.setattr(loop, "train", flaky)
    out = tmp_path / "sweep"
    argv = ["sweep", "--grid", "seed=0,1,2", *TINY, "--out", str(out), "--backend", "local", "--no-progress"]
    assert main(argv) == 1  # a failed trial: exit 1, its error in the summary
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["done", "failed", "done"]
    assert rows[1]["error"] == "RuntimeError: boom in seed 1" and rows[1]["cost_vs_lqr_optimum"] == ""
    assert "failed: RuntimeError: boom in seed 1" in capsys.readouterr().out
    monkeypatch.setattr(loop, "train", original)
    assert main(argv) == 0  # re-run: the failed trial is retried, the others skipped
    assert [r["status"] for r in _rows(out)] == ["done"] * 3 and _rows(out)[1]["error"] == ""


def test_ctrl_c_keeps_finished_trials_and_the_rerun_resumes_the_killed_one(tmp_path, monkeypatch, capsys, no_ray):
    original = loop.train
    calls = []

    def killed_in_seed_1(cfg, out, **kw):
        if cfg.seed == 1:
            original(cfg, out, **{**kw, "stop_after": 1})  # one checkpointed step, then the user presses Ctrl-C
            raise KeyboardInterrupt
        return original(cfg, out, **kw)

    monkeypatch.setattr(loop, "train", killed_in_seed_1)
    out = tmp_path / "sweep"
    argv = ["sweep", "--grid", "seed=0,1,2", *TINY, "--set", "checkpoint_every=1", "--out", str(out),
            "--backend", "local", "--no-progress"]
    assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["done", "interrupted", "pending"]
    first, killed = out / rows[0]["trial"], out / rows[1]["trial"]
    assert (first / "report.md").is_file() and (first / "controller.pt").is_file()
    assert trial_mode(first, certify=False) == "done"
    assert (killed / "train_state.pt").is_file() and not (killed / "report.md").exists()
    assert trial_mode(killed, certify=False) == "resume"
    stamp = (first / "controller.pt").stat().st_mtime_ns

    def spy(cfg, out_dir, **kw):
        calls.append((cfg.seed, kw["resume"]))
        return original(cfg, out_dir, **kw)

    monkeypatch.setattr(loop, "train", spy)
    assert main(argv) == 0
    assert calls == [(1, True), (2, False)]  # the finished trial is skipped, the killed one resumed
    assert (first / "controller.pt").stat().st_mtime_ns == stamp
    with (killed / "metrics.csv").open() as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3]
    assert [r["status"] for r in _rows(out)] == ["done"] * 3


def test_threads_follow_cpus_per_trial_and_a_process_pool_runs(tmp_path, monkeypatch, no_ray):
    original, seen = loop.train, []

    def spy(*a, **kw):
        seen.append(torch.get_num_threads())
        return original(*a, **kw)

    monkeypatch.setattr(loop, "train", spy)
    out = tmp_path / "sweep"
    result = run_sweep(SweepSpec(base=dict(TINY_BASE), grids=[{"seed": [0]}]), out, backend="local",
                       cpus_per_trial=2, progress=False, log=lambda *a: None)
    assert seen == [2]  # the trial trained with as many torch threads as CPUs it asked for
    assert result.rows[0]["threads"] == 2 and result.rows[0]["status"] == "done"
    assert torch.get_num_threads() == 1  # restored in this process
    monkeypatch.setattr(loop, "train", original)
    pooled = run_sweep(SweepSpec(base=dict(TINY_BASE), grids=[{"seed": [1, 2]}]), tmp_path / "pool",
                       backend="local", jobs=2, progress=False, log=lambda *a: None)
    assert [r["status"] for r in pooled.rows] == ["done", "done"]
    assert len({r["node"] for r in pooled.rows}) == 1
    # The same seed gives the same controller whichever process trained it.
    again = run_sweep(SweepSpec(base=dict(TINY_BASE), grids=[{"seed": [1]}]), tmp_path / "again", backend="local",
                      progress=False, log=lambda *a: None)
    assert again.rows[0]["cost_vs_lqr_optimum"] == pytest.approx(pooled.rows[0]["cost_vs_lqr_optimum"])


def test_a_worker_without_the_sweep_folder_sends_the_run_back(tmp_path):
    (trial,) = expand(SweepSpec(base=dict(TINY_BASE), grids=[{"seed": [0]}]))
    run_dir = tmp_path / "sweep" / trial.id
    task = {"id": trial.id, "config": trial.config, "run_dir": str(run_dir), "token": "not-this-folder",
            "mode": "new", "certify": False, "threads": 1}
    row = run_trial(task)
    assert row["status"] == "done" and not run_dir.exists()  # nothing written where this worker cannot see
    files = row.pop("_files")
    assert {"controller.pt", "config.toml", "summary.json", "report.md", ".lipnet-run"} <= set(files)
    _store_files(run_dir, files)
    assert read_run(run_dir)["cost_vs_lqr_optimum"] == pytest.approx(row["cost_vs_lqr_optimum"])
    assert trial_mode(run_dir, certify=False) == "done"
    bad = run_trial({**task, "config": {**trial.config, "plant": "no_such_plant"}})
    assert bad["status"] == "failed" and "no_such_plant" in bad["error"] and "_files" not in bad


def test_ray_local_sweep_with_one_progress_bar(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "sweep"
    assert main(["sweep", "--grid", "seed=0,1", *TINY, "--out", str(out), "--cpus-per-trial", "1"]) == 0
    captured = capsys.readouterr()
    assert "on a local Ray" in captured.out
    assert "sweep:" in captured.err and "train:" not in captured.err  # one bar, for the sweep
    assert "done=2, failed=0, running=0" in captured.err
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["done", "done"] and all(r["threads"] == "1" for r in rows)
    local = run_sweep(SweepSpec(base=dict(TINY_BASE), grids=[{"seed": [0, 1]}]), tmp_path / "local",
                      backend="local", progress=False, log=lambda *a: None)
    assert [float(r["cost_vs_lqr_optimum"]) for r in rows] == pytest.approx(
        [r["cost_vs_lqr_optimum"] for r in local.rows])  # Ray changes where trials run, not what they give


# ------------------------------------------------------------------------------------- the optimizer benchmark
def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_optimizer_benchmark_records_tables_and_targets(tmp_path):
    bench = _benchmark("optimizers")

    class Args:
        random, wide, tasks, steps = 2, False, "", 300

    assert list(bench.tasks_of(Args)) == ["double_integrator", "dcmotor", "msd", "pvtol", "random-0", "random-1"]
    assert bench.base_config(Args) == {"train.steps": 300}
    Args.steps = 0
    assert bench.base_config(Args) == {}  # the default command
    run_dir = tmp_path / "t1"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("step,seconds,eval_cost_ratio\n25,1.0,1.5\n26,1.1,\n50,2.0,1.005\n")
    rec = bench.record({"trial": "t1", "status": "done", "cost_vs_lqr_optimum": "1.004", "seed": "3",
                        "wall_seconds": "4.0", "steps": "50"}, tmp_path, "di", "sphere-mm", wide=False)
    assert (rec["final"], rec["ttt_steps"], rec["ttt_s"], rec["diverged"], rec["seed"]) == (1.004, 50, 2.0, False, 3)
    bad = bench.record({"trial": "none", "status": "failed", "error": "boom"}, tmp_path, "di", "dog", wide=False)
    assert bad["diverged"] and bad["final"] == float("inf") and bad["error"] == "boom"
    # a run that ended its rollout phase on undone steps returned its validated best: finite, yet a divergence
    (run_dir / "summary.json").write_text(json.dumps({"stopped": "diverged: the last 10 steps were all undone"}))
    rescued = bench.record({"trial": "t1", "status": "done", "cost_vs_saturated_lqr": "0.9", "seed": "3"}, tmp_path,
                           "bb", "adam", wide=True)
    assert rescued["final"] == 0.9 and rescued["diverged"]

    def run(opt, seed, final, wall=1.0, success=1.0):
        return {"task": "di", "optimizer": opt, "seed": seed, "final": final, "wall_s": wall, "steps": 100,
                "success": success,
                "ttt_steps": None, "ttt_s": None, "diverged": final > 10, "lr": 0.01 if opt == bench.TUNED else 0.0}

    runs = [run("sphere-mm", 0, 1.001), run("sphere-mm", 1, 1.02, success=0.5), run("prodigy", 0, 1.002),
            run("prodigy", 1, 1.01),
            run(bench.TUNED, 0, 1.0005), run(bench.TUNED, 1, 1.0)]
    table = bench.table_of(runs)
    assert [(t["optimizer"], t["median_final"], t["worst_final"]) for t in table] == [
        ("sphere-mm", pytest.approx(1.0105), 1.02), ("prodigy", pytest.approx(1.006), 1.01),
        (bench.TUNED, pytest.approx(1.00025), 1.0005)]
    assert (table[0]["median_success"], table[0]["worst_success"]) == (0.75, 0.5)
    targets = bench.targets_of(runs, [{"wall_s": 5.0, "trials": []}], ["di"])
    assert targets["ahead_per_peer"]["prodigy"] == (1, 2) and targets["ahead_of_every_peer"] == (1, 2)
    assert targets["within_1pct_of_tuned_adam"] == (1, 2)
    assert targets["wall_s_default_vs_tuned_adam"] == (2.0, 7.0)
    assert targets["default_within_1.01_every_linear_run"] == (1, 2)
    tasks = {"di": "double_integrator", "dcmotor": "dcmotor"}
    assert bench.adam_lrs("di=0.07,dcmotor=1.5e-3", tasks) == {"di": 0.07, "dcmotor": 0.0015}
    assert bench.adam_lrs("", tasks) == {}
    for bad in ("di", "msd=0.1", "di=-1", "di=fast"):
        with pytest.raises(SystemExit, match="--adam-lr"):
            bench.adam_lrs(bad, tasks)


def test_optimizer_benchmark_runs_tuned_adam_alone(monkeypatch, tmp_path):
    """`--optimizers ''`: no run at defaults, only Adam at its (here earlier-tuned) lr on every seed."""
    bench = _benchmark("optimizers")
    grids = []

    def sweep(base, gs, out, args):
        grids.extend(gs)
        return [{"trial": f"t{s}", "status": "done", "cost_vs_lqr_optimum": "1.001", "seed": str(s),
                 "plant": gs[0]["plant"][0]} for s in gs[0]["seed"]]

    monkeypatch.setattr(bench, "_sweep", sweep)

    class Args:  # seeds 1 and 2 only: the rest of a protocol whose seed 0 ran earlier (--first-seed)
        optimizers, seeds, first_seed, random, wide, trials, steps = "", 3, 1, 0, False, 0, 0
        tasks, adam_lr = "double_integrator", "double_integrator=0.07"

    runs, tuning = bench.run_all(Args, tmp_path)
    assert grids == [{"plant": ["double_integrator"], "train.optimizer": ["adam"], "train.lr": [0.07], "seed": [1, 2]}]
    assert [(r["optimizer"], r["seed"]) for r in runs] == [(bench.TUNED, 1), (bench.TUNED, 2)]
    assert tuning[0]["reused"]


def test_optimizer_benchmark_merges_results_of_separate_runs(monkeypatch, tmp_path, capsys):
    """Parts of the protocol run in separate processes are reported as one; a later part's run replaces an earlier's."""
    bench = _benchmark("optimizers")
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")

    def run(opt, seed, final, wall=10.0):
        return {"task": "vanderpol-wide", "optimizer": opt, "seed": seed, "final": final, "wall_s": wall,
                "steps": 1600, "success": 1.0, "ttt_steps": None, "ttt_s": None, "diverged": False,
                "lr": 1e-3 if opt == bench.TUNED else 0.0}

    tasks = {"vanderpol-wide": "vanderpol?task=wide"}
    first = {"tasks": tasks, "tuning": [], "runs": [run("sphere-mm", 0, 0.89), run("prodigy", 0, 0.80)]}
    second = {"tasks": tasks, "runs": [run("prodigy", 0, 0.90), run(bench.TUNED, 0, 0.895)],
              "tuning": [{"task": "vanderpol-wide", "lr": 1e-3, "trials": [{}] * 20, "wall_s": 5.0}]}
    paths = []
    for k, data in enumerate((first, second)):
        paths.append(str(tmp_path / f"part{k}.json"))
        Path(paths[-1]).write_text(json.dumps(data))
    bench.merge(paths, "both")
    out = capsys.readouterr().out
    assert "ahead of every peer" in out and "1/1 = 100%" in out  # against the replacing run (0.90), not 0.80
    assert "within 1 % of 20-trial-tuned Adam on 1/1" in out and "10 s vs 15 s" in out
    merged = json.loads((tmp_path / "results" / "optimizers_both.json").read_text())
    assert len(merged["runs"]) == 3 and merged["targets"]["ahead_of_every_peer"] == [1, 1]
    for bad in ("{}", '{"tasks": {}, "tuning": [], "runs": [{"final": 1.0}]}', "[1]"):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(SystemExit, match="not a results file"):
            bench.merge([str(tmp_path / "bad.json")])


def test_optimizer_benchmark_rejects_bad_counts_before_running(monkeypatch, capsys):
    bench = _benchmark("optimizers")
    monkeypatch.setattr(bench, "run_all", lambda *a: pytest.fail("ran with a bad count"))
    for argv, says in ((["--seeds", "0"], "--seeds must be ≥ 1"), (["--trials", "-1"], "--seeds must be ≥ 1"),
                       (["--optimizers", "", "--trials", "0"], "nothing to run"),
                       (["--seeds", "3", "--first-seed", "3"], "--first-seed must be in 0..2")):
        monkeypatch.setattr(sys, "argv", ["optimizers.py", *argv])
        with pytest.raises(SystemExit) as exc:
            bench.main()
        assert exc.value.code == 2 and says in capsys.readouterr().err


# --------------------------------------------------------------------------------------- a multi-node cluster
@pytest.mark.slow
def test_multi_node_cluster(tmp_path):
    """A Ray head and two worker nodes as separate processes, the sweep submitted with --address."""
    pytest.importorskip("ray")
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    assert ray_cli, "the ray command (pip install -e '.[sweep]')"
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    # Every process of the cluster authenticates with this token; the nodes advertise a loopback address (Ray
    # rewrites 127.0.0.1 itself to the machine's network address, not the rest of 127/8).
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    ip, port = "127.0.0.2", _free_port()
    address = f"{ip}:{port}"
    common = ["--node-ip-address", ip, "--num-cpus", "1", "--disable-usage-stats", "--object-store-memory",
              "100000000"]
    out = tmp_path / "sweep"
    try:
        subprocess.run([ray_cli, "start", "--head", "--port", str(port), "--include-dashboard=false", *common],
                       env=env, check=True, capture_output=True, timeout=120)
        for _ in range(2):
            subprocess.run([ray_cli, "start", "--address", address, *common], env=env, check=True,
                           capture_output=True, timeout=120)
        done = subprocess.run([sys.executable, "-m", "lipnet.cli", "sweep", "--grid", "seed=0,1,2,3", *TINY,
                               "--out", str(out), "--address", address, "--no-progress"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"on the Ray cluster at {address} (3 nodes, 3 CPUs, 1 per trial)" in done.stdout
        rows = _rows(out)
        assert len(rows) == 4 and [r["status"] for r in rows] == ["done"] * 4
        assert len({r["node"] for r in rows}) >= 2  # three at a time on three 1-CPU nodes
        for r in rows:
            assert (out / r["trial"] / "report.md").is_file()
    finally:
        with contextlib.suppress(Exception):
            subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
