"""The built-in plants: pendulum, cart-pole, planar quadrotor, DC motor, mass-spring-damper, Van der Pol, ball and
beam (nonlinear ODEs), and the double integrator (linear). Each states its task (stabilise the equilibrium),
physics, parameters and initial-state boxes."""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import InitialStates
from .errors import PlantSpecError
from .linear import LinearPlant, apply_linear_options
from .ode import ODEPlant
from .options import make_spec

__all__ = ["Pendulum", "CartPole", "Quadrotor2D", "DCMotor", "MassSpringDamper", "VanDerPol", "BallBeam",
           "double_integrator"]


def _positive(p: dict, *keys: str) -> None:
    bad = [f"{k}={p[k]}" for k in keys if not p[k] > 0]
    if bad:
        raise PlantSpecError(f"parameters must be > 0: {', '.join(bad)}")


def _box(train, eval_):
    return {"init_train": InitialStates(np.asarray(train, float)), "init_eval": InitialStates(np.asarray(eval_, float))}


class Pendulum(ODEPlant):
    """Torque-limited pendulum, upright stabilisation.

    State `[θ, θ̇]` with θ measured from upright (rad, counter-clockwise), input torque τ (N·m):
    `m l² θ̈ = m g l sin θ − b θ̇ + τ`, `|τ| ≤ u_max`. Defaults m = 1 kg, l = 1 m, g = 9.81 m/s², b = 0.1 N·m·s,
    u_max = 5 N·m (gravity torque exceeds it beyond |θ| ≈ 30.6°, so larger angles would need a swing), 20 Hz,
    5 s. Task: bring `[θ, θ̇]` to 0 from θ ∈ ±0.2 rad, θ̇ ∈ ±0.3 rad/s (train) or θ ∈ ±0.3, θ̇ ∈ ±0.5 (eval);
    the saturated LQR stabilises the whole eval box (it saturates there). Q = diag(1, 0.1), R = 0.1.
    """

    NAME = "pendulum"
    PARAMS = {"m": (1.0, "kg", "bob mass"), "l": (1.0, "m", "rod length"), "g": (9.81, "m/s^2", "gravity"),
              "b": (0.1, "N m s", "viscous damping"), "u_max": (5.0, "N m", "torque limit")}
    PERIODIC = (0,)
    # swingup: from anywhere on the circle (θ̇ ∈ ±1 rad/s) with u_max = 40 % of m g l, so from |θ| > 0.41 rad the
    # torque cannot hold the pendulum and it must swing; 10 s to get upright and stay there.
    TASKS = {"swingup": lambda p: {"u_max": 0.4 * p["m"] * p["g"] * p["l"], "x0_box": [math.pi, 1.0],
                                   "horizon": 200}}
    DT, SUBSTEPS, HORIZON = 0.05, 2, 100

    def describe(self, p):
        _positive(p, "m", "l", "u_max")
        self._c = (p["g"] / p["l"], p["b"] / (p["m"] * p["l"] ** 2), 1.0 / (p["m"] * p["l"] ** 2))
        return dict(n_x=2, n_u=1, u_low=[-p["u_max"]], u_high=[p["u_max"]], Q=np.diag([1.0, 0.1]), R=[[0.1]],
                    state_names=["theta", "theta_dot"], state_units=["rad", "rad/s"], input_names=["torque"],
                    **_box([0.2, 0.3], [0.3, 0.5]))

    def drive(self, u):
        return u[..., 0] * self._c[2]

    def rhs(self, x, v):
        gl, damp, _ = self._c
        th, om = x.unbind(-1)
        acc = torch.add(torch.add(v, torch.sin(th), alpha=gl), om, alpha=-damp)
        return torch.stack((om, acc), -1)


class CartPole(ODEPlant):
    """Cart-pole (safe-control-gym physics), upright stabilisation.

    State `[x, ẋ, θ, θ̇]` (m, m/s, rad from upright, rad/s), input force F (N) on the cart, `|F| ≤ u_max`:
    `a = (F + m l θ̇² sin θ)/(M+m)`, `θ̈ = (g sin θ − a cos θ) / (l (4/3 − m cos²θ/(M+m)))`,
    `ẍ = a − m l θ̈ cos θ/(M+m)` with l the effective (half) pole length. Defaults M = 1 kg, m = 0.1 kg,
    l = 0.5 m, g = 9.8 m/s², u_max = 10 N, 50 Hz, Q = I, R = 0.1 (the safe-control-gym setting), 6 s horizon (300 steps,
    as safe-control-gym's episodes). Task: bring the state to 0 from x ∈ ±1 m, ẋ ∈ ±0.5 m/s, θ ∈ ±0.2 rad,
    θ̇ ∈ ±0.5 rad/s (train) or x ∈ ±2, ẋ ∈ ±1, θ ∈ ±0.3, θ̇ ∈ ±1 (eval); the saturated LQR stabilises the
    whole eval box (its linearised gain is K = [−2.78, −5.15, −43.88, −11.58], checked in the tests).

    Task `wide` (`cartpole?task=wide`): x, ẋ, θ, θ̇ ∈ ±1 (pole up to ±57°), 25 Hz, 6 s (150 steps). The saturated
    LQR stabilises 63 % of 256 eval starts (seed 1): from large angles its force saturates at ±10 N, the pole
    falls past horizontal or the cart runs away. The MPC expert (guided by it) stabilises 100 % of 48 of them and
    98 % of 128 training starts (20 s for those 128 demonstrations, 1 thread); its cart stays within ±3 m (no
    track limits in the model; the pole may turn over, θ is wrapped). Task `swingup`: pole anywhere (θ ∈ ±π,
    θ̇ ∈ ±1, x, ẋ ∈ ±0.5), 25 Hz, 8 s, cost Q = diag(1, 0.1, 5, 0.1), R = 0.01 (with Q = I the 1.5 s MPC settles
    hanging down from 60 % of the starts). LQR 15 %, MPC 100 % of 48 and of 128 (27 s); cart within ±2.7 m.
    """

    NAME = "cartpole"
    PERIODIC = (2,)
    PARAMS = {"M": (1.0, "kg", "cart mass"), "m": (0.1, "kg", "pole mass"),
              "l": (0.5, "m", "effective (half) pole length"), "g": (9.8, "m/s^2", "gravity"),
              "u_max": (10.0, "N", "force limit")}
    # See the docstring: wide (pole up to ±1 rad, 25 Hz, 6 s) and swing-up from hanging (25 Hz, 8 s, a cost that
    # weighs the pole angle and lets the input work; with Q = I the MPC expert settles hanging down).
    TASKS = {"wide": lambda p: {"x0_box": [1.0, 1.0, 1.0, 1.0], "dt": 0.04, "horizon": 150},
             "swingup": lambda p: {"x0_box": [0.5, 0.5, math.pi, 1.0], "dt": 0.04, "horizon": 200,
                                   "q": [1.0, 0.1, 5.0, 0.1], "r": 0.01}}
    DT, SUBSTEPS, HORIZON = 0.02, 1, 300

    def describe(self, p):
        _positive(p, "M", "m", "l", "u_max")
        mt = p["M"] + p["m"]
        self._c = (p["m"] * p["l"], mt, p["g"], p["l"], p["m"] / mt)
        return dict(n_x=4, n_u=1, u_low=[-p["u_max"]], u_high=[p["u_max"]], Q=np.eye(4), R=[[0.1]],
                    state_names=["x", "x_dot", "theta", "theta_dot"], state_units=["m", "m/s", "rad", "rad/s"],
                    input_names=["force"], **_box([1.0, 0.5, 0.2, 0.5], [2.0, 1.0, 0.3, 1.0]))

    def drive(self, u):
        return u[..., 0] * (1.0 / self._c[1])  # F/(M+m), shared by the four RK4 stages

    def rhs(self, x, v):
        # Fused form of the docstring's equations: each line is one or two kernels (and autograd nodes).
        ml, mt, g, l, mr = self._c
        _, xd, th, om = x.unbind(-1)
        s, c = torch.sin(th), torch.cos(th)
        a = torch.add(v, om * om * s, alpha=ml / mt)
        num = torch.addcmul(g * s, c, a, value=-1.0)
        thdd = num / ((c * c) * (-l * mr) + (4.0 * l / 3.0))
        xdd = torch.add(a, thdd * c, alpha=-ml / mt)
        return torch.stack((xd, xdd, om, thdd), -1)


class Quadrotor2D(ODEPlant):
    """Planar quadrotor (safe-control-gym 2D, Crazyflie-sized), hover.

    State `[x, ẋ, z, ż, θ, θ̇]` (m, m/s, m, m/s, rad, rad/s), inputs the two rotor thrusts `[T1, T2]` (N),
    `0 ≤ Ti ≤ twr·m·g/2`: `ẍ = sin θ (T1+T2)/m`, `z̈ = cos θ (T1+T2)/m − g`, `θ̈ = (L/√2)(T2 − T1)/Iyy`.
    Defaults m = 0.027 kg, Iyy = 1.4e-5 kg·m², L = 0.0397 m, g = 9.8, thrust-to-weight twr = 2, 50 Hz, 4 s.
    Equilibrium: hover at the origin, `Ti = m g/2`. Q = diag(1, 0.1, 1, 0.1, 0.1, 0.01), R = 5·I (thrust in N
    is small, so R is large). Task: return to hover from position offsets ±0.3 m, velocities ±0.3 m/s,
    θ ∈ ±0.2 rad, θ̇ ∈ ±0.5 rad/s (train), ±0.5 m, ±0.5 m/s, ±0.3 rad, ±1 rad/s (eval).

    Task `wide` (`quadrotor2d?task=wide`): recovery from any attitude with a loaded quadrotor, twr = 1.5, θ ∈ ±π
    (upside down included), θ̇ ∈ ±5 rad/s, velocities ±2 m/s, positions ±0.5 m, 25 Hz (RK4 one-step error
    < 1e-3 against 16 substeps for |θ̇| ≤ 25 rad/s), 4 s. The saturated LQR stabilises 52 % of 256 eval starts
    (seed 1): the thrusts saturate (0 ≤ Ti ≤ 0.75 m g) while it rights the vehicle and it falls (the model has
    no ground). The MPC expert stabilises 98 % of 48 of them and 98 % of 128 training starts (17 s for those
    demonstrations, 1 thread), within ±2.4 m horizontally and ±4.4 m in height, |θ̇| ≤ 27 rad/s (it flips the
    vehicle; a Crazyflie's gyro reads up to 35 rad/s).
    """

    NAME = "quadrotor2d"
    PERIODIC = (4,)
    PARAMS = {"m": (0.027, "kg", "mass"), "Iyy": (1.4e-5, "kg m^2", "pitch inertia"),
              "L": (0.0397, "m", "arm length"), "g": (9.8, "m/s^2", "gravity"),
              "twr": (2.0, "", "thrust-to-weight ratio (per-motor limit twr m g / 2)")}
    # See the docstring: recovery from any attitude with a loaded quadrotor (twr 1.5), 25 Hz, 4 s.
    TASKS = {"wide": lambda p: {"twr": 1.5, "x0_box": [0.5, 2.0, 0.5, 2.0, math.pi, 5.0], "dt": 0.04,
                                "horizon": 100}}
    DT, SUBSTEPS, HORIZON = 0.02, 1, 200

    def describe(self, p):
        _positive(p, "m", "Iyy", "L", "g")
        if not p["twr"] > 1:
            raise PlantSpecError(f"twr must be > 1 to hover, got {p['twr']}")
        hover = p["m"] * p["g"] / 2
        self._c = (1.0 / p["m"], p["g"], p["L"] / math.sqrt(2.0) / p["Iyy"])
        return dict(n_x=6, n_u=2, u_eq=[hover, hover], u_low=[0.0, 0.0], u_high=[p["twr"] * hover] * 2,
                    Q=np.diag([1.0, 0.1, 1.0, 0.1, 0.1, 0.01]), R=5.0 * np.eye(2),
                    state_names=["x", "x_dot", "z", "z_dot", "theta", "theta_dot"],
                    state_units=["m", "m/s", "m", "m/s", "rad", "rad/s"], input_names=["thrust1", "thrust2"],
                    **_box([0.3, 0.3, 0.3, 0.3, 0.2, 0.5], [0.5, 0.5, 0.5, 0.5, 0.3, 1.0]))

    def drive(self, u):
        inv_m, _, arm = self._c
        t1, t2 = u.unbind(-1)
        return (t1 + t2) * inv_m, (t2 - t1) * arm  # specific thrust and pitch acceleration

    def rhs(self, x, v):
        thrust, pitch = v
        _, xd, _, zd, th, thd = x.unbind(-1)
        return torch.stack((xd, torch.sin(th) * thrust, zd, torch.cos(th) * thrust - self._c[1], thd, pitch), -1)


class DCMotor(ODEPlant):
    """Armature-controlled DC motor, position control (Michigan CTMS motor parameters).

    State `[θ, ω, i]` (rad, rad/s, A), input voltage V (V), `|V| ≤ u_max`: `J ω̇ = K i − b ω`,
    `L i̇ = V − R i − K ω`. Defaults J = 0.01 kg·m², b = 0.1 N·m·s, K = 0.01 N·m/A, R = 1 Ω, L = 0.5 H,
    u_max = 12 V, 20 Hz, 10 s. Linear physics, integrated with RK4 like the others. Q = diag(1, 0.1, 0.01),
    R = 0.01. Task: move to θ = 0 from θ ∈ ±1 rad, ω ∈ ±0.5 rad/s, i ∈ ±0.5 A (train), ±1.5, ±1, ±1 (eval).
    """

    NAME = "dcmotor"
    PARAMS = {"J": (0.01, "kg m^2", "rotor inertia"), "b": (0.1, "N m s", "viscous friction"),
              "K": (0.01, "N m/A", "torque (= back-emf) constant"), "R": (1.0, "ohm", "armature resistance"),
              "L": (0.5, "H", "armature inductance"), "u_max": (12.0, "V", "voltage limit")}
    DT, SUBSTEPS, HORIZON = 0.05, 1, 200

    def describe(self, p):
        _positive(p, "J", "K", "R", "L", "u_max")
        self._c = (p["K"] / p["J"], p["b"] / p["J"], 1.0 / p["L"], p["R"] / p["L"], p["K"] / p["L"])
        return dict(n_x=3, n_u=1, u_low=[-p["u_max"]], u_high=[p["u_max"]], Q=np.diag([1.0, 0.1, 0.01]),
                    R=[[0.01]], state_names=["theta", "omega", "current"], state_units=["rad", "rad/s", "A"],
                    input_names=["voltage"], **_box([1.0, 0.5, 0.5], [1.5, 1.0, 1.0]))

    def drive(self, u):
        return u[..., 0] * self._c[2]

    def rhs(self, x, v):
        kj, bj, _, rl, kl = self._c
        _, om, cur = x.unbind(-1)
        return torch.stack((om, torch.add(cur * kj, om, alpha=-bj),
                            torch.add(torch.add(v, cur, alpha=-rl), om, alpha=-kl)), -1)


class MassSpringDamper(ODEPlant):
    """Mass-spring-damper with an optional hardening (Duffing) spring, regulation to rest.

    State `[x, ẋ]` (m, m/s), input force F (N), `|F| ≤ u_max`: `m ẍ = F − k x − k3 x³ − c ẋ`.
    Defaults m = 1 kg, k = 1 N/m, c = 0.2 N·s/m, k3 = 0 N/m³ (linear), u_max = 5 N, 20 Hz, 10 s, Q = I, R = 0.1.
    Task: bring to rest at 0 from x ∈ ±1 m, ẋ ∈ ±1 m/s (train), ±2, ±2 (eval).
    """

    NAME = "msd"
    PARAMS = {"m": (1.0, "kg", "mass"), "k": (1.0, "N/m", "spring stiffness"), "c": (0.2, "N s/m", "damping"),
              "k3": (0.0, "N/m^3", "cubic (Duffing) stiffness"), "u_max": (5.0, "N", "force limit")}
    DT, SUBSTEPS, HORIZON = 0.05, 1, 200

    def describe(self, p):
        _positive(p, "m", "u_max")
        self._c = (1.0 / p["m"], p["k"] / p["m"], p["k3"] / p["m"], p["c"] / p["m"])
        return dict(n_x=2, n_u=1, u_low=[-p["u_max"]], u_high=[p["u_max"]], Q=np.eye(2), R=[[0.1]],
                    state_names=["x", "x_dot"], state_units=["m", "m/s"], input_names=["force"],
                    **_box([1.0, 1.0], [2.0, 2.0]))

    def drive(self, u):
        return u[..., 0] * self._c[0]

    def rhs(self, x, v):
        _, k, k3, c = self._c
        pos, vel = x.unbind(-1)
        acc = torch.add(torch.add(v, pos, alpha=-k), vel, alpha=-c)
        if k3:
            acc = torch.add(acc, pos * pos * pos, alpha=-k3)
        return torch.stack((vel, acc), -1)


class VanDerPol(ODEPlant):
    """Forced Van der Pol oscillator, stabilisation of the (open-loop unstable) origin.

    State `[x1, x2]`, input u, `|u| ≤ u_max`: `ẋ1 = x2`, `ẋ2 = μ (1 − x1²) x2 − x1 + u`. Defaults μ = 1,
    u_max = 2, 10 Hz, 10 s, Q = I, R = 0.1. Task: stop the oscillation from x ∈ ±1.5 (train), ±2.5 (eval),
    which straddles the limit cycle (amplitude ≈ 2).

    Task `wide` (`vanderpol?task=wide`): a weak actuator, u_max = 0.75 (for μ = 1; from about 0.6 down no bounded
    input can break the oscillation), x ∈ ±3, and a deadline: at rest within 12 s (120 steps). The saturated
    LQR, whose sign mixes x1 and x2 instead of opposing x2, drains the cycle's energy too slowly: 47 % of 256
    eval starts (seed 1) are at rest in time (all of them by 15 s, so this is a settling-time task, not a
    region it cannot stabilise). The MPC expert stabilises 100 % of 48 of them and 99 % of 128 training
    starts (5 s for those demonstrations, 1 thread); the states stay within ±3.9.
    """

    NAME = "vanderpol"
    PARAMS = {"mu": (1.0, "", "nonlinear damping"), "u_max": (2.0, "", "input limit")}
    # See the docstring: a weak actuator (u_max 0.75) and a 12 s deadline from anywhere in ±3.
    TASKS = {"wide": lambda p: {"u_max": 0.75, "x0_box": [3.0, 3.0], "horizon": 120}}
    DT, SUBSTEPS, HORIZON = 0.1, 2, 100

    def describe(self, p):
        _positive(p, "u_max")
        return dict(n_x=2, n_u=1, u_low=[-p["u_max"]], u_high=[p["u_max"]], Q=np.eye(2), R=[[0.1]],
                    state_names=["x1", "x2"], state_units=["", ""], input_names=["u"],
                    **_box([1.5, 1.5], [2.5, 2.5]))

    def drive(self, u):
        return u[..., 0]

    def rhs(self, x, v):
        x1, x2 = x.unbind(-1)
        damped = torch.addcmul(x2, x1 * x1, x2, value=-1.0)  # (1 − x1²) x2
        return torch.stack((x2, torch.add(v, damped, alpha=self.params["mu"]) - x1), -1)


class BallBeam(ODEPlant):
    """Ball and beam (Hauser, Sastry & Kokotović 1992), torque-actuated beam, ball centred at rest.

    State `[r, ṙ, α, α̇]` (m, m/s, rad, rad/s), input beam torque τ (N·m), `|τ| ≤ u_max`:
    `(Jb/R² + m) r̈ = m r α̇² − m g sin α`, `(m r² + J + Jb) α̈ = τ − 2 m r ṙ α̇ − m g r cos α`, solid ball
    `Jb = 2/5 m R²`. Defaults m = 0.05 kg, R = 0.01 m, J = 0.02 kg·m², g = 9.81, u_max = 1 N·m, 20 Hz, 10 s,
    Q = diag(10, 1, 1, 0.1), R = 1. Task: centre the ball from r ∈ ±0.2 m, ṙ ∈ ±0.1, α ∈ ±0.1, α̇ ∈ ±0.1
    (train), ±0.3, ±0.2, ±0.15, ±0.2 (eval).

    Task `wide` (`ballbeam?task=wide`): the ball far off centre on a long beam, r ∈ ±1.2 m, ṙ ∈ ±0.5 m/s,
    α ∈ ±0.3 rad, α̇ ∈ ±0.5 rad/s, 7.5 s (150 steps; the saturated LQR's successes settle by then). At r = 1.2 m
    the ball's gravity torque is 0.59 N·m of the 1 N·m limit, so the LQR's torque saturates, the beam overshoots
    and the ball runs off: it stabilises 69 % of 256 eval starts (seed 1). The MPC expert stabilises 100 % of 48
    of them and of 128 training starts (32 s for those demonstrations, 1 thread), with |α| ≤ 0.85 rad (rolling
    without slip needs a friction coefficient ≥ 2/7 tan α ≈ 0.32) but the ball up to 2.1 m from the centre: the
    model has no beam ends, so read it as a 4.5 m beam (or add a penalty on r to keep it shorter).
    """

    NAME = "ballbeam"
    PARAMS = {"m": (0.05, "kg", "ball mass"), "R": (0.01, "m", "ball radius"), "J": (0.02, "kg m^2", "beam inertia"),
              "g": (9.81, "m/s^2", "gravity"), "u_max": (1.0, "N m", "torque limit")}
    # See the docstring: the ball up to 1.2 m off centre on a long beam, 7.5 s.
    TASKS = {"wide": lambda p: {"x0_box": [1.2, 0.5, 0.3, 0.5], "horizon": 150}}
    DT, SUBSTEPS, HORIZON = 0.05, 2, 200

    def describe(self, p):
        _positive(p, "m", "R", "J", "u_max")
        jb = 0.4 * p["m"] * p["R"] ** 2
        self._c = (p["m"] / (jb / p["R"] ** 2 + p["m"]), p["m"], p["J"] + jb, p["g"])
        return dict(n_x=4, n_u=1, u_low=[-p["u_max"]], u_high=[p["u_max"]], Q=np.diag([10.0, 1.0, 1.0, 0.1]),
                    R=[[1.0]], state_names=["r", "r_dot", "alpha", "alpha_dot"],
                    state_units=["m", "m/s", "rad", "rad/s"], input_names=["torque"],
                    **_box([0.2, 0.1, 0.1, 0.1], [0.3, 0.2, 0.15, 0.2]))

    def drive(self, u):
        return u[..., 0]

    def rhs(self, x, v):
        ratio, m, jj, g = self._c
        r, rd, al, ad = x.unbind(-1)
        rdd = ratio * (r * ad * ad - g * torch.sin(al))
        add = (v - m * r * (2.0 * rd * ad + g * torch.cos(al))) / (m * r * r + jj)
        return torch.stack((rd, rdd, ad, add), -1)


BUILTIN_ODE = {cls.NAME: cls for cls in (Pendulum, CartPole, Quadrotor2D, DCMotor, MassSpringDamper, VanDerPol,
                                         BallBeam)}


def double_integrator(**options) -> LinearPlant:
    """`ẍ = u` (position, velocity), zero-order hold at `dt` = 0.1 s by default; takes the linear plants' options."""
    A, B = np.array([[0.0, 1.0], [0.0, 0.0]]), np.array([[0.0], [1.0]])
    kw = apply_linear_options(A, B, 0.0, {"dt": "0.1", **options}, defaults={"horizon": 100},
                              what="plant 'double_integrator'")
    return LinearPlant(**kw, name="double_integrator", spec=make_spec("double_integrator", options),
                       state_names=["position", "velocity"])


BUILTIN_LINEAR = {"double_integrator": double_integrator}
# The held-out kinds of the optimiser benchmark, as built-in names (`random_linear?seed=3&unstable=1`, `pvtol`).
from .random_linear import BUILTINS as _BENCHMARK_LINEAR  # noqa: E402

BUILTIN_LINEAR.update(_BENCHMARK_LINEAR)
