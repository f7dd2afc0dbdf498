"""The runtime factory `export.session`: call paths, shapes, providers and fallback, bad models, no torch needed.

Models here are written with `onnx.helper` (no torch export), so these tests are fast.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export import runtime
from export.errors import InvalidModelError
from export.metadata import read_metadata
from export.reference import numpy_policy
from export.runtime import ModelError, ProviderError, ProviderFallbackWarning, provider_chain, session

ROOT = Path(__file__).resolve().parents[1]


def _mlp(n_x=4, n_h=8, n_u=2, seed=0, input_name="state", in_shape=None, meta=None):
    """A tiny `tanh(W2 relu(W1 x + b1) + b2)` controller graph and its weights."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(size=(n_h, n_x)).astype(np.float32), rng.normal(size=n_h).astype(np.float32)
    w2, b2 = rng.normal(size=(n_u, n_h)).astype(np.float32), rng.normal(size=n_u).astype(np.float32)
    nodes = [helper.make_node("Gemm", [input_name, "w1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["v"], transB=1),
             helper.make_node("Tanh", ["v"], ["action"])]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    graph = helper.make_graph(nodes, "controller",
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                                             in_shape or ["batch", n_x])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", n_u])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    for k, v in (meta or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = k, json.dumps(v)
    return model, (w1, b1, w2, b2)


def _forward(params, x):
    w1, b1, w2, b2 = (p.astype(np.float64) for p in params)
    return np.tanh(np.maximum(np.atleast_2d(x) @ w1.T + b1, 0) @ w2.T + b2)


@pytest.fixture
def model_file(tmp_path):
    model, params = _mlp(meta={"lipnet.lipschitz_upper": 1.25, "lipnet.plant": "pendulum"})
    path = tmp_path / "c.onnx"
    onnx.save(model, path)
    return path, params


def test_session_matches_the_formula_on_every_call_path(model_file):
    path, params = model_file
    rng = np.random.default_rng(1)
    states = rng.normal(size=(50, 4)).astype(np.float32)
    expected = _forward(params, states)
    for path_name in ("auto", "iobinding", "run", "measure"):
        s = session(path, call_path=path_name)
        assert (s.n_x, s.n_u, s.provider, s.fallback_reason) == (4, 2, "cpu", None)
        got = np.stack([s(x) for x in states])
        assert got.dtype == np.float32 and got.shape == (50, 2)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_array_equal(got, s.run_batch(states))
    assert session(path).call_path in ("iobinding-c", "iobinding")


def test_call_accepts_one_state_in_any_layout_and_returns_fresh_arrays(model_file):
    path, params = model_file
    s = session(path)
    x = np.array([0.1, -0.2, 0.3, 0.4])
    a = s(x)  # float64 input
    np.testing.assert_allclose(a, _forward(params, x)[0], atol=1e-5)
    np.testing.assert_array_equal(s(x.reshape(1, 4).astype(np.float32)), a)
    np.testing.assert_array_equal(s(list(x)), a)
    b = s(-x)
    assert not np.array_equal(a, b)
    np.testing.assert_allclose(a, _forward(params, x)[0], atol=1e-5)  # `a` was not overwritten by the next call


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((2, 4)), np.zeros(5), np.float32(1.0)])
def test_call_rejects_wrong_shapes(model_file, bad):
    s = session(model_file[0])
    with pytest.raises(ValueError, match="expected one state of 4 values"):
        s(bad)


def test_run_batch_rejects_wrong_shapes(model_file):
    s = session(model_file[0])
    with pytest.raises(ValueError, match=r"\[batch, 4\]"):
        s.run_batch(np.zeros((3, 5)))
    assert s.run_batch(np.zeros((0, 4))).shape == (0, 2)


def test_metadata_is_decoded(model_file):
    s = session(model_file[0])
    assert s.metadata == {"lipnet.lipschitz_upper": 1.25, "lipnet.plant": "pendulum"}
    assert read_metadata(model_file[0]) == s.metadata


@pytest.mark.parametrize("provider, ep", [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")])
def test_missing_gpu_provider_falls_back_with_a_clear_message(model_file, provider, ep):
    import onnxruntime as ort

    if ep in ort.get_available_providers():
        pytest.skip(f"{ep} is installed here; the fallback path is not taken")
    with pytest.warns(ProviderFallbackWarning, match=f"{provider} requested.*no {ep}.*running on cpu"):
        s = session(model_file[0], provider=provider)
    assert s.provider == "cpu" and s.requested_provider == provider
    assert ep in s.fallback_reason and "onnxruntime-gpu" in s.fallback_reason
    np.testing.assert_allclose(s(np.zeros(4)), _forward(model_file[1], np.zeros(4))[0], atol=1e-5)
    with pytest.raises(ProviderError, match=ep):
        session(model_file[0], provider=provider, strict=True)


def test_the_device_agent_offers_the_runtime_providers():
    from hil.device import PROVIDERS

    assert PROVIDERS == tuple(runtime.PROVIDERS)


def test_provider_chain_options(tmp_path):
    assert [p for p, _ in provider_chain("cpu")] == ["CPUExecutionProvider"]
    assert [p for p, _ in provider_chain("cuda", device_id=1)] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_chain("cuda", device_id=1)[0][1]["device_id"] == "1"
    chain = provider_chain("trt", model_path=tmp_path / "ctl.onnx", n_x=4, max_batch=64)
    assert [p for p, _ in chain] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = chain[0][1]
    assert trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "ctl.trt-cache")
    assert trt["trt_profile_min_shapes"] == "state:1x4" and trt["trt_profile_max_shapes"] == "state:64x4"
    custom = provider_chain("tensorrt", trt_cache_dir=tmp_path / "c")[0][1]
    assert custom["trt_engine_cache_path"] == str(tmp_path / "c")
    with pytest.raises(ValueError, match="unknown provider 'npu'"):
        provider_chain("npu")
    with pytest.raises(ValueError, match="unknown provider"):
        session(tmp_path / "ctl.onnx", provider="npu")


def test_corrupted_and_truncated_models_give_clear_errors(model_file, tmp_path):
    good = model_file[0].read_bytes()
    corrupted = tmp_path / "corrupted.onnx"
    corrupted.write_bytes(b"\x08\x07garbage" + bytes(range(256)) * 4)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    for bad in (corrupted, truncated):
        with pytest.raises(ModelError, match="not a loadable ONNX model"):
            session(bad)
        with pytest.raises(InvalidModelError, match="truncated or corrupted|no ONNX graph"):
            read_metadata(bad)
        with pytest.raises(InvalidModelError):
            numpy_policy(bad)
    with pytest.raises(ModelError, match="no ONNX model at"):
        session(tmp_path / "missing.onnx")


def test_wrong_input_name_or_shape_is_refused(tmp_path):
    cases = {"x.onnx": (dict(input_name="x"), "model inputs are \\['x'\\]"),
             "rank3.onnx": (dict(in_shape=["batch", 4, 1]), "shape"),
             "fixed3.onnx": (dict(in_shape=[3, 4]), "fixed batch of 3"),
             "dynamic_n.onnx": (dict(in_shape=["batch", "n"]), "fixed n")}
    for name, (kwargs, message) in cases.items():
        model, _ = _mlp(**kwargs)
        path = tmp_path / name
        onnx.save(model, path)
        with pytest.raises(ModelError, match=message):
            session(path)
    with pytest.raises(InvalidModelError, match="'state'"):
        numpy_policy(tmp_path / "x.onnx")


def test_numpy_policy_equals_runtime_and_refuses_unknown_ops(model_file, tmp_path):
    path, params = model_file
    states = np.random.default_rng(2).normal(size=(20, 4)).astype(np.float32)
    np.testing.assert_allclose(numpy_policy(path).run_batch(states), session(path).run_batch(states), atol=1e-6)
    model, _ = _mlp()
    model.graph.node[1].op_type = "Elu"
    onnx.save(model, tmp_path / "elu.onnx")
    with pytest.raises(InvalidModelError, match="does not implement ai.onnx::Elu"):
        numpy_policy(tmp_path / "elu.onnx")


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_runtime_imports_and_runs_without_torch_onnx_or_lipnet(model_file):
    # On a board the device agent has onnxruntime and numpy only: make torch, onnx and lipnet unimportable.
    code = f"""
        import sys
        for name in ("torch", "onnx", "lipnet", "scipy"):
            sys.modules[name] = None
        import numpy as np
        import export
        from export import runtime
        s = export.session({str(model_file[0])!r})
        print(s.n_x, s.n_u, s.provider, s(np.zeros(4)).shape)
        heavy = [m for m in ("torch", "onnx", "lipnet", "scipy") if sys.modules.get(m) is not None]
        print("heavy:", heavy)
    """
    out = _run_python(code)
    assert out.returncode == 0, out.stderr
    assert "4 2 cpu (2,)" in out.stdout and "heavy: []" in out.stdout


def test_export_package_is_lazy_and_metadata_readers_need_no_torch(model_file):
    code = f"""
        import sys
        import export
        assert "torch" not in sys.modules, "import export pulled in torch"
        sys.modules["torch"] = None
        meta = export.read_metadata({str(model_file[0])!r})
        pol = export.numpy_policy({str(model_file[0])!r})
        print(meta["lipnet.plant"], pol.n_x, pol.n_u)
        try:
            export.export_controller
        except ImportError:
            print("exporter needs torch")
    """
    out = _run_python(code)
    assert out.returncode == 0, out.stderr
    assert "pendulum 4 2" in out.stdout and "exporter needs torch" in out.stdout


def test_runtime_module_imports_only_allowed_packages():
    source = (ROOT / "export" / "runtime.py").read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines()
                if line.startswith(("import ", "from ")) and not line.startswith("from __future__")}
    assert imported <= {"hashlib", "json", "os", "tempfile", "time", "warnings", "pathlib", "numpy", "onnxruntime"}, \
        imported
    assert runtime.INPUT_NAME == "state" and runtime.OUTPUT_NAME == "action"


def test_foreign_model_with_external_weights_still_loads(tmp_path):
    # session() reads the file once and loads those bytes: external weights must still resolve beside the file.
    model, params = _mlp(n_h=64)
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, location="ext.data", size_threshold=16)
    assert (tmp_path / "ext.data").exists()
    s = session(path)
    assert s.integrity == runtime.UNVERIFIED
    np.testing.assert_allclose(s(np.ones(4)), _forward(params, np.ones(4))[0], atol=1e-5)
