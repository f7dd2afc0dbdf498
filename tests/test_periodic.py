"""Periodic (angle) states: sin/cos input features through the controller, certification and ONNX export."""

import hashlib
import json
import math

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import export
from export.parity import working_magnitude
from export.reference import SUPPORTED_OPS, linear_weights
from lipnet.certify import MLP, Region, certify_controller, mlp_of, network_hash, read_certificate
from lipnet.certify.empirical import network_forward
from lipnet.cli import main
from lipnet.exceptions import LipnetDimension
from lipnet.nn import Controller
from lipnet.train.checkpoint import load_controller, save_controller

TWO_PI = 2 * math.pi


def _random(c: Controller, seed: int = 0) -> Controller:
    """Random weights (not just the initialisation), so the outputs span the saturation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in c.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return c.eval()


def _pendulum_like(seed: int = 0, **kw) -> Controller:
    args = dict(n_x=3, n_u=2, hidden=(16, 16), activation="relu", gains=2.0, periodic=(2, 0),
                state_offset=[0.3, 0.1, -0.5], state_scale=[0.25, 2.0, 0.5], action_scale=[2.0, 0.5],
                u_low=-1.0, u_high=1.0, saturation="tanh")
    args.update(kw)
    return _random(Controller(**args), seed)


@torch.no_grad()
def _u(c: Controller, x) -> np.ndarray:
    return c(torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()


# --- the controller ------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(n_x=st.integers(1, 4), data=st.data(), act=st.sampled_from(["relu", "tanh", "groupsort"]),
       sat=st.sampled_from(["tanh", "clip", "none"]), k=st.integers(-60, 60), seed=st.integers(0, 10_000))
def test_controller_is_2pi_periodic_in_each_periodic_state(n_x, data, act, sat, k, seed):
    periodic = data.draw(st.lists(st.integers(0, n_x - 1), min_size=1, max_size=n_x, unique=True))
    p = data.draw(st.sampled_from(periodic))
    rng = np.random.default_rng(seed)
    c = _random(Controller(n_x, 2, (8,), activation=act, periodic=periodic, state_offset=rng.normal(size=n_x),
                           state_scale=rng.uniform(0.2, 2.0, n_x), u_low=-1.0, u_high=1.0, saturation=sat),
                seed).double()
    x = rng.normal(size=(8, n_x)) * 4
    shifted = x.copy()
    shifted[:, p] += TWO_PI * k
    np.testing.assert_allclose(_u(c, shifted), _u(c, x), rtol=0, atol=1e-9)
    # the certified MLP computes the same function of the raw state (features included)
    net = mlp_of(c)
    with torch.no_grad():
        np.testing.assert_allclose(network_forward(net, torch.as_tensor(shifted), saturate=True).numpy(),
                                   _u(c, x), rtol=0, atol=1e-9)
    assert net.n_in == n_x and net.n_features == n_x + len(periodic)


def test_non_periodic_states_are_not_wrapped():
    c = _pendulum_like().double()
    x = np.array([[0.2, 0.4, 0.1]])
    moved = x + [0.0, TWO_PI, 0.0]  # state 1 is a velocity
    assert np.abs(_u(c, moved) - _u(c, x)).max() > 1e-3


def test_features_are_zero_at_the_offset_and_the_first_layer_takes_them():
    c = _pendulum_like().double()
    z = c.features(c.state_offset.double()[None])
    assert z.shape == (1, 5) and torch.equal(z, torch.zeros(1, 5, dtype=torch.float64))
    w0, _ = c.folded_weights()[0]
    assert w0.shape == (16, 5) and c.layers[0].in_features == 5


def test_empty_periodic_is_bit_identical_to_a_controller_without_it():
    def build(**extra):
        torch.manual_seed(7)
        return _random(Controller(3, 2, (8, 8), state_offset=[0.1, 0.0, -1.0], state_scale=[1.0, 2.0, 3.0],
                                  u_low=-1.0, u_high=1.0, **extra), seed=3)

    a, b = build(), build(periodic=())
    assert a.periodic == b.periodic == ()
    assert a.state_dict().keys() == b.state_dict().keys()
    x = torch.randn(64, 3) * 5
    assert torch.equal(a(x), b(x)) and torch.equal(a.double()(x.double()), b.double()(x.double()))
    for (wa, ba), (wb, bb) in zip(a.folded_weights(), b.folded_weights(), strict=True):
        assert wa.tobytes() == wb.tobytes() and ba.tobytes() == bb.tobytes()
    assert a.config() == b.config() and a.config()["periodic"] == []
    # the hash of a controller without angles is the hash of the format before periodic features existed
    net = mlp_of(a)
    h = hashlib.sha256(f"lipnet-mlp/1|{net.activation}|{net.saturation}|".encode())
    for w, bias in zip(net.weights, net.biases, strict=True):
        h.update(np.asarray(w.shape, dtype=np.int64).tobytes() + w.astype("<f8").tobytes()
                 + bias.astype("<f8").tobytes())
    for lim in (net.u_low, net.u_high):
        h.update(lim.astype("<f8").tobytes())
    assert network_hash(a) == network_hash(b) == "sha256:" + h.hexdigest()


def test_hash_binds_the_feature_map():
    net = mlp_of(_pendulum_like())
    moved = MLP(net.weights, net.biases, net.activation, net.u_low, net.u_high, net.saturation,
                periodic=net.periodic, periodic_center=net.periodic_center + 0.5)
    swapped = MLP(net.weights, net.biases, net.activation, net.u_low, net.u_high, net.saturation,
                  periodic=net.periodic[::-1], periodic_center=net.periodic_center[::-1])
    assert len({network_hash(net), network_hash(moved), network_hash(swapped)}) == 3


def test_config_round_trip_and_old_configs(tmp_path):
    c = _pendulum_like()
    cfg = c.config()
    assert cfg["periodic"] == [2, 0]
    d = Controller.from_config(json.loads(json.dumps(cfg)))
    d.load_state_dict(c.state_dict())
    x = torch.randn(32, 3) * 10
    assert d.periodic == (2, 0) and torch.equal(d(x), c(x))
    save_controller(c, tmp_path, plant="", dt=0.05)
    assert torch.equal(load_controller(tmp_path)(x), c(x))
    old = {k: v for k, v in _random(Controller(2, 1, (4,))).config().items() if k != "periodic"}
    assert Controller.from_config(old).periodic == ()


@pytest.mark.parametrize("bad, match", [
    ((3,), "out of range"), ((-1,), "out of range"), ((0, 0), "repeated"), ((1.0,), "integer"),
    ((True,), "integer"), ("0", "sequence"), (1, "sequence"), ((0, None), "integer"),
])
def test_bad_periodic_values_are_clear_errors(bad, match):
    with pytest.raises(LipnetDimension, match=match) as info:
        Controller(3, 1, (4,), periodic=bad)
    assert "periodic" in str(info.value)


def test_mlp_rejects_features_that_do_not_fit():
    w = [np.ones((4, 3)), np.ones((1, 4))]
    with pytest.raises(LipnetDimension, match="periodic"):
        MLP(w, [], periodic=(2,), periodic_center=[0.0])  # n_x = 2: index 2 out of range
    with pytest.raises(LipnetDimension, match="periodic_center"):
        MLP(w, [], periodic=(0,), periodic_center=[0.0, 1.0])
    assert MLP(w, [], periodic=(1,)).n_in == 2


# --- bounds ----------------------------------------------------------------------------------------------------


def _pairs(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random nearby pairs, pairs straddling θ = ±π (nearby on the circle) and far pairs on either side of it."""
    base = rng.uniform(-4, 4, size=(n, 3))
    near = base + 10.0 ** rng.uniform(-4, -1, size=(n, 1)) * rng.normal(size=(n, 3))
    straddle_a, straddle_b = base.copy(), base.copy()
    for p in (0, 2):
        side = rng.uniform(0, 0.05, size=n)
        straddle_a[:, p] = math.pi - side
        straddle_b[:, p] = -math.pi + rng.uniform(0, 0.05, size=n)  # 2π apart in R, close on the circle
    across_a, across_b = straddle_a.copy(), straddle_a.copy()
    across_b[:, 2] = math.pi + rng.uniform(0, 0.05, size=n)  # crossing θ = π in R
    return np.vstack([base, straddle_a, across_a]), np.vstack([near, straddle_b, across_b])


@pytest.mark.parametrize("act, sat", [("relu", "tanh"), ("tanh", "clip"), ("groupsort", "none")])
def test_every_sound_bound_dominates_the_empirical_slopes(act, sat):
    c = _pendulum_like(seed=11, activation=act, saturation=sat, hidden=(8,)).double()
    rng = np.random.default_rng(0)
    a, b = _pairs(rng, 4000)
    slope = np.linalg.norm(_u(c, a) - _u(c, b), axis=1) / np.linalg.norm(a - b, axis=1)
    # Jacobian norms of the controller (autograd through the features) at random states
    xs = torch.as_tensor(rng.uniform(-4, 4, size=(200, 3)))
    jac = torch.func.vmap(torch.func.jacrev(lambda v: c(v[None])[0]))(xs)
    lower = max(float(slope.max()), float(torch.linalg.matrix_norm(jac.detach(), ord=2).max()))
    cert = certify_controller(c, region=Region([-4, -4, -4], [4, 4, 4]), closed_loop=False)
    sound = [r for r in cert.bounds if r.sound]
    assert {r.method for r in sound} >= {"construction", "spectral"}
    for r in sound:
        assert r.value >= lower * (1 - 1e-9), (r.method, r.value, lower)
    assert c.lipschitz_bound() >= lower
    # the certificate's own (true-forward) lower bound is a lower bound and finds about as much as we did
    assert 0.5 * lower <= cert.lower.value <= cert.tightest_upper * (1 + 1e-9)
    assert cert.architecture["periodic"] == [2, 0]


# --- export ------------------------------------------------------------------------------------------------------


EXPORTS = {
    "relu-tanh-f32": dict(activation="relu", saturation="tanh", fp16=False),
    "groupsort-clip-f32": dict(activation="groupsort", saturation="clip", fp16=False),
    "tanh-none-fp16": dict(activation="tanh", saturation="none", fp16=True),
    "relu-tanh-fp16": dict(activation="relu", saturation="tanh", fp16=True),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(case):
        if case not in cache:
            opts = dict(EXPORTS[case])
            fp16 = opts.pop("fp16")
            c = _pendulum_like(seed=5, **opts)
            path = tmp_path_factory.mktemp(case) / "controller.onnx"
            cache[case] = (c, path, export.export_controller(c, path, fp16=fp16, samples=1000), fp16)
        return cache[case]
    return get


def _far_states(rng, n=2000) -> np.ndarray:
    x = rng.uniform(-1, 1, size=(n, 3)) * [2000.0, 5.0, 500.0]  # angles far outside [−π, π]
    x[: n // 2, 2] += TWO_PI * rng.integers(-100, 100, size=n // 2)
    return x.astype(np.float32)


@pytest.mark.parametrize("case", EXPORTS)
def test_export_parity_with_periodic_features(exported, case):
    c, path, report, fp16 = exported(case)
    tol = 1e-2 if fp16 else 1e-5
    assert report.parity["passed"] and report.parity["worst"] <= tol
    assert {"Sin", "Cos"} <= set(report.ops) <= set(SUPPORTED_OPS) - {"Constant"}
    model = onnx.load(path)
    w = linear_weights(model)
    assert len(w) == len(c.hidden) + 1 and w[0].shape == (16, 5)
    meta = export.read_metadata(path)
    assert meta["lipnet.periodic"] == [2, 0]
    assert meta["lipnet.periodic_center"] == c.periodic_center().tolist()
    sess, ref = export.session(path), export.numpy_policy(path)
    rng = np.random.default_rng(1)
    x = _far_states(rng)
    u_torch = c(torch.as_tensor(x)).detach().numpy()
    scale = np.maximum(1.0, working_magnitude(c, x))[:, None]
    for u in (sess.run_batch(x), ref.run_batch(x)):
        assert u.dtype == np.float32
        assert (np.abs(u - u_torch) / scale).max() <= tol
    # a state and the same state turned by whole turns give (almost) the same action from the file
    turned = x.astype(np.float64)
    turned[:, 0] += TWO_PI * 3
    u0, u1 = ref.run_batch(x), ref.run_batch(turned.astype(np.float32))
    lip = report.lipschitz_upper
    # float32 rounding of the turned angle moves it by up to ulp(|x| + 6π); beyond that only rounding differs
    slack = lip * np.spacing(np.abs(turned[:, 0]).astype(np.float32)) + (2 * tol if fp16 else 1e-5) * scale[:, 0]
    assert (np.abs(u1 - u0).max(axis=1) <= slack).all()


def test_exported_bound_is_sound_across_the_wrap(exported):
    c, path, report, _ = exported("relu-tanh-f32")
    a, b = _pairs(np.random.default_rng(2), 3000)
    sess = export.session(path)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    ratio = (np.linalg.norm(sess.run_batch(a32) - sess.run_batch(b32), axis=1)
             / np.linalg.norm(a32.astype(np.float64) - b32.astype(np.float64), axis=1))
    keep = np.linalg.norm(a - b, axis=1) > 1e-3  # float32 noise dominates the shortest pairs
    assert ratio[keep].max() <= report.lipschitz_upper * (1 + 1e-3)
    assert ratio[keep].max() > 0.05 * report.lipschitz_upper


# --- closed loop -------------------------------------------------------------------------------------------------


def test_cli_certify_closed_loop_does_not_use_the_residual_lmi(tmp_path, capsys):
    dt = 0.1
    A = np.array([[1.0, dt], [0.0, 1.0]])
    B = np.array([[0.5 * dt**2], [dt]])
    np.savez(tmp_path / "plant.npz", A=A, B=B, dt=dt)
    c = _random(Controller(2, 1, (8, 8), layer="plain", periodic=(0,), u_low=-1.0, u_high=1.0), seed=2)
    with torch.no_grad():
        for p in c.parameters():
            p.mul_(0.3)
    run = tmp_path / "run"
    run.mkdir()
    save_controller(c, run, plant=str(tmp_path / "plant.npz"), dt=dt)
    assert main(["certify", str(run), "--method", "spectral", "--method", "lipsdp-schur", "--iqc", "always",
                 "--json"]) == 0
    cl = json.loads(capsys.readouterr().out)["closed_loop"]
    assert cl == read_certificate(run)["closed_loop"]
    assert cl["lip_delta_method"] in ("triangle", "triangle-lipsdp")
    assert "lipsdp-schur" not in cl["lip_delta_all"]
    assert cl["lip_delta_not_applicable"] == {"lipsdp-schur": "not applicable: periodic input features"}
    assert cl["iqc"] == {"passes": False, "reason": "not applicable: periodic input features"}
    assert cl["method"] == "incremental small gain" and cl["periodic"] == [0]
    # Lip(Δ) with Δ(x) = π(x) − Kx is at least what random pairs show, and the triangle bound is ≥ ‖K‖
    K = np.asarray(cl["K"])
    rng = np.random.default_rng(3)
    x = rng.uniform(-6, 6, size=(4000, 2))
    y = x + 10.0 ** rng.uniform(-3, 0.5, size=(4000, 1)) * rng.normal(size=(4000, 2))
    dc = c.double()
    delta = (_u(dc, x) - x @ K.T) - (_u(dc, y) - y @ K.T)
    slope = np.linalg.norm(delta, axis=1) / np.linalg.norm(x - y, axis=1)
    assert slope.max() <= cl["lip_delta"] * (1 + 1e-9)
    assert cl["lip_delta"] >= np.linalg.norm(K, 2)
