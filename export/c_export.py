"""`export_c`: a trained Controller → `controller.c` + `controller.h`, kept only if torch, onnxruntime and C agree.

Steps: checkpoint → activation check (the supported ones are listed on refusal) → destination check (the `.c` and
its `.h`; an existing file is replaced only if lipnet wrote it) → the ONNX twin, exported to a temporary folder by
`export_controller` (the run's certificate re-verified, parity with torch) → the C network (folded weights
rounded to the C type) → sound Lipschitz bounds computed on the weights as written in the C file → source and
header → three-way parity, compiled in a temporary folder (`export.c_build.three_way_parity`) → both files
written atomically (`plants.fileio`). A parity failure writes nothing (`ParityError`). Without a C compiler the
files are written and the parity says "not compiled here", with the reason.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lipnet.fileio import atomic_path

from .c_build import CBuildError, describe, three_way_parity
from .c_source import C_FORMAT, c_network, generate, read_info, recorded_digest
from .errors import ExportError, ParityError

__all__ = ["export_c", "CExportReport", "format_c_report", "inspect_c"]


@dataclass
class CExportReport:
    """What `export_c` wrote and why it can be trusted (`parity["status"]`: passed or "not compiled here")."""

    path: str
    header: str
    n_x: int
    n_u: int
    c_float: str
    activation: str
    hidden: list[int]
    periodic: list[int]
    plant: str
    dt: float | None
    size_bytes: int
    source_sha256: str
    network_hash: str | None
    lipschitz_upper: float
    lipschitz_method: str
    bounds: list[dict]
    certificate_status: str
    certificate_reason: str
    fallback: list[float]
    parity: dict
    onnx_parity: dict
    seconds: float
    format: str = C_FORMAT
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def _is_lipnet_c(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return f"lipnet C export ({C_FORMAT})".encode() in fh.read(400)
    except OSError:
        return False


def _destinations(out: Path) -> tuple[Path, Path]:
    if out.suffix != ".c":
        raise ExportError(f"--out {out}: the C export writes a .c file (its header beside it); give a name such as "
                          f"{out.with_suffix('.c').name}")
    from .exporter import writable_folder

    writable_folder(out, "controller.c")
    header = out.with_suffix(".h")
    for path in (out, header):
        if path.is_dir() or (path.exists() and not _is_lipnet_c(path)):
            raise ExportError(f"{path} exists and is not a file lipnet exported, so export will not replace it; "
                              "remove it or choose another --out")
    return out, header


def _fallback(controller, plant_spec: str) -> tuple[np.ndarray, str]:
    """The action written on a non-finite state: the plant's equilibrium action (within the limits), else zeros."""
    from .exporter import _plant_object

    plant = _plant_object(plant_spec)
    u_eq = getattr(plant, "u_eq", None)
    if u_eq is not None and np.asarray(u_eq).size == controller.n_u:
        return np.asarray(u_eq, np.float64).reshape(-1), f"the equilibrium action of {plant_spec}"
    return np.zeros(controller.n_u), "zeros (no plant to take an equilibrium action from)"


def _bounds(controller, net, c_float: str) -> tuple[float, str, list[dict]]:
    from .recertify import exported_bounds

    where = f"the {c_float} weights in the C source"
    entries = exported_bounds(net.weights, controller.activation, where)
    entries.append({"method": "construction", "value": float(controller.lipschitz_bound()), "sound": False,
                    "applies_to": "the checkpoint's parametrisation",
                    "note": "by construction of the layers; for reference (not re-checked on the exported weights)"})
    best = min((e for e in entries if e["sound"]), key=lambda e: e["value"])
    return float(best["value"]), str(best["method"]), entries


def export_c(controller_or_run_dir, out_path, *, c_float: str = "float", plant: str | None = None,
             dt: float | None = None, samples: int = 10_000, seed: int = 0, tolerance: float | None = None,
             opset: int | None = None, cc: str | None = None) -> CExportReport:
    """Export a trained controller to C99 (`out_path`, a `.c`, and its `.h` beside it), refusing one that fails parity.

    Parameters
    ----------
    controller_or_run_dir : a `Controller`, a run folder or a `controller.pt` file.
    out_path : the `.c` file to write (the header gets the same name with `.h`).
    c_float : `float` (default) or `double` arithmetic inside; the interface is float32 either way.
    plant, dt : plant spec and sample time for the metadata (default: the checkpoint's).
    samples : states per parity region (training, far, saturation; plus the edge cases).
    seed : seed of the parity sample.
    tolerance : parity tolerance (default the ONNX float32 one, 1e-5 on |Δu| / max(1, m(x))).
    opset : ONNX opset of the twin model that the parity runs in onnxruntime.
    cc : the C compiler (default `$CC`, else cc / gcc / clang).
    """
    from lipnet import __version__
    from lipnet.certify.network import network_hash as hash_of

    from .exporter import DEFAULT_OPSET, _resolve, export_controller
    from .metadata import read_metadata
    from .parity import FLOAT32_TOLERANCE

    t0 = time.perf_counter()
    if c_float not in ("float", "double"):
        raise ExportError(f"--c-float must be float or double, got {c_float!r}")
    if not 1 <= int(samples) <= 10_000_000:
        raise ExportError(f"samples must be from 1 to 10000000 parity states per region (default 10000), got {samples}")
    controller, run_dir, plant, dt, _ = _resolve(controller_or_run_dir, plant, dt)
    fallback, fallback_source = _fallback(controller, plant)
    try:  # refuses an unsupported activation, with the supported ones, before anything is exported
        net = c_network(controller, c_float, fallback)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    out, header = _destinations(Path(out_path))
    tol = float(tolerance) if tolerance is not None else FLOAT32_TOLERANCE
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lipnet-c-export-") as tmp:
        twin = Path(tmp) / "controller.onnx"
        onnx_report = export_controller(run_dir if run_dir is not None else controller, twin,
                                        opset=opset or DEFAULT_OPSET, plant=plant, dt=dt, samples=samples, seed=seed,
                                        tolerance=tol)
        meta = read_metadata(twin)
        upper, method, entries = _bounds(controller, net, c_float)
        network_hash = meta.get("lipnet.network_hash") or hash_of(controller)
        info = {"lipnet_version": __version__, "lipschitz_upper": upper, "lipschitz_method": method,
                "network_hash": network_hash, "certificate_status": onnx_report.certificate_status,
                "certificate_reason": onnx_report.certificate_reason, "plant": plant,
                "dt": None if dt is None else float(dt)}
        text, h_text = generate(net, info, out.name)
        try:
            parity = three_way_parity(controller, twin, text, plant=plant, samples=samples, seed=seed, tolerance=tol,
                                      fallback=net.fallback, cc=cc, c_name=out.name)
        except CBuildError as exc:
            raise ParityError(f"{exc}; {out.name} was not written") from None
    if parity["passed"] is False:
        bad = {k: round(v["max_scaled"], 9) if np.isfinite(v["max_scaled"]) else "inf"
               for k, v in parity["regions"].items()}
        raise ParityError(f"the compiled C controller disagrees with torch / onnxruntime ({describe(parity)}; worst "
                          f"scaled error per region {bad}); {out.name} was not written")
    try:
        with atomic_path(header) as tmp_h, atomic_path(out) as tmp_c:
            tmp_h.write_text(h_text, encoding="ascii")
            tmp_c.write_text(text, encoding="ascii")
            if tmp_c.read_text(encoding="ascii") != text:
                raise ExportError(f"the source read back from {tmp_c} differs from the one that passed parity")
    except OSError as exc:
        raise ExportError(f"cannot write to {out.parent} ({exc.strerror or exc}); choose a writable --out") from None
    notes = [f"fallback action on a non-finite state: {[float(v) for v in net.fallback]} ({fallback_source})"]
    if not parity["compiled"]:
        notes.append(f"C parity: {describe(parity)}")
    elif parity["compiler"]["warnings"]:
        notes.append(f"compiler warnings: {parity['compiler']['warnings'].splitlines()[0][:200]}")
    if c_float == "double":
        notes.append("double arithmetic on the float64 folded weights; the bound is computed on those weights")
    onnx_summary = {"passed": onnx_report.parity["passed"], "worst": onnx_report.parity["worst"],
                    "tolerance": onnx_report.parity["tolerance"]}
    return CExportReport(path=str(out), header=str(header), n_x=net.n_x, n_u=net.n_u, c_float=c_float,
                         activation=net.activation, hidden=net.widths[1:-1], periodic=list(net.periodic),
                         plant=plant, dt=None if dt is None else float(dt), size_bytes=out.stat().st_size,
                         source_sha256=recorded_digest(text), network_hash=network_hash, lipschitz_upper=upper,
                         lipschitz_method=method, bounds=entries, certificate_status=onnx_report.certificate_status,
                         certificate_reason=onnx_report.certificate_reason,
                         fallback=[float(v) for v in net.fallback], parity=parity, onnx_parity=onnx_summary,
                         seconds=time.perf_counter() - t0, notes=notes)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if np.isfinite(v) else "inf"


def format_c_report(report: CExportReport) -> str:
    """The human-readable summary `lipnet export --out controller.c` prints."""
    p = report.parity
    lines = [f"wrote {report.path} and {report.header} ({report.size_bytes} bytes, {report.c_float} arithmetic, "
             f"{report.activation} {report.n_x} -> {' -> '.join(map(str, report.hidden))} -> {report.n_u}, "
             f"{report.seconds:.1f} s)"]
    if p["compiled"]:
        c = p["compiler"]
        lines.append(f"three-way parity (tolerance {p['tolerance']:g} on |Δu| / max(1, m(x)), m(x) the largest "
                     f"|pre-activation| at x): {p['status']}; C built with {c['version'] or c['compiler']} "
                     f"({c['flags']})")
        lines.append(f"  {'region':<11} {'states':>7} {'onnx-torch':>11} {'C-torch':>11} {'C-onnx':>11}")
        for name, r in p["regions"].items():
            lines.append(f"  {name:<11} {r['n']:>7} {_fmt(r['onnx_vs_torch']['max_scaled']):>11} "
                         f"{_fmt(r['c_vs_torch']['max_scaled']):>11} {_fmt(r['c_vs_onnx']['max_scaled']):>11}")
        nf = p["nonfinite"]
        lines.append(f"non-finite states ({nf['cases']} cases): return -1 with the fallback action {nf['fallback']}, "
                     f"never NaN out: {'checked' if nf['passed'] else 'FAILED'}")
    else:
        lines.append(f"C parity: not compiled here: {p['reason']}")
        lines.append(f"  onnxruntime vs torch on the same states: worst scaled error {_fmt(p['worst'])} "
                     f"(tolerance {p['tolerance']:g})")
    lines.append(f"Lipschitz upper bound (sound, on the weights in the C file): {report.lipschitz_upper:.6g} "
                 f"({report.lipschitz_method})")
    lines.append(f"certificate: {report.certificate_status} ({report.certificate_reason})")
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)


def inspect_c(path: str) -> tuple[dict, list[str]]:
    """`(info, problems)` of a `controller.c`: its `lipnet_info` and whether it matches its sha256."""
    from .c_build import CModelError, check_source

    source = Path(path)
    if not source.is_file():
        raise ExportError(f"no C controller at {source}; export one with `lipnet export RUN_DIR --out {source.name}`")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read {source} as C source ({exc.__class__.__name__})") from None
    info = read_info(text)
    if info is None:
        raise ExportError(f"{source} is not a controller written by `lipnet export --out controller.c`")
    problems = []
    try:
        check_source(text, str(source))
    except CModelError as exc:
        problems.append(str(exc))
    return {"path": str(source), "source_sha256": recorded_digest(text),
            "integrity": "FAILED" if problems else "verified", "problems": problems, "info": info}, problems
