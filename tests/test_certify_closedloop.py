"""Closed-loop certificates: known answers on linear plants, never a false "certified"."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lipnet.certify import MLP, closed_loop_certificate, small_gain
from lipnet.certify.closedloop import hinf_norm


def linear_plus_residual(K, eps=0.0, r_in=None, r_bias=-1.0):
    """An exact ReLU MLP for u = K x + eps·relu(r·x + r_bias): K x = K relu(x) − K relu(−x)."""
    K = np.atleast_2d(K)
    n = K.shape[1]
    r_in = np.ones(n) / np.sqrt(n) if r_in is None else np.asarray(r_in, float)
    w1 = np.vstack([np.eye(n), -np.eye(n), r_in[None]])
    b1 = np.concatenate([np.zeros(2 * n), [r_bias]])
    w2 = np.hstack([K, -K, np.full((K.shape[0], 1), eps)])
    return MLP([w1, w2], [b1, np.zeros(K.shape[0])], activation="relu")


def residual_net(eps, n=1, m=1):
    """π(x) = eps·relu(1ᵀx/√n − 1) (per output): zero Jacobian at 0, so K = 0 and Lip(Δ) = |eps| exactly."""
    w1 = np.ones((1, n)) / np.sqrt(n)
    return MLP([w1, np.full((m, 1), eps)], [np.array([-1.0]), np.zeros(m)], activation="relu")


def test_scalar_plant_known_answer():
    a, b = 0.5, 1.0                     # ‖b/(z − 0.5)‖∞ = 1/(1 − 0.5) = 2 → certified iff Lip(Δ) < 0.5
    for eps, expected in ((0.2, True), (0.45, True), (0.55, False), (-0.8, False)):
        res = closed_loop_certificate(residual_net(eps), [[a]], [[b]], dt=1.0, iqc="off")
        assert res["K"][0][0] == pytest.approx(0.0, abs=1e-9)
        assert res["hinf"] == pytest.approx(2.0, rel=1e-6)
        assert res["lip_delta"] == pytest.approx(abs(eps), rel=1e-6)
        assert res["certified"] is expected
        assert res["margin"] == pytest.approx(1 - 2.0 * res["lip_delta"], abs=1e-6)


def test_relu_pair_linear_part_is_bounded_soundly():
    """K x written as K relu(x) − K relu(−x): neuron-wise multipliers cannot see the cancellation, so the
    bound on Lip(Δ) is conservative (≥ the true |eps|) and the verdict follows it — never optimistic."""
    a, b, k = 1.2, 1.0, -0.7
    for eps in (0.0, 0.2, 0.6):
        res = closed_loop_certificate(linear_plus_residual([[k]], eps), [[a]], [[b]], dt=1.0)
        assert res["K"][0][0] == pytest.approx(k, abs=1e-6)
        assert res["lip_delta"] >= abs(eps)
        small_gain_passes = bool(res["hinf"] * res["lip_delta"] < 1)
        assert res["certified"] is (small_gain_passes or bool(res["iqc"] and res["iqc"]["passes"]))
        # Closed-loop slopes 0.5 + eps·[0, 1]: a contraction iff 0.5 + eps < 1.
        if eps >= 0.5:
            assert res["certified"] is False


def test_unstable_closed_loop_is_never_certified():
    res = closed_loop_certificate(linear_plus_residual([[0.1]], 0.0), [[1.2]], [[1.0]], dt=1.0)
    assert res["A_cl_spectral_radius"] == pytest.approx(1.3, rel=1e-6)
    assert res["certified"] is False and "not Schur stable" in res["verdict"]
    sg = small_gain([[1.0]], [[1.0]], [[0.0]], 0.0)          # marginally stable integrator
    assert sg["passes"] is False


def test_nonlinear_plant_is_never_certified():
    res = closed_loop_certificate(linear_plus_residual([[-0.7]], 0.0), [[1.2]], [[1.0]], dt=1.0, linear=False)
    assert res["certified"] is False and "no certificate" in res["verdict"]


def test_lqr_plus_small_residual_agrees_with_frequency_sweep():
    """u = −K_lqr x + π(x): the plant seen by π is A − B K_lqr; small gain vs a sweep."""
    import control

    dt = 0.1
    A = np.array([[1.0, dt], [0.0, 1.0]])
    B = np.array([[0.5 * dt**2], [dt]])
    K_lqr, _, _ = control.dlqr(A, B, np.eye(2), np.eye(1))
    A_lqr = A - B @ K_lqr
    z = np.exp(1j * np.linspace(0, np.pi, 20001))
    sweep = max(np.linalg.norm(np.linalg.solve(zi * np.eye(2) - A_lqr, B), 2) for zi in z)
    for factor, expected in ((0.3, True), (0.9, True), (1.1, False)):
        eps = factor / sweep
        res = closed_loop_certificate(residual_net(eps, n=2), A_lqr, B, dt=dt, iqc="off")
        assert res["hinf"] == pytest.approx(sweep, rel=1e-4)
        assert res["lip_delta"] == pytest.approx(eps, rel=1e-6)
        assert res["certified"] is expected
        assert res["margin"] == pytest.approx(1 - factor, abs=1e-3)
        assert res["allowed_lip_delta"] == pytest.approx(1 / sweep, rel=1e-4)


def test_hinf_pads_non_square_systems():
    A = np.diag([0.5, 0.2, -0.3])
    B = np.array([[1.0], [0.0], [1.0]])
    z = np.exp(1j * np.linspace(0, np.pi, 20001))
    sweep = max(np.sqrt(abs(1 / (zi - 0.5)) ** 2 + abs(1 / (zi + 0.3)) ** 2) for zi in z)
    assert sweep == pytest.approx(np.sqrt(4 + 1 / 1.3**2), rel=1e-9)       # both channels peak at z = 1
    assert hinf_norm(A, B, 1.0) == pytest.approx(sweep, rel=1e-6)


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.01, 1.0), st.floats(-0.9, 0.9))
def test_certified_loops_contract_in_simulation(seed, scale, lam):
    """Soundness: whenever the certificate says certified, any two trajectories converge to each other."""
    rng = np.random.default_rng(seed)
    n = 2
    A = rng.standard_normal((n, n))
    B = 0.3 * (rng.standard_normal((n, n)) + 2 * np.eye(n))
    A = lam * np.eye(n) + 0.1 * A                              # a pre-stabilised plant (LQR loop closed inside)
    w1, b1 = rng.standard_normal((6, n)), rng.standard_normal(6)
    w2 = scale * rng.standard_normal((n, 6)) / 6
    net = MLP([w1, w2], [b1, np.zeros(n)], activation="relu")
    res = closed_loop_certificate(net, A, B, dt=1.0, iqc="always")
    if res["iqc"]["passes"]:   # the IQC certificate's own promise: ‖Δx_k‖_P ≤ c^k ‖Δx_0‖_P
        P, c = np.array(res["iqc"]["P"]), res["iqc"]["contraction"]
        pnorm = lambda d: np.sqrt(np.einsum("bi,ij,bj->b", d, P, d))  # noqa: E731
        y = rng.standard_normal((8, n)) * 3
        p0 = pnorm(y[:4] - y[4:])
        for k in range(1, 60):
            y = y @ A.T + np.maximum(y @ w1.T + b1, 0) @ w2.T @ B.T
            assert np.all(pnorm(y[:4] - y[4:]) <= c**k * p0 * (1 + 1e-7) + 1e-12)
    if res["A_cl_spectral_radius"] >= 1:
        assert not res["iqc"]["passes"]
    if not res["passes"]:   # small gain: about half of the draws pass (checked when writing this test)
        return

    def pi(x):
        return np.maximum(x @ w1.T + b1, 0) @ w2.T

    x = rng.standard_normal((8, n)) * 3
    d0 = np.linalg.norm(x[:4] - x[4:], axis=1)
    for _ in range(400):
        x = x @ A.T + pi(x) @ B.T
    assert np.all(np.isfinite(x))
    assert np.all(np.linalg.norm(x[:4] - x[4:], axis=1) <= 1e-3 * d0 + 1e-9)


# --- the neuron-wise IQC certificate (tighter option) --------------------------------------------------------------

def scalar_tanh_loop(a, c):
    """x⁺ = a x − c·tanh(x): closed-loop slopes a − c·[0, 1], a contraction iff |a| < 1 and |a − c| < 1."""
    return MLP([np.array([[1.0]]), np.array([[-c]])], [np.zeros(1), np.zeros(1)], activation="tanh"), [[a]], [[1.0]]


@pytest.mark.parametrize("a, c, contracts", [(0.9, 1.5, True), (-0.5, 0.3, True), (0.5, 1.2, True),
                                             (1.2, 1.0, False), (0.9, 2.0, False), (0.5, -0.6, False)])
def test_iqc_known_answers_for_scalar_tanh_loops(a, c, contracts):
    net, A, B = scalar_tanh_loop(a, c)
    res = closed_loop_certificate(net, A, B, dt=1.0, iqc="always")
    assert res["iqc"]["passes"] is contracts and res["certified"] is contracts
    if contracts:   # its contraction factor is an upper bound on the worst slope magnitude
        assert max(abs(a), abs(a - c)) <= res["iqc"]["contraction"] + 1e-9 < 1
    if a == 0.9 and c == 1.5:   # small gain alone cannot prove it: K = −0.6, Lip(Δ) = 1.5, γ = 1/0.4
        assert res["passes"] is False and res["method"] == "neuron-wise incremental IQC"


def test_iqc_certifies_whatever_small_gain_certifies():
    """The IQC LMI contains small gain as its t = 0 case; checked on the known-answer loops of this file."""
    import control

    cases = [(residual_net(eps), [[0.5]], [[1.0]], 1.0) for eps in (0.2, 0.45, -0.3)]
    dt = 0.1
    A = np.array([[1.0, dt], [0.0, 1.0]])
    B = np.array([[0.5 * dt**2], [dt]])
    K_lqr, _, _ = control.dlqr(A, B, np.eye(2), np.eye(1))
    A_lqr = A - B @ K_lqr
    gamma = hinf_norm(A_lqr, B, dt)
    cases += [(residual_net(f / gamma, n=2), A_lqr, B, dt) for f in (0.3, 0.9)]
    for net, A_, B_, dt_ in cases:
        res = closed_loop_certificate(net, A_, B_, dt=dt_, iqc="always")
        assert res["passes"] is True
        assert res["iqc"]["passes"] is True, res["iqc"]["reason"]


def test_iqc_never_certifies_an_unstable_loop():
    res = closed_loop_certificate(linear_plus_residual([[0.1]], 0.0), [[1.2]], [[1.0]], dt=1.0, iqc="always")
    assert res["certified"] is False and res["iqc"]["passes"] is False
    res = closed_loop_certificate(residual_net(0.55), [[0.5]], [[1.0]], dt=1.0, iqc="always")
    assert res["certified"] is False   # slopes up to 1.05: trajectories far apart diverge
    res = closed_loop_certificate(residual_net(-0.8), [[0.5]], [[1.0]], dt=1.0)   # slopes in [−0.3, 0.5]
    assert res["passes"] is False and res["certified"] is True   # small gain fails, the IQC fallback proves it


def test_iqc_rejects_bad_mode():
    with pytest.raises(ValueError, match="iqc must be"):
        closed_loop_certificate(residual_net(0.1), [[0.5]], [[1.0]], dt=1.0, iqc="sometimes")
