"""The certificate: every bound, the empirical lower bound, the closed loop; `certificate.json`, hash-bound."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipnet import __version__
from lipnet.exceptions import CertificationError, RunFolderError
from lipnet.fileio import atomic_write

from .bounds import BoundRecord, upper_bounds
from .empirical import LowerBound, Region, empirical_lower_bound
from .network import mlp_of, network_hash

__all__ = ["Certificate", "certify_controller", "write_certificate", "read_certificate", "stated_bounds",
           "stated_tightest", "default_region", "CERTIFICATE_NAME", "FORMAT"]

CERTIFICATE_NAME = "certificate.json"
FORMAT = "lipnet-certificate/1"


@dataclass
class Certificate:
    """Everything `lipnet certify` established about one controller (format: ARCHITECTURE.md, Certificate)."""

    network_hash: str
    bounds: list[BoundRecord]
    lower: LowerBound | None
    closed_loop: dict | None = None
    plant: str = ""
    architecture: dict = field(default_factory=dict)
    created: str = ""

    @property
    def tightest(self) -> BoundRecord | None:
        """The sound bound with the smallest value (None when no bound is sound)."""
        sound = [b for b in self.bounds if b.sound and b.value is not None]
        return min(sound, key=lambda b: b.value) if sound else None

    @property
    def tightest_upper(self) -> float | None:
        t = self.tightest
        return None if t is None else t.value

    def to_dict(self) -> dict:
        t = self.tightest
        lower = None if self.lower is None else self.lower.to_dict()
        return {
            "format": FORMAT, "lipnet_version": __version__, "created": self.created,
            "network_hash": self.network_hash, "architecture": self.architecture, "plant": self.plant,
            "quantity": "ℓ2 → ℓ2 Lipschitz constant of the controller from raw state to saturated action "
                        "(bounds are on the folded MLP; the saturation is 1-Lipschitz per channel)",
            "bounds": [b.to_dict() for b in self.bounds],
            "tightest_upper": None if t is None else {"value": t.value, "method": t.method},
            "empirical_lower": lower,
            "closed_loop": self.closed_loop,
        }

    def to_json(self) -> str:
        return json.dumps(_plain(self.to_dict()), indent=2, ensure_ascii=False, allow_nan=False)


def _plain(obj):
    """JSON-safe copy: numpy → Python, non-finite floats → None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def default_region(controller_or_mlp, plant=None) -> Region:
    """The plant's evaluation initial-state box (±3σ when Gaussian), else `state_offset ± 3·state_scale`."""
    if plant is not None and getattr(plant, "init_eval", None) is not None:
        gaussian = " (±3σ of its Gaussian)" if plant.init_eval.kind == "normal" else ""
        return Region.around(plant.x_eq, plant.eval_box(),
                             source=f"plant {getattr(plant, 'name', '')} eval initial-state box{gaussian}")
    if hasattr(controller_or_mlp, "state_scale"):
        c = controller_or_mlp
        return Region.around(c.state_offset.double().numpy(), 3 * c.state_scale.double().numpy(),
                             source="no plant: controller state_offset ± 3·state_scale")
    net = mlp_of(controller_or_mlp)
    return Region.around(np.zeros(net.n_in), 3 * np.ones(net.n_in), source="no plant: box ±3 around 0")


def _linear_data(plant) -> tuple[np.ndarray, np.ndarray, bool]:
    """`(A, B, is_linear)` of a plant: its own matrices when linear, else `plants.linearize` at the equilibrium."""
    from plants import LinearPlant, linearize

    if isinstance(plant, LinearPlant):
        return np.asarray(plant.A, float), np.asarray(plant.B, float), True
    sys = linearize(plant)
    return np.asarray(sys.A, float), np.asarray(sys.B, float), False


def certify_controller(controller, plant=None, methods=None, region: Region | None = None,
                       solver: str = "SCS", sdp_max_neurons: int | None = 256, lower: bool = True,
                       closed_loop: bool = True, seed: int = 0, iqc: str = "fallback", roa: bool = True,
                       roa_seconds: float | None = None, roa_box=None, roa_claim: dict | None = None,
                       roa_offer: list | None = None) -> Certificate:
    """Bound, estimate and (with a plant) certify the closed loop of one controller.

    Parameters
    ----------
    controller : a `lipnet.nn.Controller` (or an `MLP`).
    plant : a `plants.Plant` or a plant spec string (loaded with `plants.load`), or None.
    methods : bound methods (default `bounds.DEFAULT_METHODS`).
    region : state box for the empirical lower bound (default `default_region`).
    solver, sdp_max_neurons : LipSDP-neuron's cvxpy solver and the size above which it is skipped.
    lower, closed_loop : compute the empirical lower bound / the closed-loop certificate.
    iqc : the neuron-wise IQC closed-loop LMI: "fallback" (only when small gain fails), "always" or "off".
    roa, roa_seconds, roa_box : certified regions of attraction of the closed loop and of the saturated LQR
        (`roa.region_certificates`; the controller's time budget, default `roa.default_seconds(n_x)`, the LQR's
        half of it; half-widths of the stated box, default the plant's
        evaluation region); `roa_claim` re-verifies a stated region instead of searching (export does that);
        `roa_offer`, regions both laws try first (the `train --roa` stage's target).
    """
    if isinstance(plant, str):
        import plants

        plant = plants.load(plant) if plant else None
    net = mlp_of(controller)
    if plant is not None and (plant.n_x != net.n_in or plant.n_u != net.n_out):
        raise CertificationError(f"plant {getattr(plant, 'spec', '') or plant.name} has n_x={plant.n_x}, "
                                 f"n_u={plant.n_u} but the controller maps {net.n_in} → {net.n_out}")
    region = default_region(controller, plant) if region is None else region
    records = upper_bounds(controller, methods, solver=solver, sdp_max_neurons=sdp_max_neurons)
    low = empirical_lower_bound(controller, region, seed=seed) if lower else None
    cl = None
    if plant is not None and closed_loop:
        from .closedloop import closed_loop_certificate

        A, B, linear = _linear_data(plant)
        limit = 10**9 if sdp_max_neurons is None else sdp_max_neurons
        cl = closed_loop_certificate(net, A, B, plant.dt, plant.x_eq, plant.u_eq, linear=linear,
                                     plant_name=getattr(plant, "spec", "") or plant.name, iqc=iqc,
                                     iqc_max_neurons=limit, solver=solver)
        if roa or roa_claim is not None:
            from .roa import region_certificates

            cl.update(region_certificates(controller, plant, seconds=roa_seconds, box=roa_box, claim=roa_claim,
                                          offer=roa_offer))
            region = cl.get("region") or {}
            if region.get("certified") and not cl.get("certified"):
                cl["verdict"] = (f"region of attraction certified: {{V ≤ {region['rho']:.6g}}} "
                                 f"({100 * region.get('volume_share', 0):.3g}% of the stated box) is invariant and "
                                 "every trajectory from it converges; no global certificate ("
                                 + cl.get("verdict", "") + ")")
    arch = {"n_x": net.n_in, "n_u": net.n_out, "hidden": net.hidden, "activation": net.activation,
            "saturation": net.saturation}
    if net.periodic:  # only then, so certificates of other controllers read as before
        arch.update(periodic=list(net.periodic), periodic_center=net.periodic_center.tolist())
    return Certificate(network_hash(controller), records, low, cl,
                       plant="" if plant is None else (getattr(plant, "spec", "") or plant.name), architecture=arch,
                       created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def write_certificate(cert: Certificate, run_dir) -> Path:
    """Write `RUN_DIR/certificate.json` atomically (a file path is used as is); returns the path."""
    path = Path(run_dir)
    if path.is_dir() or not path.suffix:
        if not path.exists():
            raise RunFolderError(f"run folder {path} does not exist")
        path = path / CERTIFICATE_NAME
    text = cert.to_json() if isinstance(cert, Certificate) else json.dumps(_plain(cert), indent=2)
    atomic_write(path, text + "\n")
    return path


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _format_problem(data) -> str | None:
    """What makes `data` not a certificate in lipnet's format (None when it is one)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return f"format {FORMAT} expected"
    if not isinstance(data.get("network_hash"), str):
        return "no network_hash"
    bounds = data.get("bounds", [])
    if not isinstance(bounds, list) or not all(
            isinstance(b, dict) and isinstance(b.get("method"), str) and isinstance(b.get("sound"), bool)
            and (b.get("value") is None or _number(b.get("value"))) for b in bounds):
        return "bounds must be a list of {method, value, sound} entries"
    tight = data.get("tightest_upper")
    if tight is not None and not (isinstance(tight, dict) and _number(tight.get("value"))
                                  and isinstance(tight.get("method"), str)):
        return "tightest_upper must be null or {value, method}"
    closed = data.get("closed_loop")
    if closed is not None and not isinstance(closed, dict):
        return "closed_loop must be null or an object"
    return None


def read_certificate(run_dir_or_path) -> dict:
    """The certificate dict from `RUN_DIR/certificate.json` or a path to the file: the one reader of the format.

    Raises `RunFolderError` for a missing or unreadable file and for one not in lipnet's format (`FORMAT`, a network
    hash, `bounds` entries `{method, value, sound}`, `tightest_upper` null or `{value, method}`).
    """
    path = Path(run_dir_or_path)
    if path.is_dir():
        path = path / CERTIFICATE_NAME
    if not path.exists():
        raise RunFolderError(f"no certificate at {path}; run `lipnet certify {path.parent}` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path} is not a readable certificate ({exc})") from None
    problem = _format_problem(data)
    if problem is not None:
        raise RunFolderError(f"{path} is not a lipnet certificate ({problem})")
    return data


def stated_bounds(cert: dict) -> list[tuple[str, float]]:
    """Every upper bound a certificate (as `read_certificate` returns it) states as sound: `(method, value)` for its
    sound `bounds` entries, then its `tightest_upper`."""
    out = [(b["method"], float(b["value"])) for b in cert.get("bounds", []) if b["sound"] and b["value"] is not None]
    tight = cert.get("tightest_upper")
    if tight is not None:
        out.append((tight["method"], float(tight["value"])))
    return out


def stated_tightest(cert: dict) -> tuple[float | None, str | None]:
    """The tightest sound upper bound a certificate states and its method (`tightest_upper`, else the smallest sound
    `bounds` entry), or `(None, None)` when it states none."""
    tight = cert.get("tightest_upper")
    if tight is not None:
        return float(tight["value"]), tight["method"]
    claims = stated_bounds(cert)
    if not claims:
        return None, None
    method, value = min(claims, key=lambda c: c[1])
    return value, method
