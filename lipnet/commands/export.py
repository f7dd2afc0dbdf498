"""`lipnet export`: a run folder's controller to one ONNX file (or C99 source) with proven parity; `--inspect`."""

from __future__ import annotations

import argparse
import json
import math
import sys

__all__ = ["add_arguments", "run", "EXAMPLE"]

EXAMPLE = """examples:
  lipnet export runs/cartpole --out controller.onnx
  lipnet export runs/cartpole --out controller_fp16.onnx --fp16 --json
  lipnet export runs/cartpole --out controller.c            # C99 controller.c + controller.h, no runtime
  lipnet export --inspect controller.onnx

The format follows --out (.c: C source, anything else: ONNX) unless --format says it. A C export is kept only
if torch, onnxruntime and the compiled C agree (three-way parity, $CC or cc/gcc/clang); without a compiler the
source is still written and the parity is reported as "not compiled here".

exit codes: 0 written; 1 parity failed (nothing written); 2 bad input; 3 internal error."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `lipnet export`."""
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="run folder holding controller.pt")
    parser.add_argument("--out", metavar="FILE.onnx|FILE.c", help="the file to write (replaced only on success; "
                        "FILE.c also writes FILE.h)")
    parser.add_argument("--format", choices=("onnx", "c"), help="onnx or c (default: from the --out extension)")
    parser.add_argument("--c-float", choices=("float", "double"), default=None,
                        help="arithmetic inside the C controller (default float; the interface is float either way)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18, the minimum of the exporter)")
    parser.add_argument("--fp16", action="store_true",
                        help="float16 weights and arithmetic (parity tolerance 1e-2; bound flagged for rounding)")
    parser.add_argument("--plant", metavar="SPEC", help="plant spec for the metadata and the parity region "
                        "(default: the checkpoint's)")
    parser.add_argument("--samples", type=int, default=10_000, help="parity states per region (default 10000)")
    parser.add_argument("--inspect", metavar="MODEL.onnx|FILE.c", help="print an exported model's metadata and "
                        "checks")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _inspect(path: str, as_json: bool) -> int:
    """Print a model's metadata and what was re-checked; exit 1 when its integrity or its claimed bound fails."""
    from pathlib import Path

    from export.errors import InvalidModelError
    from export.metadata import load_model, read_metadata
    from export.recertify import exported_bounds
    from export.reference import linear_weights
    from export.runtime import ModelError, check_integrity, session
    from lipnet.certify.bounds import spectral_bound

    model = load_model(path)
    meta = read_metadata(path)
    try:  # unverified here on purpose: inspect reports a broken file rather than refusing to look at it
        sess = session(path, warmup=0, verify=False)
    except ModelError as exc:
        raise InvalidModelError(str(exc)) from None
    recomputed = spectral_bound(linear_weights(model))
    problems = []
    try:
        check_integrity(Path(path).read_bytes(), {p.key: p.value for p in model.metadata_props}, path)
    except ModelError as exc:
        problems.append(str(exc))
    claimed = meta.get("lipnet.lipschitz_upper")
    if isinstance(claimed, (int, float)):
        bounds = exported_bounds(linear_weights(model), str(meta.get("lipnet.activation", "")), "the file")
        proven = min(b["value"] for b in bounds)
        if not claimed >= proven * (1 - 1e-6):
            problems.append(f"the claimed Lipschitz bound {claimed:.6g} is below {proven:.6g}, the tightest bound "
                            "recomputed on the file's weights: the bound or the weights were altered")
    info = {"path": path, "n_x": sess.n_x, "n_u": sess.n_u, "opset": [o.version for o in model.opset_import],
            "ops": [n.op_type for n in model.graph.node], "spectral_product_recomputed": recomputed,
            "integrity": "verified" if not problems else "FAILED", "problems": problems, "metadata": meta}
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return 1 if problems else 0
    print(f"{path}: state [batch, {sess.n_x}] float32 -> action [batch, {sess.n_u}] float32, "
          f"opset {info['opset']}, {len(info['ops'])} nodes ({', '.join(dict.fromkeys(info['ops']))})")
    width = max((len(k) for k in meta), default=0)
    for key in sorted(meta):
        value = meta[key]
        if key in ("lipnet.certificate", "lipnet.parity", "lipnet.lipschitz_bounds"):
            value = json.dumps(value)
            value = value if len(value) <= 100 else value[:97] + "..."
        print(f"  {key:<{width}}  {_fmt(value)}")
    print(f"  recomputed Π‖W‖₂ of the weights in the file: {recomputed:.6g}")
    print(f"integrity: {info['integrity']}")
    for problem in problems:
        print(f"lipnet export --inspect: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _print_report(report) -> None:
    print(f"wrote {report.path} ({report.size_bytes} bytes, opset {report.opset}, {report.precision}, "
          f"{report.seconds:.1f} s)")
    print(f"parity vs torch (tolerance {report.parity['tolerance']:g} on |Δu| / max(1, m(x)), m(x) the largest "
          "|pre-activation| at x):")
    print(f"  {'region':<11} {'states':>7} {'max |Δu|':>11} {'scaled':>11}  numpy max |Δu|")
    for name, r in report.parity["regions"].items():
        print(f"  {name:<11} {r['n']:>7} {r['max_abs']:>11.3g} {r['max_scaled']:>11.3g}  {r['numpy_max_abs']:.3g}")
    print(f"Lipschitz upper bound (sound, on the exported weights): {report.lipschitz_upper:.6g}")
    for b in report.bounds:
        print(f"  {b['method']:<24} {b['value']:>11.6g}  {'sound' if b['sound'] else 'reference'}: {b['applies_to']}")
    print(f"certificate: {report.certificate_status} ({report.certificate_reason})")
    for note in report.notes:
        print(f"note: {note}")


def run(args) -> int:
    """Export (or inspect) and print a summary; exit 0 only when the model was written and passed parity."""
    from export.errors import ExportError

    if args.inspect:
        if args.run_dir or args.out:
            raise ExportError("--inspect reads a model; give no RUN_DIR or --out with it")
        if str(args.inspect).endswith(".c"):
            return _inspect_c(args.inspect, args.json)
        return _inspect(args.inspect, args.json)
    if not args.run_dir or not args.out:
        print("lipnet export: error: RUN_DIR and --out are required (or --inspect MODEL.onnx)", file=sys.stderr)
        return 2
    fmt = args.format or ("c" if str(args.out).endswith(".c") else "onnx")
    if fmt == "c":
        return _export_c(args)
    if args.c_float or str(args.out).endswith((".c", ".h")):
        raise ExportError(f"--out {args.out} with --format onnx: --c-float and a .c/.h name are for the C export; "
                          "use --format c or an .onnx name")
    from export.errors import ParityError
    from export.exporter import export_controller

    try:
        report = export_controller(args.run_dir, args.out, opset=args.opset, fp16=args.fp16, plant=args.plant,
                                   samples=args.samples)
    except ParityError as exc:  # a check failed: exit 1, nothing written
        print(f"lipnet export: parity failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        _print_report(report)
    return 0


def _export_c(args) -> int:
    """`--out controller.c`: C99 source and header, three-way parity; exit 1 (nothing written) when it fails."""
    from export.c_export import export_c, format_c_report
    from export.errors import ExportError, ParityError

    if args.fp16:
        raise ExportError("--fp16 is for ONNX models; the C export computes in float (or --c-float double)")
    try:
        report = export_c(args.run_dir, args.out, c_float=args.c_float or "float", plant=args.plant,
                          samples=args.samples, opset=args.opset)
    except ParityError as exc:
        print(f"lipnet export: parity failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else format_c_report(report))
    if not report.parity["compiled"]:  # written, not proven here: said on stderr too, exit 0
        print(f"lipnet export: {report.path}: C parity not compiled here: {report.parity['reason']}", file=sys.stderr)
    return 0


def _inspect_c(path: str, as_json: bool) -> int:
    """Print a C export's lipnet_info and its sha256 check; exit 1 when the source does not match it."""
    from export.c_export import inspect_c

    info, problems = inspect_c(path)
    if as_json:
        print(json.dumps(info, indent=2, default=str))
    else:
        meta = info["info"]
        print(f"{path}: C controller, state [{meta.get('n_x')}] float -> action [{meta.get('n_u')}] float, "
              f"{meta.get('c_float')} arithmetic")
        for key in sorted(meta):
            print(f"  {key:<20}  {_fmt(meta[key])}")
        print(f"integrity: {info['integrity']} (sha256 {info['source_sha256']})")
    for problem in problems:
        print(f"lipnet export --inspect: {problem}", file=sys.stderr)
    return 1 if problems else 0
