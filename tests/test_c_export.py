"""C export: generated source, three-way parity (torch, onnxruntime, compiled C), the non-finite contract, the
certificate in the header, integrity, the CLI, no compiler, refusals.

Every activation, saturation mode (tanh, clip, one-sided, none), periodic features and both C arithmetics appear in
the four cases below, each exported once per module (an export costs ~3 s: the ONNX twin plus the compile).
"""

import json
import math
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from toys import random_controller  # random weights whose outputs span the saturation

from export import c_export
from export.c_build import CBuildError, CModelError, compile_shared, find_compiler, load_c_policy
from export.c_export import export_c
from export.c_source import SUPPORTED_ACTIVATIONS, c_literal, c_string, read_info, source_digest
from export.errors import ExportError, ParityError
from export.parity import working_magnitude
from lipnet.certify.bounds import spectral_bound as spectral_product
from lipnet.cli import main
from lipnet.nn import Controller
from lipnet.nn.activations import ACTIVATIONS
from lipnet.train.checkpoint import save_controller

HAS_CC = find_compiler()[0] is not None
needs_cc = pytest.mark.skipif(not HAS_CC, reason="no C compiler here (cc, gcc, clang or $CC)")
SAMPLES = 1000

CASES = {
    # tanh saturation, input scaling, the cart-pole's evaluation box and angle feature, output anchored at x_eq
    "relu-tanh-cartpole": (dict(n_x=4, n_u=1, hidden=(32, 32), activation="relu", gains=3.0, u_low=-2.0,
                                u_high=2.0, saturation="tanh", state_offset=[0.1, 0.0, 0.0, -0.2],
                                state_scale=[1.0, 2.0, 0.5, 4.0], action_scale=2.0, action_offset=0.3,
                                periodic=[2], centered=True),
                           "cartpole", "float"),
    # hard clip with per-channel limits away from 0, a periodic state with a centre, double arithmetic
    "tanh-clip-quadrotor-double": (dict(n_x=6, n_u=2, hidden=(16, 16), activation="tanh", gains=2.5,
                                        u_low=[0.0, 0.0], u_high=[0.2646, 0.2646], saturation="clip",
                                        state_offset=[0.0, 0.0, 0.0, 0.0, 0.3, 0.0], action_scale=[0.2, 0.3],
                                        action_offset=0.13, periodic=[4]), "quadrotor2d", "double"),
    # no saturation (limits present but off), three hidden layers, no plant
    "groupsort-none": (dict(n_x=7, n_u=3, hidden=(16, 16, 16), activation="groupsort", gains=2.0, u_low=-1.0,
                            u_high=1.0, saturation="none", action_scale=[1.0, 2.0, 3.0]), None, "float"),
    # a one-sided limit (clipped under tanh saturation), the pendulum's box
    "relu-onesided-pendulum": (dict(n_x=2, n_u=1, hidden=(8,), activation="relu", u_low=[-0.5], saturation="tanh"),
                               "pendulum", "float"),
}


def _controller(seed: int = 0, **kwargs) -> Controller:
    return random_controller(seed, **kwargs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(case: str):
        if case not in cache:
            kwargs, plant, c_float = CASES[case]
            ctl = _controller(**kwargs)
            path = tmp_path_factory.mktemp(case) / "controller.c"
            report = export_c(ctl, path, c_float=c_float, plant=plant, dt=0.05, samples=SAMPLES)
            cache[case] = (ctl, path, report)
        return cache[case]
    return get


def _torch(ctl, x):
    with torch.no_grad():
        return ctl(torch.as_tensor(x)).numpy()


def test_every_controller_activation_is_supported():
    assert set(SUPPORTED_ACTIVATIONS) == set(ACTIVATIONS)


def test_literals_read_back_exactly_and_strings_are_escaped():
    rng = np.random.default_rng(0)
    for v in np.concatenate([rng.normal(size=200) * 10.0 ** rng.integers(-30, 30, 200), [0.0, -0.0, 1.0, 1e-45]]):
        assert np.float32(float(c_literal(v, "float")[:-1])) == np.float32(v)
        assert float(c_literal(v, "double")) == float(v)
        assert any(ch in c_literal(v, "float") for ch in ".e")  # a valid float literal, never "1f"
    assert c_string('a"b\\c??=d\u00e9') == '"a\\"b\\\\c\\?\\?=d\\303\\251"'


@needs_cc
@pytest.mark.parametrize("case", CASES)
def test_three_way_parity_passes_at_export(exported, case):
    ctl, path, report = exported(case)
    p = report.parity
    assert p["status"] == "passed" and p["passed"] is True and p["compiled"] is True
    assert p["worst"] <= 1e-5 and p["tolerance"] == 1e-5
    regions = p["regions"]
    assert {"training", "far", "edge"} <= set(regions) and regions["training"]["n"] == SAMPLES
    assert ("saturation" in regions) == (ctl.saturation != "none")
    for r in regions.values():
        for pair in ("onnx_vs_torch", "c_vs_torch", "c_vs_onnx"):
            assert r[pair]["max_scaled"] <= 1e-5, (pair, r)
        assert r["c_nonzero_codes"] == 0
    assert p["nonfinite"]["passed"] and p["nonfinite"]["cases"] == 3 * ctl.n_x + 2
    assert p["compiler"]["warnings"] == ""  # -Wall -Wextra -pedantic: the generated code is warning-free
    assert path.is_file() and path.with_suffix(".h").is_file()
    assert sorted(q.name for q in path.parent.iterdir()) == ["controller.c", "controller.h"]  # no temporaries


@needs_cc
@pytest.mark.parametrize("case", CASES)
def test_written_file_compiles_again_and_agrees_with_torch_on_fresh_states(exported, case):
    ctl, path, report = exported(case)
    policy = load_c_policy(path)  # checks the sha256, compiles the file as written
    assert policy.integrity == "verified" and (policy.n_x, policy.n_u) == (ctl.n_x, ctl.n_u)
    rng = np.random.default_rng(11)
    centre, half = np.asarray(report.parity["box"]["centre"]), np.asarray(report.parity["box"]["half_width"])
    x = (centre + half * rng.uniform(-30, 30, (3000, ctl.n_x))).astype(np.float32)
    u, codes = policy.run_batch_codes(x)
    ref = _torch(ctl, x)
    scale = np.maximum(1.0, working_magnitude(ctl, x))[:, None]
    assert (codes == 0).all() and u.dtype == np.float32
    assert (np.abs(u - ref) / scale).max() <= 1e-5
    one = np.stack([policy(s) for s in x[:50]])
    np.testing.assert_array_equal(one, u[:50])  # the single-call path is the batch path
    lo, hi = ctl.limits()
    if ctl.saturation != "none":
        assert (u >= lo.astype(np.float32)).all() and (u <= hi.astype(np.float32)).all()
        if ctl.saturation == "clip":
            assert (u == lo.astype(np.float32)).any() and (u == hi.astype(np.float32)).any()
    else:
        assert (u < lo).any() or (u > hi).any()  # the limits really are off


@needs_cc
def test_nonfinite_state_gives_the_code_and_the_equilibrium_fallback(exported):
    ctl, path, report = exported("tanh-clip-quadrotor-double")
    policy = load_c_policy(path)
    u_eq = np.array([0.1323, 0.1323], np.float32)  # quadrotor2d's hover thrust, inside the limits
    assert report.fallback == pytest.approx(u_eq.tolist())
    for bad in (np.nan, np.inf, -np.inf):
        for i in range(ctl.n_x):
            x = np.zeros(ctl.n_x, np.float32)
            x[i] = bad
            code, u = policy.call(x)
            assert code == -1 and np.array_equal(u, u_eq)
    code, u = policy.call(np.zeros(ctl.n_x, np.float32))
    assert code == 0 and not np.array_equal(u, u_eq)
    huge = np.full(ctl.n_x, 3e38, np.float32)
    code, u = policy.call(huge)
    assert np.isfinite(u).all() and (code == 0 or (code == -2 and np.array_equal(u, u_eq)))


@needs_cc
def test_header_and_source_carry_the_certificate_and_the_weights_the_bound_is_for(exported):
    ctl, path, report = exported("relu-tanh-cartpole")
    text, header = path.read_text(), path.with_suffix(".h").read_text()
    defines = dict(re.findall(r"^#define (LIPNET_\w+) (.+)$", header, re.M))
    assert defines["LIPNET_N_X"] == "4" and defines["LIPNET_N_U"] == "1" and defines["LIPNET_PLANT"] == '"cartpole"'
    assert float(defines["LIPNET_DT"]) == 0.05 and defines["LIPNET_HIDDEN"] == '"32,32"'
    assert float(defines["LIPNET_LIPSCHITZ_UPPER"]) == report.lipschitz_upper
    assert defines["LIPNET_NETWORK_HASH"] == f'"{report.network_hash}"' and report.network_hash.startswith("sha256:")
    assert defines["LIPNET_ERR_NONFINITE_STATE"] == "(-1)" and defines["LIPNET_CERTIFICATE_STATUS"] == '"missing"'
    assert "int lipnet_policy(const float *state, float *action);" in header
    code = text.split("*/", 1)[1]  # after the comment block (which says "no malloc")
    assert "malloc" not in code and "stdlib.h" not in code and "typedef float lipnet_real_t;" in code
    assert header.split("#ifndef LIPNET_CONTROLLER_H")[1] in text  # the .c holds the same interface
    info = read_info(text)
    assert info["n_x"] == 4 and info["plant"] == "cartpole" and info["lipschitz_upper"] == report.lipschitz_upper
    # the weights as written: the folded weights rounded to float32, and the bound is sound for them
    written = []
    for l in range(3):
        body = re.search(rf"lipnet_w{l + 1}\[(\d+)\]\[(\d+)\] = \{{(.*?)\}};", text, re.S)
        vals = [float(v.rstrip("f")) for v in re.findall(r"-?[\d.]+(?:e[-+]?\d+)?f", body.group(3))]
        # the compiler reads each literal as the nearest float32
        w_t = np.array(vals).astype(np.float32).astype(np.float64).reshape(int(body.group(1)), int(body.group(2)))
        written.append(w_t.T)
    for w, (w_folded, _) in zip(written, ctl.folded_weights(), strict=True):
        np.testing.assert_array_equal(w, w_folded.astype(np.float32).astype(np.float64))
    assert report.lipschitz_upper <= spectral_product(written) * (1 + 1e-12)
    sound = [b["value"] for b in report.bounds if b["sound"]]
    assert report.lipschitz_upper == min(sound) and report.lipschitz_method == "lipsdp-schur"
    # a centered controller: the equilibrium state gets exactly its equilibrium action (to float32 rounding)
    u_eq = load_c_policy(path)(ctl.state_offset.numpy())
    assert ctl.centered and abs(float(u_eq[0]) - 0.3) < 1e-6


@needs_cc
def test_c_api_from_a_c_program_with_strict_flags(exported, tmp_path):
    _, path, report = exported("relu-onesided-pendulum")
    cc = find_compiler()[0]
    # the source alone, as a user compiles it: self-contained and warning-free under -Werror
    res = subprocess.run([*cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror", "-c", str(path),
                          "-o", str(tmp_path / "controller.o")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    main_c = tmp_path / "main.c"
    main_c.write_text('#include <math.h>\n#include <stdio.h>\n#include "controller.h"\n'
                      "int main(void) {\n"
                      "    float x[LIPNET_N_X] = {0.3f, -0.2f}, u[LIPNET_N_U];\n"
                      "    int rc = lipnet_policy(x, u);\n"
                      '    printf("%d %.9g\\n", rc, u[0]);\n'
                      "    x[1] = NAN;\n"
                      "    rc = lipnet_policy(x, u);\n"
                      '    printf("%d %.9g %d\\n", rc, u[0], LIPNET_ERR_NONFINITE_STATE);\n'
                      "    return 0;\n}\n")
    exe = tmp_path / "main"
    res = subprocess.run([*cc, "-std=c99", "-O2", "-Wall", "-Werror", f"-I{path.parent}", str(main_c),
                          str(tmp_path / "controller.o"), "-o", str(exe), "-lm"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split("\n")
    rc, u = out[0].split()
    assert rc == "0" and np.float32(u) == load_c_policy(path)(np.array([0.3, -0.2], np.float32))[0]
    assert out[1].split() == ["-1", "0", "-1"]  # the pendulum's equilibrium action, 0


@needs_cc
def test_a_modified_source_is_refused(exported, tmp_path, capsys):
    _, path, _ = exported("relu-onesided-pendulum")
    text = path.read_text()
    assert source_digest(text) in text.splitlines()[-1]
    tampered = tmp_path / "controller.c"
    # one weight's last digit changed: the code still compiles, the digest no longer matches
    head, weights = text.split("static const lipnet_real_t lipnet_w1", 1)
    m = re.search(r"(-?\d\.\d+)f", weights)
    digit = m.group(1)[-1]
    weights = weights.replace(m.group(0), m.group(1)[:-1] + str((int(digit) + 1) % 10) + "f", 1)
    tampered.write_text(head + "static const lipnet_real_t lipnet_w1" + weights)
    with pytest.raises(CModelError, match="does not match the sha256 recorded at export"):
        load_c_policy(tampered)
    assert main(["export", "--inspect", str(path)]) == 0
    assert "integrity: verified" in capsys.readouterr().out
    assert main(["export", "--inspect", str(tampered), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["integrity"] == "FAILED" and "re-export" in captured.err
    foreign = tmp_path / "foreign.c"
    foreign.write_text("int lipnet_policy(const float *s, float *a) { a[0] = s[0]; return 0; }\n")
    with pytest.raises(CModelError, match="not a controller written by"):
        load_c_policy(foreign)


def _run_dir(tmp_path, **kwargs):
    ctl = _controller(**{"n_x": 4, "n_u": 1, "hidden": (16, 16), "u_low": -1.0, "u_high": 1.0,
                         "action_scale": 3.0, **kwargs})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_controller(ctl, run_dir, plant="cartpole", dt=0.02)
    return ctl, run_dir


@needs_cc
def test_cli_export_c_from_a_certified_run(tmp_path, capsys):
    ctl, run_dir = _run_dir(tmp_path)
    certify = pytest.importorskip("lipnet.certify")
    cert = certify.certify_controller(ctl, methods=("spectral", "eclipse-fast"), lower=False, closed_loop=False)
    certify.write_certificate(cert, run_dir)
    on_disk = json.loads((run_dir / "certificate.json").read_text())
    out = tmp_path / "deploy" / "ctl.c"
    assert main(["export", str(run_dir), "--out", str(out), "--samples", "300", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "lipnet-c/1" and report["certificate_status"] == "verified"
    assert report["parity"]["status"] == "passed" and report["header"] == str(out.with_suffix(".h"))
    header = out.with_suffix(".h").read_text()
    assert f'#define LIPNET_NETWORK_HASH "{on_disk["network_hash"]}"' in header
    assert '#define LIPNET_CERTIFICATE_STATUS "verified"' in header and "#define LIPNET_DT 0.02" in header
    assert report["lipschitz_upper"] <= on_disk["tightest_upper"]["value"] * (1 + 1e-5)
    assert "ctl.h" in out.read_text().split("*/")[0]  # the comment names its own header
    # the human-readable summary, and a second export replaces the first (files lipnet wrote)
    assert main(["export", str(run_dir), "--out", str(out), "--samples", "300", "--format", "c"]) == 0
    text = capsys.readouterr().out
    assert "three-way parity" in text and "C-onnx" in text and "never NaN out: checked" in text
    assert sorted(p.name for p in out.parent.iterdir()) == ["ctl.c", "ctl.h"]


def test_cli_refuses_bad_format_combinations(tmp_path, capsys):
    _, run_dir = _run_dir(tmp_path)
    for argv, message in (
            (["--out", str(tmp_path / "x.onnx"), "--format", "c"], "writes a .c file"),
            (["--out", str(tmp_path / "x.onnx"), "--c-float", "double"], "--c-float"),
            (["--out", str(tmp_path / "x.c"), "--fp16"], "--fp16 is for ONNX"),
            (["--out", str(tmp_path / "x.c"), "--format", "onnx"], "use --format c")):
        assert main(["export", str(run_dir), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # an existing file lipnet did not write is never replaced
    mine = tmp_path / "controller.c"
    mine.write_text("int main(void) { return 0; }\n")
    assert main(["export", str(run_dir), "--out", str(mine)]) == 2
    assert "is not a file lipnet exported" in capsys.readouterr().err
    assert mine.read_text() == "int main(void) { return 0; }\n"


def test_unsupported_activation_is_refused_with_the_supported_list(tmp_path):
    ctl = _controller(n_x=2, n_u=1, hidden=(4,))
    ctl.activation = "softplus"  # not reachable from the constructor: what a future activation would look like
    with pytest.raises(ExportError, match=r"'softplus' is not supported by the C export; supported: relu, tanh, "
                                          "groupsort"):
        export_c(ctl, tmp_path / "controller.c")
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_refuses_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    if not HAS_CC:
        pytest.skip("no C compiler: parity cannot fail here")
    _, run_dir = _run_dir(tmp_path)
    out = tmp_path / "out" / "controller.c"
    real = c_export.c_network

    def broken(*args, **kwargs):  # a generator bug: one weight off by 0.5
        net = real(*args, **kwargs)
        net.weights[0][0, 0] += 0.5
        return net
    monkeypatch.setattr(c_export, "c_network", broken)
    assert main(["export", str(run_dir), "--out", str(out), "--samples", "300"]) == 1
    err = capsys.readouterr().err
    assert "parity failed" in err and "disagrees with torch / onnxruntime" in err and "was not written" in err
    assert list(out.parent.iterdir()) == []  # neither file, no temporary
    with pytest.raises(ParityError, match="c_vs_torch|training"):
        export_c(run_dir, out, samples=300)


def test_without_a_compiler_the_source_is_written_and_parity_says_why(tmp_path, monkeypatch, capsys):
    _, run_dir = _run_dir(tmp_path)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    out = tmp_path / "controller.c"
    assert main(["export", str(run_dir), "--out", str(out), "--samples", "300"]) == 0
    captured = capsys.readouterr()
    assert "not compiled here" in captured.out and "no-such-cc" in captured.out
    assert "C parity not compiled here" in captured.err and "is not an executable program" in captured.err
    assert out.is_file() and out.with_suffix(".h").is_file()
    report = export_c(run_dir, out, samples=300)
    assert report.parity["status"] == "not compiled here" and report.parity["passed"] is None
    assert not report.parity["compiled"] and report.parity["worst"] <= 1e-5  # onnxruntime vs torch still checked
    with pytest.raises(CBuildError, match="no-such-cc"):
        load_c_policy(out)
    with pytest.raises(CBuildError, match="no-such-cc"):
        compile_shared(out, tmp_path / "x.so")


@needs_cc
def test_double_arithmetic_source(exported):
    _, path, report = exported("tanh-clip-quadrotor-double")
    text = path.read_text()
    assert "typedef double lipnet_real_t;" in text and "sin(d)" in text and "tanh(" in text
    assert report.c_float == "double" and report.periodic == [4]
    # float64 weights, written with 17 significant digits
    assert re.search(r"lipnet_w1\[\d+\]\[\d+\] = \{\s*\{-?\d\.\d{10,}", text)
    assert math.isfinite(report.lipschitz_upper) and report.lipschitz_upper > 0


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("sha256sum") is None or not HAS_CC,
                    reason="needs make, sha256sum and a C compiler")
def test_makefile_checks_the_digest_before_building_the_agent(exported, tmp_path):
    _, path, _ = exported("relu-onesided-pendulum")
    from export.c_build import agent_source

    makefile = agent_source().parent / "Makefile"
    ok = subprocess.run(["make", "-s", "-f", str(makefile), f"CONTROLLER={path}", f"OUT={tmp_path / 'agent'}"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "agent").is_file()
    bad = tmp_path / "bad.c"
    bad.write_text(path.read_text().replace("lipnet_policy(const float *state, float *action)\n{",
                                            "lipnet_policy(const float *state, float *action)\n{ ;", 1))
    shutil.copy(path.with_suffix(".h"), tmp_path / "bad.h")
    res = subprocess.run(["make", "-s", "-f", str(makefile), f"CONTROLLER={bad}", f"OUT={tmp_path / 'agent2'}"],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "does not match the sha256" in res.stderr
    assert not (tmp_path / "agent2").exists()


@needs_cc
def test_metadata_strings_cannot_break_the_source(tmp_path):
    from export.c_build import CPolicy
    from export.c_source import c_network, generate

    ctl = _controller(n_x=2, n_u=1, hidden=(4,), activation="tanh", u_low=-1.0, u_high=1.0)
    weird = 'my*/plant"??/ \\\n#include <nope>\\'
    text, header = generate(c_network(ctl), {"plant": weird, "dt": None, "lipschitz_upper": 1.5,
                                             "lipschitz_method": "spectral-product", "certificate_reason": "a*/b??="})
    path = tmp_path / "controller.c"
    path.write_text(text)
    (tmp_path / "controller.h").write_text(header)
    build = compile_shared(path, tmp_path / "controller.so")
    assert build["warnings"] == ""  # no trigraph, no comment end, no line splice leaked into the code
    policy = CPolicy(tmp_path / "controller.so")
    assert policy.info["plant"] == weird == read_info(text)["plant"] and policy.info["dt"] is None
    assert policy.source_sha256 == source_digest(text)
    x = np.array([0.2, -0.4], np.float32)
    np.testing.assert_allclose(policy(x), _torch(ctl, x[None])[0], rtol=0, atol=1e-6)
