"""ONNX export: parity over activations × saturations × layer kinds × dimensions, metadata, bounds, bad inputs.

Each dynamo export costs about 1.5 s, so the combinations are covered by four controllers (every activation,
saturation mode, layer kind and several plant dimensions appear at least once), each exported once per module.
"""

import json
import math

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from toys import random_controller  # random weights whose outputs span the saturation

import export
from export import exporter as exporter_mod
from export.bounds import run_certificate
from export.errors import ExportError, ParityError
from export.folded import fold_controller, saturation_plan
from export.parity import working_magnitude
from export.reference import SUPPORTED_OPS, linear_weights
from lipnet.certify.bounds import spectral_bound as spectral_product
from lipnet.certify.certificate import FORMAT as CERTIFICATE_FORMAT
from lipnet.certify.network import network_hash
from lipnet.cli import main
from lipnet.exceptions import LipnetError
from lipnet.nn import Controller
from lipnet.train.checkpoint import save_controller
from plants import fileio

CASES = {
    # two-sided tanh saturation, input scaling, Frobenius layers
    "relu-tanh-frobenius-4x1": dict(n_x=4, n_u=1, hidden=(32, 32), activation="relu", layer="frobenius", gains=3.0,
                                    u_low=-2.0, u_high=2.0, saturation="tanh", state_offset=[0.1, 0.0, 0.0, -0.2],
                                    state_scale=[1.0, 2.0, 0.5, 4.0], action_scale=2.0),
    # hard clip with per-channel limits, spectral layers
    "tanh-clip-spectral-3x2": dict(n_x=3, n_u=2, hidden=(16, 16), activation="tanh", layer="spectral", gains=2.5,
                                   u_low=[-1.0, -3.0], u_high=[1.0, 0.5], saturation="clip", action_scale=[1.0, 3.0]),
    # no saturation (limits present but off), orthogonal layers, three hidden layers
    "groupsort-none-orthogonal-7x3": dict(n_x=7, n_u=3, hidden=(16, 16, 16), activation="groupsort",
                                          layer="orthogonal", gains=2.0, u_low=-1.0, u_high=1.0, saturation="none",
                                          action_scale=[1.0, 2.0, 3.0]),
    # one-sided limit (clipped under tanh saturation), plain layers, the pendulum's state box
    "relu-onesided-plain-2x1": dict(n_x=2, n_u=1, hidden=(8,), activation="relu", layer="plain", u_low=[-0.5],
                                    saturation="tanh"),
}
PLANTS = {"relu-onesided-plain-2x1": "pendulum"}
SAMPLES = 2000


def _controller(seed: int = 0, **kwargs) -> Controller:
    return random_controller(seed, **kwargs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(case: str):
        if case not in cache:
            ctl = _controller(**CASES[case])
            path = tmp_path_factory.mktemp(case) / "controller.onnx"
            report = export.export_controller(ctl, path, plant=PLANTS.get(case), dt=0.05, samples=SAMPLES)
            cache[case] = (ctl, path, report)
        return cache[case]
    return get


def _states(ctl, n=500, seed=3):
    rng = np.random.default_rng(seed)
    c = ctl.state_offset.double().numpy()
    h = 3 * ctl.state_scale.double().numpy()
    return {"training": (c + h * rng.uniform(-1, 1, (n, ctl.n_x))).astype(np.float32),
            "far": (c + 100 * h * rng.uniform(-1, 1, (n, ctl.n_x))).astype(np.float32)}


@torch.no_grad()
def _torch(ctl, x):
    return ctl(torch.as_tensor(x)).numpy()


@pytest.mark.parametrize("case", CASES)
def test_export_passes_parity_with_a_plain_graph(exported, case):
    ctl, path, report = exported(case)
    assert path.is_file() and report.path == str(path)
    assert report.parity["passed"] and report.parity["worst"] <= 1e-5
    regions = report.parity["regions"]
    assert regions["training"]["n"] == SAMPLES and regions["far"]["n"] == SAMPLES
    saturating = ctl.has_limits and ctl.saturation != "none"
    assert ("saturation" in regions) == saturating
    if saturating:
        assert regions["saturation"]["n"] > SAMPLES // 2
    assert set(report.ops) <= set(SUPPORTED_OPS) - {"Constant"}  # no norm, SVD or parametrisation left
    model = onnx.load(path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == ctl.n_x  # dynamic batch, fixed n_x
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    onnx.checker.check_model(model, full_check=True)
    if case in PLANTS:
        assert report.parity["box_source"].startswith("plant 'pendulum'")


@pytest.mark.parametrize("case", CASES)
def test_torch_onnxruntime_and_numpy_agree(exported, case):
    ctl, path, _ = exported(case)
    sess, ref = export.session(path), export.numpy_policy(path)
    for region, x in _states(ctl).items():
        u_torch = _torch(ctl, x)
        scale = np.maximum(1.0, working_magnitude(ctl, x))[:, None]
        for u in (sess.run_batch(x), ref.run_batch(x), np.stack([sess(s) for s in x[:100]])):
            assert u.dtype == np.float32
            err = np.abs(u - u_torch[: len(u)]) / scale[: len(u)]
            assert err.max() <= 1e-5, (region, err.max())
    # the folded torch module (what was exported) equals the parametrised controller
    x = _states(ctl)["training"]
    with torch.no_grad():
        folded = fold_controller(ctl)(torch.as_tensor(x)).numpy()
    scale = np.maximum(1.0, working_magnitude(ctl, x))[:, None]
    assert (np.abs(folded - _torch(ctl, x)) / scale).max() <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_saturated_outputs_stay_within_the_limits(exported, case):
    ctl, path, _ = exported(case)
    u = export.session(path).run_batch(_states(ctl, n=2000)["far"])
    lo, hi = ctl.limits()
    if ctl.saturation == "none":
        assert (u < lo).any() or (u > hi).any()  # the limits are really off
    else:
        assert (u >= lo.astype(np.float32)).all() and (u <= hi.astype(np.float32)).all()
        assert np.isclose(u, lo).any() or np.isclose(u, hi).any() or ctl.saturation == "tanh"


@pytest.mark.parametrize("case", CASES)
def test_metadata_round_trip(exported, case):
    ctl, path, report = exported(case)
    meta = export.read_metadata(path)
    for key in ("lipnet.version", "lipnet.plant", "lipnet.dt", "lipnet.lipschitz_upper", "lipnet.certificate",
                "lipnet.state_scale", "lipnet.action_limits"):
        assert key in meta, key
    assert meta["lipnet.plant"] == (PLANTS.get(case) or "") and meta["lipnet.dt"] == 0.05
    np.testing.assert_array_equal(meta["lipnet.state_scale"], ctl.state_scale.numpy())
    np.testing.assert_array_equal(meta["lipnet.state_offset"], ctl.state_offset.numpy())
    lo, hi = ctl.limits()
    assert meta["lipnet.action_limits"]["low"] == [float(v) if math.isfinite(v) else None for v in lo]
    assert meta["lipnet.action_limits"]["high"] == [float(v) if math.isfinite(v) else None for v in hi]
    assert meta["lipnet.lipschitz_upper"] == report.lipschitz_upper
    assert meta["lipnet.certificate"]["source"] == "lipnet export"
    assert meta["lipnet.certificate_status"]["status"] == "missing"
    assert meta["lipnet.parity"]["passed"] is True and meta["lipnet.precision"] == "float32"
    assert export.session(path).metadata == meta


@pytest.mark.parametrize("case", CASES)
def test_bound_is_recomputed_on_the_file_and_sound(exported, case):
    ctl, path, report = exported(case)
    weights = linear_weights(onnx.load(path))
    assert len(weights) == len(ctl.hidden) + 1
    sound = [b["value"] for b in report.bounds if b["sound"]]
    assert report.lipschitz_upper == min(sound) <= spectral_product(weights) * (1 + 1e-12)
    # ≥ the largest slope seen between nearby pairs of states (an empirical lower bound)
    rng = np.random.default_rng(5)
    x = _states(ctl, n=3000)["training"].astype(np.float64)
    y = x + 1e-2 * rng.normal(size=x.shape)
    sess = export.session(path)
    ux, uy = sess.run_batch(x), sess.run_batch(y)
    ratio = np.linalg.norm(ux - uy, axis=1) / np.linalg.norm((x - y).astype(np.float32), axis=1)
    assert ratio.max() <= report.lipschitz_upper * (1 + 1e-3)
    assert ratio.max() > 0.05 * report.lipschitz_upper  # the bound is not vacuous on these random nets


def test_fp16_export_has_its_own_tolerance_and_a_flagged_bound(exported, tmp_path):
    ctl, path32, report32 = exported("relu-tanh-frobenius-4x1")
    path = tmp_path / "fp16.onnx"
    report = export.export_controller(ctl, path, fp16=True, samples=SAMPLES)
    assert report.precision == "float16" and report.parity["tolerance"] == 1e-2 and report.parity["passed"]
    model = onnx.load(path)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 interface
    w_dtypes = {numpy_helper.to_array(i).dtype for i in model.graph.initializer if i.dims and len(i.dims) == 2}
    assert w_dtypes == {np.dtype(np.float16)}
    meta = export.read_metadata(path)
    assert meta["lipnet.precision"] == "float16" and meta["lipnet.fp16_max_error"] > 0
    assert "2ε" in meta["lipnet.precision_note"]
    assert report.lipschitz_upper <= spectral_product(linear_weights(model)) * (1 + 1e-12)
    assert report.lipschitz_upper != report32.lipschitz_upper  # recomputed on the float16 weights
    x = _states(ctl)["training"]
    for u in (export.session(path).run_batch(x), export.numpy_policy(path).run_batch(x)):
        assert np.abs(u - _torch(ctl, x)).max() <= 1e-2


def test_parity_failure_refuses_and_leaves_no_file(exported, tmp_path, monkeypatch):
    ctl, path, _ = exported("relu-tanh-frobenius-4x1")
    tampered = onnx.load(path)
    w = tampered.graph.initializer[0]
    arr = numpy_helper.to_array(w).copy()
    arr.flat[0] += 0.5
    w.CopyFrom(numpy_helper.from_array(arr, w.name))
    del tampered.metadata_props[:]
    monkeypatch.setattr(exporter_mod, "_torch_export", lambda *a, **k: tampered)
    out = tmp_path / "controller.onnx"
    out.write_bytes(path.read_bytes())  # a previous export
    with pytest.raises(ParityError, match="disagrees with torch beyond 1e-05.*not written"):
        export.export_controller(ctl, out, samples=500)
    assert out.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["controller.onnx"]


def test_bad_destinations_and_run_dirs_give_clear_errors(tmp_path, monkeypatch):
    ctl = _controller(n_x=2, n_u=1, hidden=(4,))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ExportError, match="cannot create the folder .*file.txt"):
        export.export_controller(ctl, a_file / "controller.onnx")
    with pytest.raises(ExportError, match="is a folder"):
        export.export_controller(ctl, tmp_path)
    with pytest.raises(ExportError, match="opset 17 is below 18"):
        export.export_controller(ctl, tmp_path / "c.onnx", opset=17)
    with pytest.raises(ExportError, match="no controller checkpoint"):
        export.export_controller(tmp_path, tmp_path / "c.onnx")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "controller.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="not a readable lipnet checkpoint"):
        export.export_controller(tmp_path / "broken", tmp_path / "c.onnx")
    with pytest.raises(ExportError, match="expected a Controller or a run folder"):
        export.export_controller(42, tmp_path / "c.onnx")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(fileio.tempfile, "mkstemp", denied)
    with pytest.raises(ExportError, match="cannot write to .*Permission denied.*writable --out"):
        export.export_controller(ctl, tmp_path / "c.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "file.txt"]
    assert issubclass(ExportError, LipnetError)


def test_export_creates_its_output_folder(tmp_path):
    ctl = _controller(n_x=2, n_u=1, hidden=(4,))
    out = tmp_path / "missing" / "deeper" / "controller.onnx"
    export.export_controller(ctl, out, samples=SAMPLES)
    assert export.session(out).n_x == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["controller.onnx"]  # no temporary left behind


def test_mixed_saturation_folds_exactly():
    # Per-channel tanh / clip is not reachable from the constructor (limits are all finite or absent) but is
    # from a state dict; the folded module must follow Controller.saturate there too.
    ctl = _controller(n_x=3, n_u=2, hidden=(8,), u_low=[-1.0, -1.0], u_high=[1.0, 1.0], action_scale=4.0)
    ctl.u_high[1] = math.inf
    lo, hi = ctl.limits()
    assert saturation_plan(lo, hi, "tanh", True)["mode"] == "mixed"
    x = torch.randn(500, 3) * 5
    with torch.no_grad():
        u_folded, u = fold_controller(ctl)(x).numpy(), ctl(x).numpy()
    scale = np.maximum(1.0, working_magnitude(ctl, x.numpy()))[:, None]
    assert (np.abs(u_folded - u) / scale).max() <= 1e-5
    assert (np.abs(u[:, 0]) <= 1).all() and (np.abs(u[:, 0]) < 0.9999).any()  # smooth two-sided channel
    assert (u[:, 1] >= -1).all() and (u[:, 1] == -1).any()  # hard-clipped one-sided channel


def test_run_certificate_states(tmp_path):
    ctl = _controller(n_x=2, n_u=1, hidden=(4,))
    assert run_certificate(tmp_path, ctl).status == "missing"
    (tmp_path / "certificate.json").write_text("{not json")
    assert run_certificate(tmp_path, ctl).status == "unreadable"
    # what lipnet writes has its format; a file without it, or with a malformed bound, is not read at all
    (tmp_path / "certificate.json").write_text(json.dumps({"network_hash": network_hash(ctl), "tightest_upper": 0.1}))
    assert run_certificate(tmp_path, ctl).status == "unreadable"
    (tmp_path / "certificate.json").write_text(json.dumps({"format": CERTIFICATE_FORMAT,
                                                           "network_hash": network_hash(ctl), "tightest_upper": 0.1}))
    assert run_certificate(tmp_path, ctl).status == "unreadable"
    (tmp_path / "certificate.json").write_text(json.dumps({"format": CERTIFICATE_FORMAT, "network_hash": "sha256:00",
                                                           "tightest_upper": {"value": 0.1, "method": "lipsdp"}}))
    hash_fn = network_hash
    stale = run_certificate(tmp_path, ctl)
    assert stale.status == ("stale" if hash_fn else "unverifiable") and stale.bound is None
    (tmp_path / "certificate.json").write_text(json.dumps({"format": CERTIFICATE_FORMAT, "network_hash": hash_fn(ctl),
                                                           "tightest_upper": {"value": 0.1, "method": "lipsdp"}}))
    ok = run_certificate(tmp_path, ctl)
    assert (ok.status, ok.bound, ok.method) == ("verified", 0.1, "lipsdp")


def test_cli_export_with_certificate_and_inspect(tmp_path, capsys):
    ctl = _controller(n_x=4, n_u=1, hidden=(16, 16), u_low=-1.0, u_high=1.0, action_scale=3.0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_controller(ctl, run_dir, plant="cartpole", dt=0.02)
    certify = pytest.importorskip("lipnet.certify")
    # what `lipnet certify RUN_DIR` writes, with two fast methods (ECLipsE-Fast is tighter than the product)
    cert = certify.certify_controller(ctl, methods=("spectral", "eclipse-fast"), lower=False, closed_loop=False)
    certify.write_certificate(cert, run_dir)
    on_disk = json.loads((run_dir / "certificate.json").read_text())
    certified = on_disk["tightest_upper"]["value"]
    out = tmp_path / "ctl.onnx"
    assert main(["export", str(run_dir), "--out", str(out), "--samples", "500", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    meta = export.read_metadata(out)
    assert meta["lipnet.plant"] == "cartpole" and meta["lipnet.dt"] == 0.02
    assert report["certificate_status"] == "verified"
    # recomputed at export (never copied from the file), and it agrees with the run's certificate
    embedded = meta["lipnet.certificate"]
    assert embedded["source"].startswith("recomputed by lipnet export")
    assert embedded["network_hash"] == on_disk["network_hash"]
    recomputed = {b["method"]: b["value"] for b in embedded["bounds"]}
    assert recomputed["eclipse-fast"] == pytest.approx(certified, rel=1e-9)
    product = spectral_product(linear_weights(onnx.load(out)))
    upper = meta["lipnet.lipschitz_upper"]
    # computed on the file's weights: LipSDP is tighter than ECLipsE-Fast, which is tighter than the product
    assert upper <= certified * (1 + 1e-5) and upper < product
    assert main(["export", "--inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "lipnet.lipschitz_upper" in text and "state [batch, 4] float32 -> action [batch, 1]" in text
    assert main(["export", "--inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["lipnet.plant"] == "cartpole"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(out.read_bytes()[:300])
    assert main(["export", "--inspect", str(bad)]) == 2
    assert "truncated or corrupted" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "no controller checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_summary_names_parity_bound_and_certificate(exported, capsys):
    from lipnet.commands.export import _print_report

    _, path, report = exported("tanh-clip-spectral-3x2")
    _print_report(report)
    text = capsys.readouterr().out
    assert f"wrote {path}" in text and "parity vs torch (tolerance 1e-05" in text
    for region in ("training", "far", "saturation"):
        assert f"  {region}" in text
    assert f"{report.lipschitz_upper:.6g}" in text and "certificate: missing" in text
