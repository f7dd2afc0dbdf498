"""`lipnet certify RUN_DIR`: Lipschitz bounds, empirical lower bound, closed loop; writes certificate.json."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run", "EXAMPLE"]

EXAMPLE = """examples:
  lipnet certify runs/cartpole                      # every fast method, table on stdout, runs/cartpole/certificate.json
  lipnet certify runs/cartpole --method all         # also the cvxpy LipSDP cross-check (minutes on 64x64)
  lipnet certify runs/cartpole --require 2.0        # exit 1 unless the tightest sound bound is <= 2.0
  lipnet certify runs/dc --plant dcmotor --method spectral --method lipsdp-schur --json
  lipnet certify runs/swingup --roa-seconds 120 --roa-box 1.5,4   # region of attraction in |θ|<1.5, |θ̇|<4
exit codes: 0 success, 1 --require failed, 2 error."""


def add_arguments(parser) -> None:
    """Arguments of `lipnet certify`."""
    from lipnet.certify.bounds import METHODS

    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder holding controller.pt")
    parser.add_argument("--plant", metavar="SPEC", default=None,
                        help="plant spec for the closed loop and the state region (default: the checkpoint's)")
    parser.add_argument("--method", action="append", choices=[*sorted(METHODS), "all"], default=None,
                        help="bound method (repeatable; default: every fast one; 'all' adds the slow cvxpy "
                             "lipsdp-neuron cross-check)")
    parser.add_argument("--require", type=float, metavar="L", default=None,
                        help="exit 1 when the tightest sound upper bound exceeds L")
    parser.add_argument("--solver", default="SCS", choices=["SCS", "CLARABEL"], help="cvxpy solver for lipsdp-neuron")
    parser.add_argument("--sdp-max-neurons", type=int, default=256, metavar="N",
                        help="skip lipsdp-neuron above N hidden neurons (default 256; it takes minutes there)")
    parser.add_argument("--no-closed-loop", action="store_true", help="skip the closed-loop certificate")
    parser.add_argument("--iqc", choices=["fallback", "always", "off"], default="fallback",
                        help="neuron-wise IQC closed-loop LMI (linear plants): when small gain fails (default), "
                             "always, or never")
    parser.add_argument("--roa", action=argparse.BooleanOptionalAction, default=True,
                        help="certified region of attraction of the closed loop and of the saturated LQR, with a "
                             "phase-plane plot roa.png (default on; --no-roa skips it)")
    parser.add_argument("--roa-seconds", type=float, default=None, metavar="S",
                        help="time budget of the controller's region (default 120 s up to 4 states, 600 s above; "
                             "the saturated LQR's gets half; the level proven so far is kept)")
    parser.add_argument("--roa-box", metavar="W1,W2,...", default=None,
                        help="half-widths of the box the region must lie in (default: the plant's evaluation region)")
    parser.add_argument("--json", action="store_true", help="print the certificate JSON instead of the table")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.6g}"


def format_table(cert) -> str:
    """Human-readable summary: one row per bound with its ratio to the empirical lower bound."""
    low = cert.lower.value if cert.lower is not None else None
    rows = [f"network {cert.network_hash[:23]}…  {cert.architecture}",
            f"{'method':<15}{'bound':>12}{'seconds':>10}{'ratio':>9}  status"]
    for b in cert.bounds:
        ratio = b.value / low if (b.value is not None and low) else None
        status = "sound" if b.sound else ("n/a" if b.value is None else "estimate")
        rows.append(f"{b.method:<15}{_fmt(b.value):>12}{b.seconds:>10.3f}{_fmt(ratio):>9}  {status}"
                    + ("" if b.sound else f" ({b.notes[:70]})"))
    if cert.lower is not None:
        rows.append(f"{'empirical lower':<15}{_fmt(low):>12}{'':>10}{'1':>9}  "
                    f"estimate over {cert.lower.region['source']}")
    t = cert.tightest
    rows.append(f"tightest sound upper bound: {_fmt(None if t is None else t.value)}"
                + ("" if t is None else f" ({t.method})"))
    cl = cert.closed_loop
    if cl is not None:
        rows.append(f"closed loop ({cl['plant']}): {cl['verdict']}")
        if cl.get("hinf") is not None:
            rows.append(f"  ‖(zI−(A+BK))⁻¹B‖∞ = {cl['hinf']:.6g}, Lip(Δ) ≤ {cl['lip_delta']:.6g} "
                        f"({cl['lip_delta_method']}), margin {cl['margin']:.4g}, allowed Lip(Δ) < "
                        f"{cl['allowed_lip_delta']:.6g}")
        for key, who in (("region", "lipnet"), ("region_lqr", "saturated LQR")):
            reg = cl.get(key)
            if reg:
                rows.append(f"  region of attraction, {who}: {_region_text(reg)}")
        iqc = cl.get("iqc")
        if iqc:
            rows.append(f"  IQC: {'passes' if iqc.get('passes') else 'fails'}: {iqc.get('reason', '')}"
                        + (f", contraction ≤ {iqc['contraction']:.6g} per step" if iqc.get("contraction") else ""))
    return "\n".join(rows)


def _region_text(reg: dict) -> str:
    if reg.get("certified"):
        return (f"certified {{V ≤ {reg['rho']:.6g}}}, {100 * reg['volume_share']:.3g}% of the box's volume "
                f"({reg['subboxes']} boxes, {reg['seconds']:.1f} s)")
    if reg.get("estimate"):
        return (f"ESTIMATE only (sampled, not certified): {{V ≤ {reg['rho']:.6g}}}, "
                f"{100 * reg['volume_share']:.3g}% of the box; {reg.get('reason', '')}")
    return f"none certified: {reg.get('reason', '')}"


def _roa_box(text):
    from lipnet.exceptions import LipnetArgument

    if text is None:
        return None
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if not values or not all(v > 0 and v < float("inf") for v in values):
        raise LipnetArgument(f"--roa-box must be comma-separated positive half-widths (one per state), got {text!r}")
    return values


def _roa_target(meta: dict) -> list | None:
    """The `train --roa` stage's target region from the checkpoint's meta, as a candidate for both laws."""
    target = meta.get("roa_target")
    try:  # a damaged entry is passed over (certify_region also skips a P that is not n×n positive definite)
        return [{"P": [[float(v) for v in row] for row in target["P"]], "rho": float(target.get("rho", 1.0))}]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def run(args) -> int:
    """Certify RUN_DIR; 0 on success, 1 when --require fails."""
    from lipnet.certify import certify_controller, write_certificate
    from lipnet.exceptions import LipnetArgument
    from lipnet.train.checkpoint import load_trained

    if args.require is not None and not args.require > 0:
        raise LipnetArgument(f"--require must be a positive number, got {args.require}")
    from lipnet.certify import METHODS

    methods = list(METHODS) if args.method and "all" in args.method else args.method
    if args.sdp_max_neurons is not None and args.sdp_max_neurons < 0:
        raise LipnetArgument(f"--sdp-max-neurons must be >= 0, got {args.sdp_max_neurons}")
    if args.roa_seconds is not None and not args.roa_seconds > 0:
        raise LipnetArgument(f"--roa-seconds must be a positive number of seconds, got {args.roa_seconds}")
    roa_box = _roa_box(args.roa_box)
    trained = load_trained(args.run_dir)
    controller = trained.controller
    spec = args.plant if args.plant is not None else trained.plant
    plant = None
    if spec:
        import plants

        plant = plants.load(spec)
        if roa_box is not None and len(roa_box) not in (1, plant.n_x):
            raise LipnetArgument(f"--roa-box needs 1 or {plant.n_x} half-widths for {spec}, got {len(roa_box)}")
    cert = certify_controller(controller, plant, methods=methods, solver=args.solver,
                              sdp_max_neurons=args.sdp_max_neurons, closed_loop=not args.no_closed_loop,
                              iqc=args.iqc, roa=args.roa, roa_seconds=args.roa_seconds, roa_box=roa_box,
                              roa_offer=_roa_target(trained.meta))
    path = write_certificate(cert, args.run_dir)
    regions = {k: v for k, v in (cert.closed_loop or {}).items() if k in ("region", "region_lqr") and v}
    if plant is not None and regions.get("region", {}).get("P"):
        from lipnet.certify.roaplot import plot_regions

        plot_regions(plant, controller, regions, path.parent / "roa.png")
    if args.json:
        print(cert.to_json())
    else:
        print(format_table(cert))
        print(f"wrote {path}")
    if args.require is not None:
        tight = cert.tightest_upper
        if tight is None or tight > args.require:
            print(f"lipnet certify: --require {args.require:g} failed: tightest sound bound "
                  f"{_fmt(tight)}", file=sys.stderr)
            return 1
    return 0
