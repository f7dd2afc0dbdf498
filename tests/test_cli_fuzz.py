"""The CLI under generated option values: every invocation ends in exit 0 (or 1 where a command documents it) or
exit 2 with a one-line error, never a traceback, never an internal error, never a deleted file outside a run folder.

The fast suite runs a few dozen invocations per command; the slow suite (`-m slow`) runs 2,000 and more.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipnet.cli import main

FAST_EXAMPLES, SLOW_EXAMPLES = 20, 700
FAST, SLOW = (settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
              for n in (FAST_EXAMPLES, SLOW_EXAMPLES))

# Values that break naive parsing: negatives, zero, huge, non-finite, garbage text, empty.
_ints = st.one_of(st.integers(-3, 3), st.sampled_from([-(2**70), 2**64, 10**9, 1000]))
_floats = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e308", "1e-320", "abc", ""]),
                    st.floats(-1e3, 1e3, allow_nan=False).map(repr))
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_plants = st.one_of(
    st.sampled_from(["double_integrator?horizon=5", "dcmotor?horizon=5", "pendulum?horizon=4&substeps=1",
                     "double_integrator?horizon=100000000", "pendulum?substeps=1000000000", "nope", "",
                     "double_integrator?dt=0", "double_integrator?dt=-1", "pendulum?mass=-1&horizon=3",
                     "double_integrator?horizon=3&q=1,2,3", "x.npz", "missing.py:make", "os:getcwd",
                     "double_integrator?horizon=2.5", "double_integrator?horizon=nan"]),
    _text)


def _opt(flag: str, values) -> st.SearchStrategy:
    return st.one_of(st.just([]), values.map(lambda v: [flag, str(v)]))


_train_args = st.tuples(
    # --steps always given: without it a valid spec trains for the default 200-1700 steps, minutes per example.
    _opt("--plant", _plants), st.one_of(st.integers(1, 2), _ints).map(lambda v: ["--steps", str(v)]),
    _opt("--batch", st.one_of(st.integers(1, 8), _ints)), _opt("--hidden", st.one_of(
        st.sampled_from(["4", "4,4", "0", ",", "-4", "4,,4", "a", "", "70000", " 4 "]), _text)),
    _opt("--lipschitz", _floats), _opt("--seed", _ints), _opt("--lr", _floats), _opt("--threads", _ints),
    _opt("--optimizer", st.sampled_from(["sphere-mm", "agd", "adam", "sgd", "manifold-adam", "bogus", ""])),
    _opt("--activation", st.sampled_from(["relu", "tanh", "groupsort", "x"])),
    _opt("--layer", st.sampled_from(["frobenius", "spectral", "orthogonal", "plain", "x"])),
    st.sampled_from([[], ["--overwrite"], ["--resume"], ["--overwrite", "--resume"]]),
    st.sampled_from(["run", ".", "..", "sentinel", "sentinel/photos", "file.txt", "new/deep/run"]),
).map(lambda parts: [a for part in parts[:-2] for a in part] + parts[-2] + ["--out", parts[-1]])


@contextlib.contextmanager
def _sandbox(base: Path):
    """A working directory with files that must survive every invocation (one trained run in it)."""
    work = base / "cwd"
    if work.exists():
        shutil.rmtree(work)
    (work / "sentinel" / "photos").mkdir(parents=True)
    (work / "sentinel" / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    (work / "file.txt").write_text("mine")
    (base / "outside.txt").write_text("outside")
    shutil.copytree(base / "template", work / "run")
    yield work


def _files(path: Path, skip: str | None = None) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()
            and not (skip and str(p.relative_to(path)).startswith(skip))}


def invoke(argv: list[str], allowed=(0, 2)) -> tuple[int, str]:
    """Run the CLI in-process; assert the contract on its exit code and stderr."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            rc = exc.code
    text = err.getvalue()
    assert "Traceback" not in text, (argv, text)
    assert "internal error" not in text, (argv, text)
    assert rc in allowed, (argv, rc, text)
    if rc == 2:
        last = text.strip().splitlines()[-1]
        assert "error" in last, (argv, text)
    return rc, text


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    rc, _ = invoke(["train", "--plant", "double_integrator?horizon=5", "--steps", "1", "--hidden", "4", "--batch", "4",
                    "--no-progress", "--out", str(base / "template")])
    assert rc == 0
    rc, _ = invoke(["export", str(base / "template"), "--out", str(base / "template" / "c.onnx"), "--samples", "20"])
    assert rc == 0
    return base


def _check_train(base: Path, monkeypatch, argv: list[str]):
    with _sandbox(base) as work:
        monkeypatch.chdir(work)
        before = _files(work, skip="run")
        invoke(["train", *argv, "--no-progress"])
        after = _files(work)
        # nothing outside a run folder lost; the cwd's own files and the sentinel tree intact
        assert before - after <= {f for f in before if f.startswith(("new/", "run/"))}, (argv, before - after)
        assert (work / "sentinel" / "photos" / "a.jpg").read_bytes() == b"\xff\xd8"
        assert (work / "file.txt").read_text() == "mine"
        assert (base / "outside.txt").read_text() == "outside"


@FAST
@given(argv=_train_args)
def test_train_fuzz(base, monkeypatch, argv):
    _check_train(base, monkeypatch, argv)


@pytest.mark.slow
@SLOW
@given(argv=_train_args)
def test_train_fuzz_many(base, monkeypatch, argv):
    _check_train(base, monkeypatch, argv)


_certify_args = st.tuples(
    st.lists(st.sampled_from(["construction", "spectral", "eclipse-fast", "lipsdp-schur", "path-norm", "bogus",
                              "all"]), max_size=2).map(lambda ms: [a for m in ms for a in ("--method", m)]),
    _opt("--require", _floats), _opt("--plant", _plants), _opt("--sdp-max-neurons", _ints),
    st.sampled_from([[], ["--no-closed-loop"], ["--json"], ["--iqc", "off"]]),
    st.sampled_from(["run", "missing", "file.txt", "sentinel", "."]),
).map(lambda p: [p[-1], *p[0], *p[1], *p[2], *p[3], *p[4]])

_export_args = st.tuples(
    _opt("--opset", st.one_of(st.sampled_from([18, 17, 99, 19]), _ints)),
    _opt("--samples", st.one_of(st.integers(1, 50), _ints.filter(lambda v: v < 10**6))),
    _opt("--plant", _plants), st.sampled_from([[], ["--fp16"], ["--json"]]),
    st.sampled_from(["c.onnx", "sentinel", "file.txt/c.onnx", "new/dir/c.onnx", "sentinel/photos/a.jpg", ""]),
    st.sampled_from(["run", "missing", "sentinel", "run/controller.pt"]),
).map(lambda p: [p[-1], "--out", p[-2], *p[0], *p[1], *p[2], *p[3]])


def _check_other(base: Path, monkeypatch, command: str, argv: list[str], allowed):
    with _sandbox(base) as work:
        monkeypatch.chdir(work)
        jpg = (work / "sentinel" / "photos" / "a.jpg").read_bytes()
        invoke([command, *argv], allowed=allowed)
        assert (work / "sentinel" / "photos" / "a.jpg").read_bytes() == jpg
        assert (work / "file.txt").read_text() == "mine"
        assert (work / "run" / "controller.pt").exists()


@FAST
@given(argv=_certify_args)
def test_certify_fuzz(base, monkeypatch, argv):
    _check_other(base, monkeypatch, "certify", argv, allowed=(0, 1, 2))


@FAST
@given(argv=_export_args)
def test_export_fuzz(base, monkeypatch, argv):
    _check_other(base, monkeypatch, "export", argv, allowed=(0, 2))


@pytest.mark.slow
@SLOW
@given(argv=st.one_of(_certify_args.map(lambda a: ["certify", *a]), _export_args.map(lambda a: ["export", *a])))
def test_certify_export_fuzz_many(base, monkeypatch, argv):
    _check_other(base, monkeypatch, argv[0], argv[1:], allowed=(0, 1, 2))


_vectors = st.one_of(st.sampled_from(["0,0", "0.1,0", "1e308,0", "nan,0", "0", "0,0,0", "a,b", "", ","]), _text)
_simulate_args = st.tuples(
    st.sampled_from(["run", "run/c.onnx", "missing", "file.txt", "sentinel/photos/a.jpg"]),
    _opt("--plant", _plants), _opt("--x0", _vectors), _opt("--duration", _floats), _opt("--seed", _ints),
    _opt("--provider", st.sampled_from(["cpu", "cuda", "tensorrt"])),
    st.sampled_from([["--no-plots"], ["--no-plots", "--json"], []]),
    _opt("--out", st.sampled_from(["sim", "sentinel", "file.txt", "run", "new/sim"])),
).map(lambda p: [p[0], *[a for part in p[1:] for a in part]])

_hil_args = st.tuples(
    _opt("--rate", _floats), _opt("--duration", _floats), _opt("--deadline-ms", _floats), _opt("--loss", _floats),
    _opt("--delay-ms", _floats), _opt("--x0", _vectors), _opt("--stall", _floats),
    _opt("--max-miss-ratio", _floats), _opt("--device", st.sampled_from(["127.0.0.1:9", "nohost:1", "x", ":"])),
).map(lambda p: ["run", "--plant", "double_integrator?horizon=5", "--out", "hil", "--connect-timeout", "0.2",
                 "--no-plots", *[a for part in p for a in part]])


@FAST
@given(argv=_simulate_args)
def test_simulate_fuzz(base, monkeypatch, argv):
    _check_other(base, monkeypatch, "simulate", argv, allowed=(0, 1, 2))


@FAST
@given(argv=_hil_args)
def test_hil_run_fuzz(base, monkeypatch, argv):
    _check_other(base, monkeypatch, "hil", argv, allowed=(1, 2))


@pytest.mark.slow
@SLOW
@given(argv=st.one_of(_simulate_args.map(lambda a: ["simulate", *a]), _hil_args.map(lambda a: ["hil", *a])))
def test_simulate_hil_fuzz_many(base, monkeypatch, argv):
    _check_other(base, monkeypatch, argv[0], argv[1:], allowed=(0, 1, 2))
