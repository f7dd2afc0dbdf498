"""onnxruntime session factory for an exported lipnet controller: one state in, one action out, in microseconds.

This module imports only onnxruntime, numpy and the standard library, so that the hardware-in-the-loop device
agent runs it on a board without torch (it can even be copied there as a single file).

The call path of `ControllerSession.__call__` was chosen by measurement (benchmarks/latency.py, ORT 1.32,
batch 1, one thread): an IOBinding whose input and output OrtValues wrap preallocated numpy buffers, run
through the binding's C-level entry point, costs about 3 µs; `InferenceSession.run` about 6 µs (it builds
input and output containers per call); the public `run_with_ort_values` wrapper about 60 µs in ORT 1.32 (per-call
ownership checks). The C-level entry point is private ORT API, so it is probed at construction and checked
bit for bit against `run`; when it is missing the public `run_with_iobinding(io)` (no `RunOptions`: giving one
costs about 35 µs in 1.32) is used instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort

__all__ = ["session", "ControllerSession", "ModelError", "ProviderError", "ProviderFallbackWarning",
           "PROVIDERS", "CALL_PATHS", "INPUT_NAME", "OUTPUT_NAME", "decode_metadata", "provider_chain",
           "graph_digest", "DIGEST_KEY", "FORMAT_KEY", "PLANT_KEY", "DT_KEY", "recorded_plant", "check_integrity",
           "VERIFIED", "UNVERIFIED", "NOT_CHECKED"]

INPUT_NAME, OUTPUT_NAME = "state", "action"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_ALIASES = {"trt": "tensorrt", "gpu": "cuda"}
_SHORT = {v: k for k, v in PROVIDERS.items()}
CALL_PATHS = ("auto", "measure", "iobinding-c", "iobinding", "run")
_OPT_LEVELS = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
               "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
               "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
               "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


class ModelError(ValueError):
    """An ONNX file that cannot serve as a lipnet controller (missing, unreadable, wrong inputs or outputs)."""


class ProviderError(RuntimeError):
    """A requested execution provider is unavailable and `strict=True` forbade falling back."""


class ProviderFallbackWarning(RuntimeWarning):
    """The requested execution provider is unavailable; the session runs on the next one in the chain."""


def decode_metadata(props: dict[str, str]) -> dict:
    """`metadata_props` strings to Python values: JSON where a value parses as JSON, the raw string otherwise."""
    out = {}
    for key, text in props.items():
        try:
            out[key] = json.loads(text)
        except (TypeError, ValueError):
            out[key] = text
    return out


DIGEST_KEY = "lipnet.sha256"  # sha256 of the graph (weights included) and every other metadata entry, by lipnet export


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ModelError("the file is not a valid ONNX protobuf (truncated varint)")
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def graph_digest(model: bytes, props: dict[str, str] | None = None) -> str:
    """sha256 of the `graph` field (nodes and weights) of a serialized ONNX ModelProto and of `props`.

    `props` are the model's `metadata_props` (key → string); every entry but `DIGEST_KEY` itself is hashed, so an
    edited bound or limit in the metadata is caught like a flipped weight. Walks the top-level protobuf fields by
    hand (no onnx package needed on a board); the graph is field 7.
    """
    buf, i, found = bytes(model), 0, []
    while i < len(buf):
        key, i = _varint(buf, i)
        field_no, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, i = _varint(buf, i)
        elif wire_type == 1:
            i += 8
        elif wire_type == 5:
            i += 4
        elif wire_type == 2:
            length, i = _varint(buf, i)
            if i + length > len(buf):
                raise ModelError("the file is not a valid ONNX protobuf (a field runs past the end: truncated)")
            if field_no == 7:
                found.append(buf[i:i + length])
            i += length
        else:
            raise ModelError(f"the file is not a valid ONNX protobuf (wire type {wire_type})")
    if len(found) != 1:
        raise ModelError(f"the file holds {len(found)} ONNX graphs, not one")
    digest = hashlib.sha256(found[0])
    for key in sorted(props or {}):
        if key != DIGEST_KEY:
            for text in (key, props[key]):
                data = str(text).encode("utf-8")
                digest.update(len(data).to_bytes(8, "little") + data)  # length-prefixed: no ambiguous joins
    return digest.hexdigest()


FORMAT_KEY = "lipnet.format"  # present in every model lipnet exports
PLANT_KEY, DT_KEY = "lipnet.plant", "lipnet.dt"  # the plant spec and sample time the controller was trained for


def recorded_plant(metadata: dict) -> tuple[str, float | None]:
    """The plant spec ("" when none) and the sample time (None when none or 0) a model's decoded metadata record."""
    try:
        dt = float(metadata[DT_KEY]) or None
    except (KeyError, TypeError, ValueError):
        dt = None
    return str(metadata.get(PLANT_KEY) or ""), dt

VERIFIED = "verified"
UNVERIFIED = "unverified (no lipnet metadata)"
NOT_CHECKED = "not checked (verify=False)"


def _recorded_digest(text: str) -> str:
    # The exporter writes every value as JSON text; accept a bare hex string too.
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return value if isinstance(value, str) else text


def check_integrity(model: bytes, props: dict[str, str], label: str = "the model") -> str:
    """Compare the graph of `model` (the file's bytes) with the digest its `metadata_props` record at export.

    Returns `VERIFIED`, or `UNVERIFIED` for a foreign model (no `lipnet.` metadata at all, or none naming it a
    lipnet export); raises `ModelError` on a mismatch or for a lipnet export that carries no digest.
    """
    recorded = props.get(DIGEST_KEY)
    if recorded is None:
        if FORMAT_KEY in props:
            raise ModelError(f"{label} is a lipnet model exported by a lipnet without an integrity hash "
                             f"({DIGEST_KEY}), or the hash was removed; re-export it with `lipnet export`")
        if any(key.startswith("lipnet.") for key in props):
            return "unverified (lipnet metadata without lipnet.format: not a lipnet export)"
        return UNVERIFIED
    try:
        actual = graph_digest(model, props)
    except ModelError as exc:
        raise ModelError(f"{label}: {exc}; re-export it with `lipnet export`") from None
    if actual != _recorded_digest(recorded):
        raise ModelError(f"{label}: the weights, graph or metadata do not match the hash recorded at export "
                         f"({DIGEST_KEY}): the file is corrupted or was modified; re-export it with `lipnet export`")
    return VERIFIED


def _canonical(provider: str) -> str:
    name = str(provider).lower()
    name = _ALIASES.get(name, name)
    if name not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; valid: {', '.join(PROVIDERS)} (or trt for tensorrt)")
    return name


def _trt_cache_dir(model_path: Path | None, cache_dir) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if model_path is not None and os.access(model_path.parent, os.W_OK):
        return model_path.parent / f"{model_path.stem}.trt-cache"
    return Path(tempfile.gettempdir()) / "lipnet-trt-cache"


def provider_chain(provider: str = "cpu", *, device_id: int = 0, model_path: str | os.PathLike | None = None,
                   trt_cache_dir: str | os.PathLike | None = None, trt_fp16: bool = False,
                   n_x: int | None = None, max_batch: int = 1024) -> list[tuple[str, dict]]:
    """The onnxruntime providers (name, options) tried in order for `provider`: tensorrt → cuda → cpu.

    TensorRT engines take seconds to minutes to build, so they are cached (`trt_engine_cache_path`, by default
    `<model>.trt-cache/` beside the model, or the temp folder when that is read-only) with an optimisation
    profile for batch 1 (the control call) up to `max_batch`.
    """
    name = _canonical(provider)
    cuda = ("CUDAExecutionProvider", {"device_id": str(device_id), "arena_extend_strategy": "kSameAsRequested",
                                      "cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": "1"})
    cpu = ("CPUExecutionProvider", {})
    if name == "cpu":
        return [cpu]
    if name == "cuda":
        return [cuda, cpu]
    cache = _trt_cache_dir(Path(model_path) if model_path is not None else None, trt_cache_dir)
    trt = {"device_id": str(device_id), "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
           "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache),
           "trt_fp16_enable": "True" if trt_fp16 else "False", "trt_max_workspace_size": str(1 << 30)}
    if n_x is not None:
        trt.update({"trt_profile_min_shapes": f"{INPUT_NAME}:1x{n_x}",
                    "trt_profile_opt_shapes": f"{INPUT_NAME}:1x{n_x}",
                    "trt_profile_max_shapes": f"{INPUT_NAME}:{int(max_batch)}x{n_x}"})
    return [("TensorrtExecutionProvider", trt), cuda, cpu]


def _options(threads: int, graph_optimization: str, log_severity: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    # One tiny model on one core: extra threads never help at batch 1, and spinning threads steal the CPU.
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        so.graph_optimization_level = _OPT_LEVELS[graph_optimization]
    except KeyError:
        raise ValueError(f"unknown graph_optimization {graph_optimization!r}; valid: {', '.join(_OPT_LEVELS)}") \
            from None
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = int(log_severity)
    return so


def _read(model) -> tuple[bytes, Path | None, str]:
    """The model's bytes (read once: what is verified is what is loaded), its path, and a label for errors."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), None, "the model bytes"
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"no ONNX model at {path}; export one with `lipnet export RUN_DIR --out {path.name}`")
    try:
        return path.read_bytes(), path, str(path)
    except OSError as exc:
        raise ModelError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from None


def _load(data: bytes, label: str, so: ort.SessionOptions, providers) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(data, so, providers=providers)
    except Exception as exc:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ModelError(f"{label} is not a loadable ONNX model ({first[:300]}); "
                         "re-export it with `lipnet export`") from None


def _signature(sess: ort.InferenceSession) -> tuple[int, int]:
    ins, outs = sess.get_inputs(), sess.get_outputs()
    if len(ins) != 1 or ins[0].name != INPUT_NAME:
        raise ModelError(f"model inputs are {[i.name for i in ins]}; a lipnet controller has one input "
                         f"{INPUT_NAME!r} float32 [batch, n_x] (re-export with `lipnet export`)")
    if len(outs) < 1 or outs[0].name != OUTPUT_NAME:
        raise ModelError(f"model outputs are {[o.name for o in outs]}; a lipnet controller's first output is "
                         f"{OUTPUT_NAME!r} float32 [batch, n_u]")
    dims = []
    for meta, what in ((ins[0], "input"), (outs[0], "output")):
        if meta.type != "tensor(float)":
            raise ModelError(f"model {what} {meta.name!r} is {meta.type}; float32 (tensor(float)) is expected")
        shape = meta.shape
        if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 1:
            raise ModelError(f"model {what} {meta.name!r} has shape {shape}; [batch, n] with a fixed n is expected")
        if isinstance(shape[0], int) and shape[0] != 1:
            raise ModelError(f"model {what} {meta.name!r} has a fixed batch of {shape[0]}; batch 1 or a dynamic "
                             "batch is needed for one state per call")
        dims.append(shape[1])
    return dims[0], dims[1]


class ControllerSession:
    """One exported controller in onnxruntime: `session(state) -> action` at batch 1, `run_batch` for more.

    Not thread-safe: calls share preallocated input and output buffers (that is where the speed comes from).
    Attributes: `n_x`, `n_u`, `provider` (the one actually running), `requested_provider`, `fallback_reason`
    (None when the requested provider runs), `metadata` (decoded `metadata_props`), `call_path`, `path`,
    `integrity` (`"verified"`, `"unverified (...)"` for a foreign model, or `"not checked (verify=False)"`).
    """

    def __init__(self, sess: ort.InferenceSession, *, requested: str, fallback_reason: str | None,
                 call_path: str = "auto", path: str | None = None, integrity: str = NOT_CHECKED):
        self.inference_session = sess
        self.integrity = integrity
        self.n_x, self.n_u = _signature(sess)
        self.provider = _SHORT.get(sess.get_providers()[0], sess.get_providers()[0])
        self.requested_provider = requested
        self.fallback_reason = fallback_reason
        self.path = path
        self.metadata = decode_metadata(dict(sess.get_modelmeta().custom_metadata_map))
        self._x = np.zeros((1, self.n_x), np.float32)
        self._u = np.zeros((1, self.n_u), np.float32)
        self._x_row, self._u_row = self._x[0], self._u[0]
        self._outputs = [OUTPUT_NAME]
        self._io = sess.io_binding()
        self._io.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(self._x))
        self._io.bind_ortvalue_output(OUTPUT_NAME, ort.OrtValue.ortvalue_from_numpy(self._u))
        self._paths = self._working_paths()
        if call_path not in CALL_PATHS:
            raise ValueError(f"unknown call_path {call_path!r}; valid: {', '.join(CALL_PATHS)}")
        if call_path == "auto":
            call_path = next(p for p in ("iobinding-c", "iobinding", "run") if p in self._paths)
        elif call_path == "measure":
            call_path = self._fastest()
        elif call_path not in self._paths:
            raise ValueError(f"call path {call_path!r} is not available here; available: {', '.join(self._paths)}")
        self.call_path = call_path
        self._run = self._paths[call_path]

    # --- call paths --------------------------------------------------------------------------------
    def _candidates(self) -> dict:
        sess, io, u_row, outputs = self.inference_session, self._io, self._u_row, self._outputs
        x = self._x
        paths = {}
        c_sess, c_io = getattr(sess, "_sess", None), getattr(io, "_iobinding", None)
        if c_sess is not None and c_io is not None and hasattr(c_sess, "run_with_iobinding"):
            c_run = c_sess.run_with_iobinding

            def run_c():
                c_run(c_io, None)
                return u_row.copy()
            paths["iobinding-c"] = run_c

        def run_public():
            sess.run_with_iobinding(io)
            return u_row.copy()
        paths["iobinding"] = run_public

        def run_plain():
            return sess.run(outputs, {INPUT_NAME: x})[0][0]
        paths["run"] = run_plain
        return paths

    def _working_paths(self) -> dict:
        # Private entry points may change between ORT releases: keep a path only if it runs and agrees bit
        # for bit with `run` on a probe state.
        probe = np.linspace(-1.0, 1.0, self.n_x, dtype=np.float32)
        self._x_row[:] = probe
        reference = self.inference_session.run(self._outputs, {INPUT_NAME: self._x})[0][0].copy()
        working = {}
        for name, fn in self._candidates().items():
            try:
                self._u_row[:] = np.nan
                self._x_row[:] = probe
                value = fn()
            except Exception:  # noqa: BLE001 - a broken private path is skipped, never fatal
                continue
            if value.shape == reference.shape and np.array_equal(value, reference, equal_nan=True):
                working[name] = fn
        if not working:
            raise ModelError("onnxruntime could not run the model at batch 1 through any call path")
        return working

    def _fastest(self, calls: int = 300, repeats: int = 3) -> str:
        best = {}
        for _ in range(repeats):
            for name, fn in self._paths.items():
                t = np.empty(calls)
                for i in range(calls):
                    t0 = time.perf_counter_ns()
                    fn()
                    t[i] = time.perf_counter_ns() - t0
                best[name] = min(best.get(name, np.inf), float(np.median(t)))
        return min(best, key=best.get)

    # --- public calls ------------------------------------------------------------------------------
    def __call__(self, state) -> np.ndarray:
        """The saturated action (float32 `[n_u]`, a fresh array) for one state (`[n_x]` or `[1, n_x]`)."""
        if type(state) is not np.ndarray:
            state = np.asarray(state, dtype=np.float32)
        if state.size != self.n_x or state.shape[-1] != self.n_x:
            raise ValueError(f"expected one state of {self.n_x} values ([n_x] or [1, n_x]), got shape {state.shape}")
        self._x_row[:] = state.reshape(self.n_x)
        return self._run()

    def run_batch(self, states) -> np.ndarray:
        """Actions (float32 `[b, n_u]`) for a batch of states (`[b, n_x]`)."""
        states = np.ascontiguousarray(states, dtype=np.float32)
        if states.ndim != 2 or states.shape[1] != self.n_x:
            raise ValueError(f"expected states of shape [batch, {self.n_x}], got {states.shape}")
        return self.inference_session.run(self._outputs, {INPUT_NAME: states})[0]

    def __repr__(self) -> str:
        fb = f", fallback_reason={self.fallback_reason!r}" if self.fallback_reason else ""
        return (f"ControllerSession(n_x={self.n_x}, n_u={self.n_u}, provider={self.provider!r}, "
                f"call_path={self.call_path!r}, integrity={self.integrity!r}{fb})")


def session(path, provider: str = "cpu", threads: int = 1, *, device_id: int = 0, call_path: str = "auto",
            graph_optimization: str = "all", trt_cache_dir=None, trt_fp16: bool = False, strict: bool = False,
            warmup: int = 10, log_severity: int = 3, verify: bool = True) -> ControllerSession:
    """An onnxruntime session tuned for one-sample, low-latency control of an exported lipnet controller.

    Parameters
    ----------
    path : the `.onnx` file (or its bytes).
    provider : `cpu`, `cuda` or `tensorrt`; an unavailable one falls back along tensorrt → cuda → cpu with a
        `ProviderFallbackWarning` and the reason in `fallback_reason` (or raises `ProviderError` if `strict`).
    threads : intra-op threads (1: no thread wake-ups; more never helps at batch 1).
    device_id : the GPU for cuda / tensorrt.
    call_path : `auto` (the fastest measured in benchmarks/latency.py that works here), `measure` (time the
        working paths now and keep the fastest), or one of `iobinding-c`, `iobinding`, `run`.
    graph_optimization : `all` (default), `extended`, `basic` or `disable`.
    trt_cache_dir : where TensorRT keeps built engines (default beside the model).
    trt_fp16 : let TensorRT run in fp16 (changes the function: re-certify, see `lipnet export --fp16`).
    strict : raise instead of falling back when the provider is missing.
    warmup : calls made once before returning (first calls allocate and fault pages in).
    log_severity : onnxruntime's log level (3: errors only).
    verify : check the graph against the digest recorded at export (`check_integrity`); `False` only for tools
        that inspect broken files. A mismatch, or a lipnet export without a digest, raises `ModelError`.
    """
    requested = _canonical(provider)
    so = _options(threads, graph_optimization, log_severity)
    data, model_path, label = _read(path)
    if model_path is not None:  # loaded from bytes: external weights (foreign models) resolve beside the file
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(model_path.parent))
    # A CPU session first: it validates the file and signature with a clear error on any machine, gives the
    # metadata to verify before any GPU session is built, and n_x for the TensorRT optimisation profile.
    probe = _load(data, label, so, ["CPUExecutionProvider"])
    integrity = NOT_CHECKED
    if verify:
        integrity = check_integrity(data, dict(probe.get_modelmeta().custom_metadata_map), label)
    n_x, _ = _signature(probe)
    chain = provider_chain(requested, device_id=device_id, model_path=model_path, trt_cache_dir=trt_cache_dir,
                           trt_fp16=trt_fp16, n_x=n_x)
    available = set(ort.get_available_providers())
    usable = [(name, opts) for name, opts in chain if name in available]
    reason = None
    if chain[0][0] not in available:
        reason = (f"{requested} requested but this onnxruntime {ort.__version__} build has no {chain[0][0]} "
                  f"(available: {', '.join(sorted(available))}); install onnxruntime-gpu with matching CUDA/"
                  f"TensorRT libraries for GPU providers")
    if requested == "cpu":
        sess = probe
    else:
        if chain[0][0] == "TensorrtExecutionProvider" and chain[0][0] in available:
            Path(chain[0][1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        sess = _load(data, label, so, usable) if usable[0][0] != "CPUExecutionProvider" else probe
        actual = sess.get_providers()[0]
        if reason is None and actual != chain[0][0]:
            # Listed as available but failed to initialise (missing CUDA/cuDNN/TensorRT libraries, no device).
            reason = (f"{requested} requested and {chain[0][0]} is in this onnxruntime build, but it did not "
                      f"initialise (missing CUDA/TensorRT libraries or no GPU {device_id}); running on {actual}")
    if reason is not None:
        if strict:
            raise ProviderError(reason)
        warnings.warn(f"lipnet runtime: {reason}; running on {_SHORT.get(sess.get_providers()[0])}",
                      ProviderFallbackWarning, stacklevel=2)
    out = ControllerSession(sess, requested=requested, fallback_reason=reason, call_path=call_path,
                            path=None if model_path is None else str(model_path), integrity=integrity)
    state = np.zeros(out.n_x, np.float32)
    for _ in range(int(warmup)):
        out(state)
    return out
