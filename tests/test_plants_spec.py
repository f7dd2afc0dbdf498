"""`plants.load`: every spec form, options, round trips, and each bad spec's message."""

import textwrap

import control
import numpy as np
import pytest
import torch

import plants
from plants import PlantSpecError


@pytest.fixture
def userfile(tmp_path):
    path = tmp_path / "myplant.py"
    path.write_text(textwrap.dedent('''
        import control
        import torch
        import plants

        def lti(wn=2.0):
            return control.tf([wn ** 2], [1.0, 0.4 * wn, wn ** 2])

        def discrete():
            return control.ss([[1.0, 0.1], [0.0, 1.0]], [[0.0], [0.1]], [[1.0, 0.0]], 0, 0.1)

        def plant():
            return plants.load("msd")

        def dyn(k=1.0):
            def f(x, u):
                return torch.stack((x[:, 1], -k * torch.sin(x[:, 0]) + u[:, 0]), -1)
            return {"f": f, "n_x": 2, "n_u": 1, "dt": 0.05, "u_high": [2.0], "u_low": [-2.0], "x0_std": 0.5}

        def as_tuple():
            return (lambda x, u: -x + u, 2, 2, 0.1)

        def wrong():
            return 42

        def bad_shape():
            return {"f": lambda x, u: x[:, :1], "n_x": 2, "n_u": 1, "dt": 0.1}

        def nan_f():
            return {"f": lambda x, u: x * float("nan"), "n_x": 2, "n_u": 1, "dt": 0.1}

        def short_tuple():
            return (lambda x, u: x, 2, 1)

        def missing_key():
            return {"f": lambda x, u: x, "n_x": 2}

        def raises():
            raise RuntimeError("boom")
    '''))
    return path


def _npz(tmp_path, name="sys.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def test_builtin_names_listed():
    names = plants.builtin_names()
    for n in ("pendulum", "cartpole", "quadrotor2d", "dcmotor", "msd", "vanderpol", "ballbeam", "double_integrator"):
        assert n in names


def test_npz_continuous_is_discretised_by_zoh(tmp_path):
    A, B = np.array([[0.0, 1.0], [2.0, -0.5]]), np.array([[0.0], [1.0]])
    path = _npz(tmp_path, A=A, B=B, Q=np.diag([2.0, 1.0]), R=[[0.5]], x0_std=[0.1, 0.2], u_max=3.0)
    p = plants.load(path + "?dt=0.02")
    ref = control.c2d(control.ss(A, B, np.eye(2), 0), 0.02, "zoh")
    np.testing.assert_allclose(p.A, ref.A, atol=1e-12)
    np.testing.assert_allclose(p.B, ref.B, atol=1e-12)
    assert p.dt == 0.02 and p.u_high.tolist() == [3.0] and p.u_low.tolist() == [-3.0]
    np.testing.assert_array_equal(p.Q, np.diag([2.0, 1.0]))
    np.testing.assert_array_equal(p.init_train.scale, [0.1, 0.2])
    assert p.init_train.kind == "normal" and p.name == "sys"
    assert p.spec == path + "?dt=0.02"
    again = plants.load(p.spec)
    np.testing.assert_array_equal(again.A, p.A)
    assert plants.load(path).dt == plants.DEFAULT_DT
    p = plants.load(path, dt=0.1, u_max=[1.5], r=2.0)
    assert p.u_high.tolist() == [1.5] and p.R.tolist() == [[2.0]] and plants.load(p.spec).dt == 0.1


def test_save_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    p = plants.LinearPlant(rng.normal(size=(3, 3)), rng.normal(size=(3, 2)), dt=0.05, Q=np.diag([1.0, 2, 3]),
                           R=np.eye(2) * 0.5, x0_std=[0.1, 0.2, 0.3], u_max=[1.0, 2.0], horizon=50)
    assert p.spec == ""
    spec = plants.save_npz(p, str(tmp_path / "lin.npz"))
    assert spec == str(tmp_path / "lin.npz") + "?horizon=50" and p.spec == spec
    q = plants.load(spec)
    for key in ("A", "B", "C", "D", "Q", "R", "u_high", "u_low"):
        np.testing.assert_array_equal(getattr(q, key), getattr(p, key))
    assert (q.dt, q.horizon, q.state_names) == (p.dt, p.horizon, p.state_names)
    np.testing.assert_array_equal(q.init_train.scale, p.init_train.scale)
    with pytest.raises(PlantSpecError, match="must end in .npz"):
        plants.save_npz(p, str(tmp_path / "lin.mat"))


def test_npz_discrete_and_output_matrices(tmp_path):
    path = _npz(tmp_path, A=np.eye(2), B=[[0.0], [1.0]], C=[[1.0, 0.0]], D=[[0.0]], dt=0.1,
                state_names=np.array(["pos", "vel"]))
    p = plants.load(path)
    assert p.dt == 0.1 and p.C.shape == (1, 2) and p.state_names == ["pos", "vel"]
    np.testing.assert_array_equal(p.A, np.eye(2))


def test_function_specs(userfile, monkeypatch):
    p = plants.load(f"{userfile}:lti?wn=3&dt=0.01")
    assert isinstance(p, plants.LinearPlant) and p.dt == 0.01 and p.n_x == 2
    assert p.spec == f"{userfile}:lti?dt=0.01&wn=3"
    assert np.array_equal(plants.load(p.spec).A, p.A)
    ref = control.c2d(control.ss(control.tf([9.0], [1.0, 1.2, 9.0])), 0.01)
    np.testing.assert_allclose(np.sort(np.abs(np.linalg.eigvals(p.A))), np.sort(np.abs(np.linalg.eigvals(ref.A))))
    assert plants.load(f"{userfile}:discrete").dt == 0.1
    q = plants.load(f"{userfile}:plant?horizon=7")
    assert q.horizon == 7 and q.spec == f"{userfile}:plant?horizon=7"
    d = plants.load(f"{userfile}:dyn?k=2&substeps=4")
    assert isinstance(d, plants.FunctionPlant) and d.substeps == 4 and d.u_high.tolist() == [2.0]
    x = torch.tensor([[0.3, 0.0]], dtype=torch.float64)
    # first-order check of the user's f through RK4: θ̈ = −2 sin θ
    v = d.step(x, torch.zeros(1, 1, dtype=torch.float64))[0, 1].item()
    assert v == pytest.approx(-2 * np.sin(0.3) * 0.05, rel=1e-3)
    L = plants.lqr(d)
    assert L.K.shape == (1, 2)
    t = plants.load(f"{userfile}:as_tuple")
    assert (t.n_x, t.n_u, t.dt) == (2, 2, 0.1)
    monkeypatch.syspath_prepend(str(userfile.parent))
    m = plants.load("myplant:lti")
    assert m.n_x == 2 and m.spec == "myplant:lti"


def test_gym_env(userfile):
    env = plants.gym.make("cartpole")
    obs, info = env.reset(seed=0)
    assert env.observation_space.shape == (4,) and env.action_space.shape == (1,)
    assert env.action_space.high.tolist() == [10.0] and env.observation_space.contains(obs)
    obs2, reward, terminated, truncated, _ = env.step(np.array([1.0], dtype=np.float32))
    assert obs2.dtype == np.float32 and reward < 0 and not terminated and not truncated
    steps = 1
    while not truncated:
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        if terminated:
            break
    assert terminated or steps == env.unwrapped.plant.horizon
    di = plants.gym.make("double_integrator")
    assert np.isinf(di.action_space.high).all()


BAD = [
    ("pendulm", r"unknown plant 'pendulm'; valid: a built-in name \(ballbeam, cartpole, .*pendulum"),
    ("cartpole?mass=2", r"unknown option 'mass' for plant 'cartpole'; valid options: .*M, .*m,"),
    ("cartpole?m=abc", r"option m='abc' is not a number"),
    ("cartpole?m=nan", r"option m='nan' is not finite"),
    ("cartpole?m", r"option 'm' is not of the form key=value"),
    ("cartpole?m=-1", r"parameters must be > 0: m=-1.0"),
    ("cartpole?dt=0", r"dt must be > 0"),
    ("cartpole?substeps=1.5", r"substeps must be a positive integer"),
    ("cartpole?q=1,2", r"option q has 2 values; give 1 or 4"),
    ("double_integrator?x0_std=1,2,3", r"x0_std must be 1 or 2"),
    ("double_integrator?gain=2", r"unknown option 'gain' for plant 'double_integrator'; valid options: dt, horizon"),
    ("missing/file.npz", r"plant file 'missing/file.npz' not found"),
    ("some/dir/plant.mat", r"a file spec must end in .npz"),
    ("no_such_module_xyz:f", r"cannot import module 'no_such_module_xyz'"),
    ("plants:nothing_here", r"'plants' has no function 'nothing_here'; callables found: .*load"),
    ("nofile.py:f", r"plant file 'nofile.py' not found"),
    ("plants:", r"is not of the form 'package.module:function'"),
    ("", r"a plant spec must be a non-empty string"),
    (" cartpole ?m=0.1&m=0.2", r"option 'm' is given twice"),
]


@pytest.mark.parametrize("spec,message", BAD)
def test_bad_specs(spec, message):
    with pytest.raises(PlantSpecError, match=message):
        plants.load(spec)


def test_bad_option_for_loaded_plant_lists_valid_keys():
    with pytest.raises(PlantSpecError, match=r"valid options: .*substeps.*u_max"):
        plants.load("pendulum", torque=3)
    assert issubclass(PlantSpecError, ValueError)


@pytest.mark.parametrize("arrays,message", [
    (dict(A=np.eye(2)), r"has no array 'B' \(has: A\); an .npz plant needs A and B"),
    (dict(A=np.eye(2), B=np.ones((3, 1))), r"B has 3 rows but A is 2x2; B must be \[2, n_u\]"),
    (dict(A=np.ones((2, 3)), B=np.ones((2, 1))), r"A must be square, got shape \(2, 3\)"),
    (dict(A=np.array([[1.0, np.nan], [0, 1]]), B=np.ones((2, 1))), r"array 'A' in .* has NaN or infinite entries"),
    (dict(A=np.eye(2), B=np.ones((2, 1)), Q=np.eye(3)), r"Q has shape \(3, 3\), expected \(2, 2\)"),
    (dict(A=np.eye(2), B=np.ones((2, 1)), extra=np.eye(2)), r"unknown option 'extra' for arrays in .*valid options: "
                                                             r"A, B, C, D, Q, R"),
    (dict(A=np.eye(2), B=np.ones((2, 1)), dt=-1.0), r"dt in .* is -1.0; it must be > 0 \(discrete\) or 0/absent"),
    (dict(A=np.eye(2), B=np.ones((2, 1)), u_max=[1.0, -2.0]), r"u_max must be 1 or 1 values > 0"),
])
def test_bad_npz(tmp_path, arrays, message):
    with pytest.raises(PlantSpecError, match=message):
        plants.load(_npz(tmp_path, **arrays))


def test_npz_discrete_rejects_other_rate(tmp_path):
    path = _npz(tmp_path, A=np.eye(2), B=np.ones((2, 1)), dt=0.1)
    with pytest.raises(PlantSpecError, match=r"discrete with dt=0.1; option dt=0.2 cannot resample"):
        plants.load(path + "?dt=0.2")


def test_unreadable_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("not a zip")
    with pytest.raises(PlantSpecError, match=r"cannot read .*junk.npz' as .npz"):
        plants.load(str(path))


@pytest.mark.parametrize("func,message", [
    ("wrong", r"returned int; expected a control.StateSpace or TransferFunction, a plants.Plant, a dict"),
    ("bad_shape", r"f\(x, u\) must return a tensor \[batch, n_x\] = \[2, 2\], got \(2, 1\)"),
    ("nan_f", r"f\(x_eq, u_eq\) has NaN or infinite entries"),
    ("short_tuple", r"returned a tuple of 3 items; expected \(f, n_x, n_u, dt\)"),
    ("missing_key", r"returned a dict without n_u, dt; it needs f, n_x, n_u, dt"),
    ("raises", r"raised RuntimeError: boom"),
    ("lti?wm=2", r"unknown option 'wm' for the plant returned by .*valid options: dt, horizon, q, r, u_max, x0_box, "
                 r"x0_std"),
    ("plant?dt=0.1", r"unknown option 'dt' for the plant returned by .*valid options: horizon"),
    ("nothing", r"has no function 'nothing'; callables found: as_tuple, bad_shape"),
])
def test_bad_function_specs(userfile, func, message):
    with pytest.raises(PlantSpecError, match=message):
        plants.load(f"{userfile}:{func}")


def test_bad_arrays_direct():
    with pytest.raises(PlantSpecError, match=r"B has 3 rows but A is 2x2"):
        plants.LinearPlant(np.eye(2), np.ones((3, 1)), dt=0.1)
    with pytest.raises(PlantSpecError, match=r"A has NaN or infinite entries"):
        plants.LinearPlant([[np.nan]], [[1.0]], dt=0.1)
    with pytest.raises(PlantSpecError, match=r"dt must be > 0 for a discrete plant"):
        plants.LinearPlant(np.eye(1), np.ones((1, 1)), dt=0)
    with pytest.raises(PlantSpecError, match=r"expected a control.StateSpace or control.TransferFunction, got list"):
        plants.from_lti([[1.0]])
