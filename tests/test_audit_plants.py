"""Issue 15 (reliability) on the plant side: every bad plant input is a one-line `PlantSpecError` with its fix."""

import textwrap
import warnings

import numpy as np
import pytest
import torch

import plants
from plants import PlantSpecError
from plants.errors import PlantRuntimeError

USER_CODE = '''
import numpy as np
import torch
import plants


def _pend(x, u):
    return torch.stack((x[:, 1], -torch.sin(x[:, 0]) + u[:, 0]), -1)


def good(**kw):
    return {"f": _pend, "n_x": 2, "n_u": 1, "dt": 0.05, **kw}


def huge_horizon():
    return good(horizon=10 ** 8)


def huge_substeps():
    return good(substeps=10 ** 9)


def as_plant():
    return plants.load("msd")


def n_x_text():
    return {"f": _pend, "n_x": "two", "n_u": 1, "dt": 0.05}


def n_x_zero():
    return {"f": lambda x, u: x, "n_x": 0, "n_u": 1, "dt": 0.05}


def n_u_zero():
    return {"f": lambda x, u: x, "n_x": 2, "n_u": 0, "dt": 0.05}


def n_x_fraction():
    return {"f": _pend, "n_x": 2.5, "n_u": 1, "dt": 0.05}


def float64_out():
    k = torch.tensor([1.0, -1.0], dtype=torch.float64)  # a 1-D float64 constant promotes float32 inputs
    return good(f=lambda x, u: k * torch.stack((x[:, 1], torch.sin(x[:, 0]) + u[:, 0]), -1))


def numpy_out():
    return good(f=lambda x, u: np.zeros((x.shape[0], 2)))


def int_out():
    return good(f=lambda x, u: torch.zeros(x.shape[0], 2, dtype=torch.long))


def nan_out():
    return good(f=lambda x, u: _pend(x, u) * float("nan"))


def inplace_index():
    def f(x, u):
        x[:, 0] += 1
        return _pend(x, u)
    return good(f=f)


def inplace_mul():
    def f(x, u):
        x.mul_(2)
        return _pend(x, u)
    return good(f=f)


def inplace_u():
    def f(x, u):
        u.clamp_(-1, 1)
        return _pend(x, u)
    return good(f=f)


def raises_later():
    calls = [0]

    def f(x, u):
        calls[0] += x.shape[0] == 3  # rollout calls only (the load-time probe uses other batch sizes)
        if calls[0] > 10:
            raise ValueError("table lookup out of range")
        return _pend(x, u)
    return good(f=f)


def raises_outside():
    def f(x, u):
        if bool((x[:, 0].abs() > 0.5).any()):
            raise ValueError("angle outside the table")
        return _pend(x, u)
    return good(f=f, x0_box=0.1)


def detach_u():
    return good(f=lambda x, u: torch.stack((x[:, 1], -torch.sin(x[:, 0]) + u[:, 0].detach()), -1))


def detach_all():
    return good(f=lambda x, u: _pend(x, u).detach())


def item_u():
    return good(f=lambda x, u: torch.stack((x[:, 1], -torch.sin(x[:, 0]) + u[0, 0].item()), -1))


def numpy_f():
    def f(x, u):
        xn, un = x.numpy(), u.numpy()
        return torch.as_tensor(np.stack((xn[:, 1], -np.sin(xn[:, 0]) + un[:, 0]), -1))
    return good(f=f)


def numpy_detached_f():
    def f(x, u):
        xn, un = x.detach().numpy(), u.detach().numpy()
        return torch.as_tensor(np.stack((xn[:, 1], -np.sin(xn[:, 0]) + un[:, 0]), -1))
    return good(f=f)


def unused_input():
    return good(n_u=2)


def short_names():
    return good(state_names=["theta"])


def string_names():
    return good(state_names="theta")


def long_units():
    return good(state_units=["rad", "rad/s", "s"])


def long_inputs():
    return good(input_names=["torque", "extra"])


def with_std():
    return good(x0_std=0.5)


def with_box():
    return good(x0_box=[0.2, 0.3])


def with_both():
    return good(x0_std=0.5, x0_box=0.5)


def no_init():
    return good()
'''


@pytest.fixture
def userfile(tmp_path):
    path = tmp_path / "userplants.py"
    path.write_text(textwrap.dedent(USER_CODE))
    return str(path)


def _npz(tmp_path, name="sys.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


_AB = dict(A=np.array([[0.0, 1.0], [0.0, 0.0]]), B=np.array([[0.0], [1.0]]))


# 1. horizon and substeps are bounded (and must be positive integers) for every plant kind

@pytest.mark.parametrize("spec,message", [
    ("pendulum?horizon=100000000", r"horizon=100000000 is above the limit of 100000 steps"),
    ("pendulum?substeps=1000000000", r"substeps=1000000000 is above the limit of 1000"),
    ("cartpole?horizon=1e300", r"horizon=1e\+300 is above the limit"),
    ("double_integrator?horizon=100000001", r"horizon=100000001 is above the limit of 100000 steps"),
    ("double_integrator?horizon=2.5", r"horizon must be a positive integer, got 2.5"),
    ("double_integrator?horizon=0", r"horizon must be a positive integer, got 0"),
    ("pendulum?substeps=0", r"substeps must be a positive integer, got 0"),
])
def test_builtin_horizon_and_substeps_are_bounded(spec, message):
    with pytest.raises(PlantSpecError, match=message):
        plants.load(spec)


def test_the_limits_themselves_are_accepted():
    assert plants.load("pendulum?horizon=100000&substeps=1000").horizon == plants.MAX_HORIZON == 100000
    assert plants.load("pendulum?substeps=1000").substeps == plants.MAX_SUBSTEPS == 1000


def test_npz_and_function_horizons_are_bounded(tmp_path, userfile):
    path = _npz(tmp_path, **_AB)
    with pytest.raises(PlantSpecError, match=r"horizon=100000000 is above the limit of 100000 steps"):
        plants.load(path + "?horizon=100000000")
    for spec in (f"{userfile}:good?horizon=1e8", f"{userfile}:huge_horizon", f"{userfile}:as_plant?horizon=1e8"):
        with pytest.raises(PlantSpecError, match=r"horizon=100000000 is above the limit of 100000 steps"):
            plants.load(spec)
    for spec in (f"{userfile}:good?substeps=1e9", f"{userfile}:huge_substeps"):
        with pytest.raises(PlantSpecError, match=r"substeps=1000000000 is above the limit of 1000"):
            plants.load(spec)


def test_direct_constructors_are_bounded():
    with pytest.raises(PlantSpecError, match=r"horizon=1000000000 is above the limit"):
        plants.LinearPlant(np.eye(2), np.ones((2, 1)), dt=0.1, horizon=10 ** 9)
    with pytest.raises(PlantSpecError, match=r"substeps=1000000000 is above the limit"):
        plants.FunctionPlant(lambda x, u: -x, 1, 1, 0.1, substeps=10 ** 9)
    with pytest.raises(PlantSpecError, match=r"substeps must be a positive integer, got inf"):
        plants.Pendulum(substeps=float("inf"))


def test_rollout_horizon_is_bounded():
    p = plants.load("double_integrator")
    policy = plants.lqr(p).policy
    with pytest.raises(PlantSpecError, match=r"horizon=100000000 is above the limit of 100000 steps"):
        plants.rollout(p, policy, p.sample_initial(2), horizon=10 ** 8)
    with pytest.raises(PlantSpecError, match=r"horizon must be a positive integer, got 2.5"):
        plants.rollout(p, policy, p.sample_initial(2), horizon=2.5)
    assert plants.rollout(p, policy, p.sample_initial(2), horizon=0).states.shape == (1, 2, 2)


# 2. .npz: complex arrays, a dt that is not one number, NaN/inf entries, non-numeric arrays, empty plants

@pytest.mark.parametrize("arrays,message", [
    (dict(A=_AB["A"] + 0j, B=_AB["B"]), r"array 'A' in .* is complex"),
    (dict(A=_AB["A"], B=_AB["B"], Q=np.eye(2) * (1 + 1j)), r"array 'Q' in .* is complex"),
    (dict(A=_AB["A"], B=_AB["B"], x0_std=np.array([1.0 + 0j, 1.0])), r"array 'x0_std' in .* is complex"),
    (dict(A=_AB["A"], B=_AB["B"], dt=[0.1, 0.2]), r"dt in .* must be one number .*got 2 values"),
    (dict(A=_AB["A"], B=_AB["B"], R=[[np.inf]]), r"array 'R' in .* has NaN or infinite entries"),
    (dict(A=_AB["A"], B=_AB["B"], u_max=[np.nan]), r"array 'u_max' in .* has NaN or infinite entries"),
    (dict(A=np.array([["1", "0"], ["0", "1"]]), B=_AB["B"]), r"array 'A' in .* holds text"),
    (dict(A=np.zeros((0, 0)), B=np.zeros((0, 0))), r"A is 0x0: a plant needs at least one state"),
    (dict(A=np.eye(2), B=np.zeros((2, 0))), r"B has no columns: a plant needs at least one input"),
])
def test_bad_npz_arrays(tmp_path, arrays, message):
    path = _npz(tmp_path, **arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy ComplexWarning on the way
        with pytest.raises(PlantSpecError, match=message):
            plants.load(path)


def test_complex_matrices_given_directly():
    with pytest.raises(PlantSpecError, match=r"A is complex"):
        plants.LinearPlant(np.eye(2) + 0j, np.ones((2, 1)), dt=0.1)
    with pytest.raises(PlantSpecError, match=r"x0_std is complex"):
        plants.LinearPlant(np.eye(2), np.ones((2, 1)), dt=0.1, x0_std=[1j, 1.0])


# 3. user function plants: dimensions that are not positive integers, empty plants

@pytest.mark.parametrize("func,message", [
    ("n_x_text", r"n_x must be a positive integer, got 'two'"),
    ("n_x_text?q=1", r"n_x must be a positive integer, got 'two'"),
    ("n_x_zero", r"n_x must be a positive integer, got 0"),
    ("n_u_zero", r"n_u must be a positive integer, got 0"),
    ("n_x_fraction", r"n_x must be a positive integer, got 2.5"),
])
def test_function_plant_dimensions(userfile, func, message):
    with pytest.raises(PlantSpecError, match=message):
        plants.load(f"{userfile}:{func}")


def test_function_plant_dt_must_be_a_number():
    with pytest.raises(PlantSpecError, match=r"dt must be > 0 \(one finite number\), got 'fast'"):
        plants.FunctionPlant(lambda x, u: -x, 1, 1, "fast")


# 4. the load-time probe of f: dtype, type, shape, NaN

def test_float64_output_is_cast_back_with_one_warning(userfile):
    with pytest.warns(UserWarning, match=r"user plant '.*userplants.py:float64_out': f\(x, u\) returns float64 "
                                         r"for float32 x"):
        p = plants.load(f"{userfile}:float64_out")
    policy = torch.nn.Linear(2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once at load time, not at every step
        roll = plants.rollout(p, policy, p.sample_initial(4), horizon=5)
        roll.cost.sum().backward()
    assert roll.states.dtype == torch.float32 and policy.weight.grad is not None
    assert p.step(torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)).dtype == \
        torch.float64


@pytest.mark.parametrize("func,message", [
    ("numpy_out", r"f\(x, u\) returned ndarray; it must return a torch tensor"),
    ("int_out", r"f\(x, u\) returned int64 for float64 x; it must return floating-point"),
    ("nan_out", r"f\(x_eq, u_eq\) has NaN or infinite entries"),
])
def test_probe_rejects_bad_outputs(userfile, func, message):
    with pytest.raises(PlantSpecError, match=message):
        plants.load(f"{userfile}:{func}")


# 5. f must not modify its inputs in place

@pytest.mark.parametrize("func,arg", [("inplace_index", "x"), ("inplace_mul", "x"), ("inplace_u", "u")])
def test_in_place_modification_is_refused(userfile, func, arg):
    with pytest.raises(PlantSpecError, match=rf"f modifies its input {arg} in place; return a new tensor"):
        plants.load(f"{userfile}:{func}")


# 6. an exception inside user code mid-rollout

def test_user_exception_mid_rollout_names_the_plant_and_step(userfile):
    p = plants.load(f"{userfile}:raises_later")
    with pytest.raises(PlantRuntimeError, match=r"user plant '/.*userplants.py:raises_later' raised ValueError: "
                                                r"table lookup out of range at step 2") as info:
        plants.rollout(p, lambda x: torch.zeros(x.shape[0], 1), p.sample_initial(3), horizon=20)
    assert isinstance(info.value.__cause__, ValueError) and isinstance(info.value, PlantSpecError)


def test_user_exception_in_a_gym_episode_names_the_step(userfile):
    env = plants.gym.make(f"{userfile}:raises_outside")
    env.reset(seed=0)
    with pytest.raises(PlantRuntimeError, match=r"raised ValueError: angle outside the table at step \d+") as info:
        for _ in range(100):
            env.step(np.array([2.0], dtype=np.float32))
    assert info.value.step >= 5 and isinstance(info.value.__cause__, ValueError)


def test_numpy_on_a_graph_tensor_mid_rollout_says_what_to_change(userfile):
    p = plants.load(f"{userfile}:numpy_f")
    policy = torch.nn.Linear(2, 1)
    with pytest.raises(PlantRuntimeError, match=r"raised RuntimeError: Can't call numpy\(\).* at step 0; plant step is "
                                                r"not differentiable in x/u .*write f with torch operations"):
        plants.rollout(p, policy, p.sample_initial(3), horizon=5)


def test_builtin_errors_are_not_wrapped():
    p = plants.load("pendulum")
    with pytest.raises(ValueError, match=r"pendulum.step expects x") as info:
        p.step(torch.zeros(2, 3), torch.zeros(2, 1))
    assert not isinstance(info.value, PlantRuntimeError)


# 7. a plant whose step autograd cannot differentiate is named as such (not as "not stabilisable")

@pytest.mark.parametrize("func,which", [("detach_u", "u"), ("detach_all", "x"), ("item_u", "u"),
                                        ("numpy_f", "x"), ("numpy_detached_f", "x")])
def test_non_differentiable_plant_is_named(userfile, func, which):
    p = plants.load(f"{userfile}:{func}")
    message = (rf"plant step is not differentiable in {which}.*numpy, \.item\(\) or \.detach\(\).*write f with torch "
               r"operations so lipnet can linearise and train through it")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no jacrev fallback noise before the real message
        with pytest.raises(PlantSpecError, match=message):
            plants.linearize(p)
        with pytest.raises(PlantSpecError, match=message):
            plants.lqr(p)


def test_an_input_that_truly_does_nothing_is_not_flagged(userfile):
    p = plants.load(f"{userfile}:unused_input")
    sys = plants.linearize(p)
    assert np.all(np.asarray(sys.B)[:, 1] == 0) and np.any(np.asarray(sys.B)[:, 0] != 0)


# 8. names of the wrong length are refused when the plant is built

@pytest.mark.parametrize("func,message", [
    ("short_names", r"state_names has 1 entries but the plant has n_x = 2"),
    ("string_names", r"state_names must be a list of strings, one per state"),
    ("long_units", r"state_units has 3 entries but the plant has n_x = 2"),
    ("long_inputs", r"input_names has 2 entries but the plant has n_u = 1"),
])
def test_names_of_wrong_length(userfile, func, message):
    with pytest.raises(PlantSpecError, match=message):
        plants.load(f"{userfile}:{func}")


def test_names_of_wrong_length_linear_and_npz(tmp_path):
    with pytest.raises(PlantSpecError, match=r"input_names has 2 entries but the plant has n_u = 1"):
        plants.LinearPlant(np.eye(2), np.ones((2, 1)), dt=0.1, input_names=["a", "b"])
    path = _npz(tmp_path, **_AB, state_units=np.array(["m", "m/s", "s"]))
    with pytest.raises(PlantSpecError, match=r"state_units has 3 entries but the plant has n_x = 2"):
        plants.load(path)


# 9. x0_std is a Gaussian std for every plant kind; x0_box is a uniform box for every kind

def test_x0_std_and_x0_box_mean_the_same_everywhere(tmp_path, userfile):
    fs = plants.load(f"{userfile}:with_std")
    assert fs.init_train.kind == "normal" and fs.init_train.scale.tolist() == [0.5, 0.5]
    assert fs.init_eval.kind == "normal" and fs.init_eval.scale.tolist() == [0.75, 0.75]
    fb = plants.load(f"{userfile}:with_box")
    assert fb.init_train.kind == "uniform" and fb.init_train.scale.tolist() == [0.2, 0.3]
    default = plants.load(f"{userfile}:no_init").init_train  # function plants keep their default ±1 box
    assert default.kind == "uniform" and default.scale.tolist() == [1.0, 1.0]
    lin = plants.load(_npz(tmp_path, **_AB, x0_std=0.5))
    assert lin.init_train.kind == "normal" and lin.init_train.scale.tolist() == [0.5, 0.5]
    path = _npz(tmp_path, "box.npz", **_AB, x0_box=[0.2, 0.3])
    lb = plants.load(path)
    assert lb.init_train.kind == "uniform" and lb.init_train.scale.tolist() == [0.2, 0.3]
    di = plants.load("double_integrator?x0_box=0.3")
    assert di.init_train.kind == "uniform" and di.init_eval.scale.tolist() == pytest.approx([0.45, 0.45])
    over = plants.load(path + "?x0_std=0.1")  # an option replaces the file's initial-state distribution
    assert over.init_train.kind == "normal" and over.init_train.scale.tolist() == [0.1, 0.1]
    spec = plants.save_npz(lb, str(tmp_path / "again.npz"))
    again = plants.load(spec)
    assert again.init_train.kind == "uniform" and again.init_train.scale.tolist() == [0.2, 0.3]
    assert plants.load("pendulum").init_train.kind == "uniform"  # built-ins unchanged


def test_x0_std_and_x0_box_together_are_refused(tmp_path, userfile):
    with pytest.raises(PlantSpecError, match=r"give x0_std \(Gaussian std\) or x0_box \(uniform box half-width\), "
                                             r"not both"):
        plants.load(f"{userfile}:with_both")
    with pytest.raises(PlantSpecError, match=r"not both"):
        plants.load("double_integrator?x0_std=1&x0_box=1")
    with pytest.raises(PlantSpecError, match=r"not both"):
        plants.load(_npz(tmp_path, **_AB, x0_std=1.0, x0_box=1.0))


# 10. file specs carry absolute paths, so the plant reloads from any working directory

def test_file_specs_are_absolute(tmp_path, monkeypatch):
    sub, other = tmp_path / "models", tmp_path / "elsewhere"
    sub.mkdir()
    other.mkdir()
    np.savez(sub / "sys.npz", A=np.array([[1.0, 0.1], [0.0, 1.0]]), B=np.array([[0.0], [0.1]]), dt=0.1)
    (sub / "userplants.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.chdir(tmp_path)
    npz = plants.load("models/sys.npz?horizon=30")
    fn = plants.load("models/userplants.py:good?substeps=2")
    assert npz.spec == f"{sub / 'sys.npz'}?horizon=30"
    assert fn.spec == f"{sub / 'userplants.py'}:good?substeps=2"
    lin = plants.LinearPlant(np.eye(2), np.ones((2, 1)), dt=0.1)
    assert plants.save_npz(lin, "models/saved.npz") == str(sub / "saved.npz")
    monkeypatch.chdir(other)
    np.savez("sys.npz", A=np.eye(2) * 5, B=np.ones((2, 1)), dt=0.1)  # a different file of the same name here
    again = plants.load(npz.spec)
    np.testing.assert_array_equal(again.A, npz.A)
    assert again.horizon == 30 and plants.load(fn.spec).substeps == 2
    assert plants.load(str(sub / "saved.npz")).n_x == 2


# 11. Gymnasium ids

def test_gymnasium_ids_are_registered_and_pass_the_checker():
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    import plants.gym

    for name in plants.builtin_names():
        assert plants.gym.env_id(name) in gymnasium.registry
    env = gymnasium.make("lipnet/Pendulum-v0")
    assert env.unwrapped.plant.name == "pendulum"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the checker warns about unbounded Boxes, which are intended
        check_env(env, skip_render_check=True)
    generic = gymnasium.make("lipnet/Plant-v0", spec="msd?k=2", split="eval")
    assert generic.unwrapped.plant.params["k"] == 2.0 and generic.unwrapped.split == "eval"
    assert gymnasium.make("lipnet/Quadrotor2D-v0").action_space.shape == (2,)
    assert gymnasium.make("lipnet/DoubleIntegrator-v0", horizon=7).unwrapped.plant.horizon == 7


def test_gym_wrong_size_action_is_a_clear_error():
    env = plants.gym.make("quadrotor2d")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must have shape \(2,\) \(n_u = 2 inputs: thrust1, thrust2\), "
                                         r"got shape \(3,\)"):
        env.step(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"action must be numbers"):
        env.step(["a", "b"])
    pend = plants.gym.make("pendulum")
    pend.reset(seed=0)
    pend.step(0.5)  # a scalar is fine for a single input
