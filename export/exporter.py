"""`export_controller`: a trained Controller → one ONNX file, kept only if it runs like torch.

Exporter: `torch.onnx.export(..., dynamo=True)`, the torch.export-based path. It is the default and the
maintained one in torch ≥ 2.9 (the TorchScript exporter warns that it will be removed); it takes a
`dynamic_shapes` batch dimension directly (the `dynamic_axes` translation is the flaky part) and emits a clean
graph (Gemm, Relu/Tanh, Slice/Max/Min/Concat, saturation ops, Sub/Sin/Where/Slice/Cos/Concat for periodic
states; constants as initializers, no Constant nodes).
Its cost, about 1.5 s per export, is paid once per model. Opset 18 is its minimum and our default.

Steps: fold → export → metadata → `onnx.checker` (full) → temporary file in the destination folder →
onnxruntime parity on the file's bytes → bounds re-certified on the weights read back from the file →
`os.replace`. Any failure removes the temporary file and leaves an existing destination untouched.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from lipnet.exceptions import LipnetError
from lipnet.fileio import atomic_path

from .bounds import run_certificate
from .errors import ExportError, ParityError
from .folded import fold_controller
from .metadata import FORMAT, load_model, read_metadata, set_metadata
from .parity import FLOAT32_TOLERANCE, FP16_TOLERANCE, compare, parity_states, torch_actions, working_magnitude
from .recertify import exported_bounds, recheck
from .reference import NumpyPolicy, linear_weights
from .runtime import DIGEST_KEY, DT_KEY, FORMAT_KEY, PLANT_KEY, check_integrity, graph_digest

__all__ = ["export_controller", "ExportReport", "DEFAULT_OPSET", "MIN_OPSET"]

DEFAULT_OPSET = 18
MIN_OPSET = 18  # the dynamo exporter's op library starts at opset 18


@dataclass
class ExportReport:
    """What `export_controller` wrote and why it can be trusted."""

    path: str
    n_x: int
    n_u: int
    opset: int
    precision: str
    exporter: str
    ops: list[str]
    size_bytes: int
    lipschitz_upper: float
    bounds: list[dict]
    certificate_status: str
    certificate_reason: str
    parity: dict
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def _resolve(controller_or_run_dir, plant, dt):
    """`(controller, run_dir, plant, dt, checkpoint_version)` of a Controller or a run folder / `controller.pt`."""
    from lipnet.nn import Controller
    from lipnet.train.checkpoint import load_trained

    if isinstance(controller_or_run_dir, Controller):
        return controller_or_run_dir.eval(), None, plant or "", dt, ""
    if not isinstance(controller_or_run_dir, (str, os.PathLike)):
        raise ExportError(f"expected a Controller or a run folder path, got {type(controller_or_run_dir).__name__}")
    try:
        trained = load_trained(controller_or_run_dir)
    except LipnetError as exc:
        raise ExportError(str(exc)) from None
    return trained.controller, Path(controller_or_run_dir), plant or trained.plant, \
        dt if dt is not None else trained.dt, trained.lipnet_version


def writable_folder(out: Path, example: str) -> None:
    """Refuse a folder as `out`, create its parent, and refuse a parent that cannot be written (one clear line)."""
    if out.is_dir():
        raise ExportError(f"destination {out} is a folder; give a file name such as {out / example}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the folder {out.parent} ({exc.strerror or exc}); choose another --out") \
            from None
    if not os.access(out.parent, os.W_OK):
        raise ExportError(f"cannot write to {out.parent}; choose a writable --out")


def _destination(out: Path) -> Path:
    """`out`, its folder created; a clear error when it cannot be written."""
    writable_folder(out, "controller.onnx")
    if out.exists() and not _is_lipnet_model(out):
        raise ExportError(f"{out} exists and is not a model lipnet exported, so export will not replace it; remove "
                          "it or choose another --out")
    return out


def _is_lipnet_model(path: Path) -> bool:
    try:
        return read_metadata(path, check=False).get(FORMAT_KEY) == FORMAT
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def _torch_export(module, n_x: int, opset: int):
    """The ModelProto of `module` via the dynamo exporter, quietly (its progress lines and warnings are noise)."""
    batch = torch.export.Dim("batch", min=1)
    example = (torch.zeros(2, n_x),)  # batch ≥ 2 so the dynamic dimension is not specialised to 1
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        # The exporter and onnxscript's version converter print progress and caught tracebacks; the outcome is
        # checked below and by the opset test in export_controller.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, example, None, input_names=["state"], output_names=["action"],
                                        dynamo=True, dynamic_shapes=({0: batch},), opset_version=opset,
                                        optimize=True, verbose=False)
    except Exception as exc:  # torch.export / onnxscript errors are long; keep the first line
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {first[:300]}") from None
    finally:
        quiet.setLevel(level)
    return program.model_proto


def _limits_meta(controller) -> dict:
    lo, hi = controller.limits()
    return {"low": [float(v) if np.isfinite(v) else None for v in lo],
            "high": [float(v) if np.isfinite(v) else None for v in hi],
            "saturation": controller.saturation if controller.has_limits else "none"}


def _bounds(controller, model, fp16: bool) -> tuple[float, list[dict]]:
    """Sound bounds computed on the weights in the file (never taken from a certificate), and the reference."""
    exported = linear_weights(model)
    where = "float16 weights (exact arithmetic)" if fp16 else "float32 weights in the .onnx"
    entries = exported_bounds(exported, controller.activation, where)
    entries.append({"method": "construction", "value": float(controller.lipschitz_bound()), "sound": False,
                    "applies_to": "the checkpoint's parametrisation",
                    "note": "by construction of the layers; for reference (not re-checked on the exported weights)"})
    upper = min(e["value"] for e in entries if e["sound"])
    return upper, entries


def _plant_object(spec: str):
    """The plant for re-checking a closed-loop claim, or None where the spec does not load here."""
    if not spec:
        return None
    import plants

    try:
        return plants.load(spec)
    except Exception:  # noqa: BLE001 - a closed-loop claim then cannot be re-checked, and recheck refuses it
        return None


def _parity(controller, model_path: Path, plant: str, samples: int, seed: int, tol: float) -> dict:
    from .runtime import session

    sampled = parity_states(controller, plant, n=samples, seed=seed)
    sess = session(model_path, warmup=0)
    ref_np = NumpyPolicy(load_model(model_path))
    regions = {}
    for name, states in sampled["states"].items():
        ref = torch_actions(controller, states)
        scale = np.maximum(1.0, working_magnitude(controller, states))
        onnx_err = compare(ref, sess.run_batch(states) if len(states) else ref[:0], scale)
        numpy_err = compare(ref, ref_np.run_batch(states) if len(states) else ref[:0], scale)
        regions[name] = {**onnx_err, "max_working_magnitude": float(scale.max()) if len(states) else 1.0,
                         "numpy_max_abs": numpy_err["max_abs"], "numpy_max_scaled": numpy_err["max_scaled"]}
    worst = max(r["max_scaled"] for r in regions.values())
    return {"tolerance": tol, "worst": worst, "passed": bool(worst <= tol), "regions": regions,
            "metric": "max |u_onnx − u_torch| / max(1, m(x)), m(x) the largest |pre-activation| of any layer at x",
            "box": sampled["box"], "box_source": sampled["source"]}


def export_controller(controller_or_run_dir, out_path, opset: int = DEFAULT_OPSET, fp16: bool = False, *,
                      plant: str | None = None, dt: float | None = None, samples: int = 10_000, seed: int = 0,
                      tolerance: float | None = None) -> ExportReport:
    """Export a trained controller to ONNX, refusing any file that fails parity with torch.

    Parameters
    ----------
    controller_or_run_dir : a `Controller`, a run folder or a `controller.pt` file.
    out_path : the `.onnx` file to write (atomically; an existing file is replaced only on success).
    opset : ONNX opset (≥ 18).
    fp16 : float16 weights and arithmetic inside, float32 input and output; parity tolerance `FP16_TOLERANCE`
        and the Lipschitz bound recomputed on the float16 weights and flagged for rounding.
    plant, dt : plant spec and sample time for the metadata (default: the checkpoint's).
    samples : states per parity region (training, far, saturation).
    seed : seed of the parity sample.
    tolerance : override of the parity tolerance (float32 default 1e-5, fp16 1e-2).
    """
    t0 = time.perf_counter()
    if int(opset) < MIN_OPSET:
        raise ExportError(f"opset {opset} is below {MIN_OPSET}, the minimum of the dynamo exporter; use --opset 18+")
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if int(opset) > newest:
        raise ExportError(f"opset {opset} is beyond this onnx {onnx.__version__}'s newest opset {newest}; use "
                          f"--opset {MIN_OPSET}..{newest}")
    if not 1 <= int(samples) <= 10_000_000:
        raise ExportError(f"samples must be from 1 to 10000000 parity states per region (default 10000), got {samples}")
    controller, run_dir, plant, dt, version = _resolve(controller_or_run_dir, plant, dt)
    out = _destination(Path(out_path))
    tol = float(tolerance) if tolerance is not None else (FP16_TOLERANCE if fp16 else FLOAT32_TOLERANCE)
    # Every claim of the run's certificate is re-verified before anything is written.
    cert, fresh = recheck(run_certificate(run_dir, controller), controller, _plant_object(plant))
    try:
        with atomic_path(out) as tmp:
            model = _torch_export(fold_controller(controller, torch.float16 if fp16 else torch.float32),
                                  controller.n_x, int(opset))
            produced = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
            if produced != int(opset):
                raise ExportError(f"opset {opset} was asked for but torch {torch.__version__}'s exporter produced "
                                  f"opset {produced}; use an opset it supports (--opset {produced})")
            upper, entries = _bounds(controller, model, fp16)
            report = _write_checked(controller, model, tmp, plant, dt, version, cert, fresh, upper, entries, fp16,
                                    int(opset), samples, seed, tol)
    except OSError as exc:
        if isinstance(exc, LipnetError):
            raise
        raise ExportError(f"cannot write to {out.parent} ({exc.strerror or exc}); choose a writable --out") from None
    report.path, report.seconds = str(out), time.perf_counter() - t0
    return report


def _props(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _seal(model) -> None:
    """Record the digest of the graph and the metadata (`DIGEST_KEY`) in the model."""
    set_metadata(model, {DIGEST_KEY: graph_digest(model.SerializeToString(), _props(model))})


def _write_checked(controller, model, tmp: Path, plant, dt, version, cert, fresh, upper, entries, fp16, opset,
                   samples, seed, tol) -> ExportReport:
    import onnx

    from lipnet import __version__

    precision = "float16" if fp16 else "float32"
    own_cert = {"source": "lipnet export", "status": cert.status, "reason": cert.reason,
                "tightest_upper": upper, "bounds": entries}
    meta = {FORMAT_KEY: FORMAT, "lipnet.version": __version__, PLANT_KEY: plant,
            DT_KEY: None if dt is None else float(dt), "lipnet.n_x": controller.n_x,
            "lipnet.n_u": controller.n_u, "lipnet.state_offset": controller.state_offset.tolist(),
            "lipnet.state_scale": controller.state_scale.tolist(),
            "lipnet.action_limits": _limits_meta(controller), "lipnet.activation": controller.activation,
            "lipnet.hidden": list(controller.hidden), "lipnet.precision": precision,
            "lipnet.periodic": list(controller.periodic),
            "lipnet.periodic_center": controller.periodic_center().tolist() if controller.periodic else [],
            "lipnet.lipschitz_upper": upper, "lipnet.lipschitz_bounds": entries,
            "lipnet.certificate": ({**fresh, "source": "recomputed by lipnet export; the run's certificate.json "
                                    "matched it"} if cert.status == "verified" else own_cert),
            "lipnet.certificate_status": {"status": cert.status, "reason": cert.reason},
            "lipnet.exporter": {"exporter": "torch.onnx.export(dynamo=True)", "opset": opset,
                                "torch": torch.__version__, "onnx": onnx.__version__}}
    if cert.network_hash:
        meta["lipnet.network_hash"] = cert.network_hash
    if version:
        meta["lipnet.checkpoint_version"] = version
    set_metadata(model, meta)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {str(exc).splitlines()[0][:300]}") from None
    # Sealed before parity, which loads the file through the verifying runtime (resealed after the last change).
    _seal(model)
    tmp.write_bytes(model.SerializeToString())
    parity = _parity(controller, tmp, plant, samples, seed, tol)
    if not parity["passed"]:
        bad = {k: v["max_scaled"] for k, v in parity["regions"].items()}
        raise ParityError(f"onnxruntime disagrees with torch beyond {tol:g} ({precision}): worst scaled error per "
                          f"region {bad}; the model was not written")
    notes = []
    if fp16:
        # numpy evaluates float16 nodes in float16 arithmetic; onnxruntime's CPU provider upcasts some of them.
        err = max(max(r["max_abs"], r["numpy_max_abs"]) for r in parity["regions"].values())
        notes.append(f"fp16: the bound is for exact arithmetic on the float16 weights; rounding adds up to "
                     f"~{err:.3g} (measured) to an action, so |u(x)−u(y)| ≤ L‖x−y‖ + 2ε")
        meta_extra = {"lipnet.fp16_max_error": err, "lipnet.precision_note": notes[-1]}
    else:
        meta_extra = {}
    set_metadata(model, {"lipnet.parity": parity, **meta_extra})
    # Last: the digest of the graph and the metadata that every loader checks.
    _seal(model)
    tmp.write_bytes(model.SerializeToString())
    # The file as written: loads, checks, carries the metadata and the very weights the bound was computed on.
    if check_integrity(tmp.read_bytes(), _props(load_model(tmp)), str(tmp)) != "verified":
        raise ExportError("the digest of the written file differs from the one recorded in it")
    written = load_model(tmp)
    if [w.tobytes() for w in linear_weights(written)] != [w.tobytes() for w in linear_weights(model)]:
        raise ExportError("the weights read back from the written file differ from the certified ones")
    if read_metadata(tmp).get("lipnet.lipschitz_upper") != upper:
        raise ExportError("the metadata read back from the written file differ from what was written")
    return ExportReport(path=str(tmp), n_x=controller.n_x, n_u=controller.n_u, opset=opset, precision=precision,
                        exporter="torch.onnx.export(dynamo=True)", ops=[n.op_type for n in model.graph.node],
                        size_bytes=tmp.stat().st_size, lipschitz_upper=upper, bounds=entries,
                        certificate_status=cert.status, certificate_reason=cert.reason, parity=parity, seconds=0.0,
                        notes=notes)
