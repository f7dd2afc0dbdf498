"""Automatic gradient descent (lipnet.optim.agd) against a transcription of the published algorithm."""

import math

import pytest
import torch
from toys import closed_loop_cost  # the double-integrator loop shared with the other optimiser tests

from lipnet.nn import Controller
from lipnet.optim.agd import AGD
from lipnet.optim.registry import make_optimizer

D = torch.float64


# --- straight transcription of the published pseudocode (paper 003, Algorithm 1 / jxbz/agd agd.py maths) ----
def reference_agd_init(shapes, generator):
    """Each W_l (out × in) orthogonal, then scaled by sqrt(out / in)."""
    out = []
    for fan_out, fan_in in shapes:
        w = torch.empty(fan_out, fan_in, dtype=D)
        torch.nn.init.orthogonal_(w, generator=generator)
        out.append(w * math.sqrt(fan_out / fan_in))
    return out


def reference_agd_step(weights, grads, gain=1.0):
    """G = (1/L) Σ sqrt(out/in) ‖∇_l‖_F ; η = log((1 + sqrt(1 + 4G))/2) ; W_l −= gain·η/L·sqrt(out/in)·∇_l/‖∇_l‖_F."""
    depth = len(weights)
    summary = 0.0
    for w, g in zip(weights, grads, strict=True):
        summary += math.sqrt(w.shape[0] / w.shape[1]) * float(torch.linalg.norm(g))
    summary /= depth
    eta = math.log(0.5 * (1 + math.sqrt(1 + 4 * summary)))
    new = []
    for w, g in zip(weights, grads, strict=True):
        new.append(w - gain * eta / depth * math.sqrt(w.shape[0] / w.shape[1]) * g / torch.linalg.norm(g))
    return new, eta


def mlp(weights, x):
    h = x
    for i, w in enumerate(weights):
        h = h @ w.T
        if i < len(weights) - 1:
            h = torch.relu(h)
    return h


def test_plain_layers_use_agd_initialisation():
    c = Controller(3, 2, (8, 5), layer="plain", bias=False)
    for lin in c.layers:
        sv = torch.linalg.svdvals(lin.raw_weight.detach().double())
        expected = math.sqrt(lin.out_features / lin.in_features)
        assert torch.allclose(sv, torch.full_like(sv, expected), rtol=1e-5)


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_matches_reference_transcription_step_for_step(gain):
    gen = torch.Generator().manual_seed(3)
    shapes = [(8, 3), (6, 8), (2, 6)]
    ref = reference_agd_init(shapes, gen)
    model = Controller(3, 2, (8, 6), layer="plain", bias=False).double()
    with torch.no_grad():
        for lin, w in zip(model.layers, ref, strict=True):
            lin.raw_weight.copy_(w)
    x, y = torch.randn(40, 3, dtype=D, generator=gen), torch.randn(40, 2, dtype=D, generator=gen)
    opt = AGD(model, gain=gain)

    def closure():
        opt.zero_grad()
        loss = 0.5 * (model(x) - y).pow(2).sum(-1).mean()
        loss.backward()
        return loss

    for _ in range(6):
        ws = [w.clone().requires_grad_(True) for w in ref]
        grads = torch.autograd.grad(0.5 * (mlp(ws, x) - y).pow(2).sum(-1).mean(), ws)
        ref, eta = reference_agd_step(ref, grads, gain)
        opt.step(closure)
        assert opt.last_info["eta"] == pytest.approx(eta, rel=1e-13)
        for lin, w in zip(model.layers, ref, strict=True):
            assert torch.allclose(lin.raw_weight, w, rtol=0, atol=1e-13)


def _plain_and_sphere_models():
    return [Controller(3, 2, (8, 6), layer=k, bias=True).double() for k in ("plain", "frobenius")]


@pytest.mark.parametrize("model", _plain_and_sphere_models(), ids=["plain", "frobenius"])
def test_bias_is_an_extra_column_of_the_layer(model):
    """Each layer's joint update [ΔW Δb] has Frobenius size gain·η/L·s_l (in weight units)."""
    with torch.no_grad():
        for lin in model.layers:
            lin.bias.normal_()
    x, y = torch.randn(30, 3, dtype=D), torch.randn(30, 2, dtype=D)
    opt = AGD(model)
    before = [(lin.weight.detach().clone(), lin.bias.detach().clone()) for lin in model.layers]

    def closure():
        opt.zero_grad()
        loss = 0.5 * (model(x) - y).pow(2).sum(-1).mean()
        loss.backward()
        return loss

    opt.step(closure)
    eta, depth = opt.last_info["eta"], len(model.layers)
    for info, lin, (w0, b0) in zip(opt.layers, model.layers, before, strict=True):
        dw, db = lin.weight.detach() - w0, lin.bias.detach() - b0
        size = math.sqrt(float(dw.pow(2).sum() + db.pow(2).sum()))
        expected = eta / depth * opt.scale(info)
        if info.spherical:  # the chord of the turn is 2 sin(θ/2), slightly shorter than the arc θ
            theta = float(torch.linalg.norm(dw)) / info.gain
            arc = math.sqrt((2 * math.asin(theta / 2) * info.gain) ** 2 + float(db.pow(2).sum()))
            assert arc == pytest.approx(expected, rel=1e-10)
            assert float(lin.direction.detach().norm()) == pytest.approx(1.0, abs=1e-14)
        else:
            assert size == pytest.approx(expected, rel=1e-12)


def test_zero_gradient_layer_does_not_move_and_nothing_is_nan():
    model = Controller(3, 2, (8, 6), layer="frobenius").double()
    opt = AGD(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model.layers[1].direction.grad = torch.randn_like(model.layers[1].direction)
    v0, v1 = model.layers[0].direction.detach().clone(), model.layers[1].direction.detach().clone()
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.equal(model.layers[0].direction, v0)  # layer 0 had a zero gradient
    assert not torch.equal(model.layers[1].direction, v1)


def test_non_finite_loss_skips_the_step():
    model = Controller(3, 2, (8, 6), layer="frobenius")
    opt = AGD(model)
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        opt.zero_grad()
        loss = model(torch.full((4, 3), float("nan"))).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert opt.last_info["skipped"] == "nonfinite_loss"
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_rejects_layers_it_has_no_rule_for():
    from lipnet.exceptions import LipnetArgument

    with pytest.raises(LipnetArgument, match="orthogonal"):
        AGD(Controller(3, 2, (8,), layer="orthogonal"))


@pytest.mark.parametrize("layer", ["frobenius", "plain"])
def test_trains_a_closed_loop_controller_without_tuning(layer):
    torch.manual_seed(1)
    model = Controller(2, 1, (32, 32), layer=layer)
    x0 = torch.randn(32, 2)
    opt = make_optimizer("agd", model)
    assert isinstance(opt, AGD) and not opt.wants_loss_closure

    def closure():
        opt.zero_grad()
        loss = closed_loop_cost(model, x0)
        loss.backward()
        return loss

    first = float(opt.step(closure).detach())
    for _ in range(24):
        opt.step(closure)
    with torch.no_grad():
        last = float(closed_loop_cost(model, x0))
    assert last < 0.6 * first
    assert all(torch.isfinite(p).all() for p in model.parameters())
