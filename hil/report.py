"""The report of a HIL run or a simulation: `report.json`, `trajectory.npz` and PNG plots, in one format.

Every report has `result = {"ok", "failure"}`; every file is written through `lipnet.fileio` (a temporary
beside it, fsync, rename), so a reader or a crash never sees half a report.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

import numpy as np

from hil.stats import longest_burst, period_stats, summary_us
from lipnet.fileio import atomic_savefig, atomic_savez, atomic_write

__all__ = ["performance", "compare", "hil_report", "sim_report", "write_report", "plot_trajectory",
           "plot_latency", "json_safe", "PARITY_RTOL"]

# "Equal to float32 rounding": the HIL and simulated runs use the same float32 model on the same float32
# states, so they agree to a few float32 ulps of the state's scale (normally exactly).
PARITY_RTOL = 1e-5


def _plant_info(plant) -> dict:
    return {"name": getattr(plant, "name", ""), "spec": getattr(plant, "spec", ""), "n_x": int(plant.n_x),
            "n_u": int(plant.n_u), "dt": float(plant.dt), "state_names": list(plant.state_names),
            "input_names": list(plant.input_names)}


def performance(plant, x: np.ndarray, u: np.ndarray) -> dict:
    """Closed-loop cost `Σ stage_cost(x_k, u_k)`, its mean, the final and RMS deviation from equilibrium (periodic
    angles wrapped, as the cost sees them)."""
    import torch

    with torch.no_grad():
        cost = plant.stage_cost(torch.as_tensor(x[:-1]), torch.as_tensor(u)).double().numpy()
        dev = plant.deviation(torch.as_tensor(x, dtype=torch.float64)).numpy()  # periodic angles wrapped
    # A diverged run has NaN/inf figures: json_safe writes them as null, and `finite` says why.
    with np.errstate(over="ignore", invalid="ignore"):
        return {"cost": float(cost.sum()), "cost_per_step": float(cost.mean()) if cost.size else None,
                "final_error": float(np.linalg.norm(dev[-1])),
                "rms_error": float(np.sqrt((dev ** 2).sum(1).mean())),
                "finite": bool(np.isfinite(x).all() and np.isfinite(u).all() and np.isfinite(cost).all())}


def json_safe(obj):
    """`obj` with every NaN / inf float replaced by None (JSON has no such numbers; `allow_nan=False` holds)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def compare(x: np.ndarray, u: np.ndarray, x_ref: np.ndarray, u_ref: np.ndarray, misses=None) -> dict:
    """Parity of a run against the reference simulation, over the steps before the first miss.

    A reference that stopped early (a non-finite action or state) is compared over the steps it has."""
    n = len(u) if misses is None or not np.any(misses) else int(np.argmax(misses))
    n = min(n, len(u_ref))
    scale = max(1.0, float(np.abs(x_ref[: n + 1]).max()) if n else 1.0)
    dx = float(np.abs(x[: n + 1] - x_ref[: n + 1]).max()) if n else 0.0
    du = float(np.abs(u[:n] - u_ref[:n]).max()) if n else 0.0
    return {"compared_steps": n, "all_steps": n == len(u), "max_abs_diff_x": dx, "max_abs_diff_u": du,
            "tolerance": PARITY_RTOL * scale, "equal": bool(dx <= PARITY_RTOL * scale) if n else None}


def _base(kind: str, plant, policy_info: dict, steps: int) -> dict:
    from lipnet import __version__

    return {"kind": kind, "format": "lipnet-hil-report/1", "lipnet_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "plant": _plant_info(plant), "controller": policy_info, "steps": int(steps)}


def hil_report(record, plant, reference=None) -> dict:
    """The report dict of a `HilRecord` (and of its reference `SimRecord`, if any)."""
    from hil.host import OK, SKIPPED, STATUS_NAMES

    cfg, c, n = record.config, record.counters, len(record.u)
    miss = record.status != OK
    period_ns = 1e9 / cfg["rate"]
    overrun = record.end_ns > record.release_ns + period_ns
    rep = _base("hil", plant, {"device": record.device_info}, n)
    rep["config"] = {**cfg, "deadline_ms": cfg["deadline"] * 1e3, "delay_ms": cfg["delay"] * 1e3,
                     "x0": record.x[0].tolist(), "time_scale": float(cfg["rate"] * plant.dt)}
    per = period_stats(record.start_ns, period_ns)
    rep["timing"] = {
        "rate_hz": float(cfg["rate"]), "rate_hz_achieved": per["rate_hz"],
        "period_error_us": per["period_error_us"],
        "release_jitter_us": summary_us(record.start_ns - record.release_ns),
        "rtt_us": summary_us(record.rtt_ns), "sensor_to_actuator_us": summary_us(record.apply_ns[~miss]),
        "device_compute_us": summary_us(record.compute_ns), "plant_step_us": summary_us(record.step_ns),
        "overruns": int(overrun.sum()), "overrun_ratio": float(overrun.mean()),
        "host_kept_rate": bool(not overrun.any()),
    }
    rep["misses"] = {"count": int(miss.sum()), "ratio": float(miss.mean()), "longest_burst": longest_burst(miss),
                     "by_reason": {name: int((record.status == code).sum()) for code, name in STATUS_NAMES.items()
                                   if code != OK}}
    rep["misses"]["host_overruns_skipped"] = rep["misses"]["by_reason"][STATUS_NAMES[SKIPPED]]
    rep["timing"]["scheduling"] = c.get("scheduling", "normal")
    rep["packets"] = {k: v for k, v in c.items() if k != "scheduling"}
    rep["device_counters"] = record.device_stats
    rep["performance"] = performance(plant, record.x, record.u)
    if reference is not None:
        rep["reference"] = {"kind": "simulate", "performance": performance(plant, reference.x, reference.u),
                            "parity": compare(record.x, record.u, reference.x, reference.u, miss),
                            "failure": getattr(reference, "failure", None)}
    failure = getattr(record, "failure", None)
    rep["result"] = {"ok": failure is None, "failure": failure}
    return json_safe(rep)


def sim_report(sim, plant, policy, x0) -> dict:
    """The report dict of a `SimRecord` (same layout as a HIL report, without the network sections)."""
    info = {"source": policy.source, "kind": policy.kind, "plant": policy.plant_spec,
            "integrity": getattr(policy, "integrity", "not checked")}
    rep = _base("simulate", plant, info, len(sim.u))
    requested = getattr(sim, "steps_requested", 0) or len(sim.u)
    rep["config"] = {"x0": np.asarray(x0, float).tolist(), "duration": float(requested * plant.dt),
                     "steps_requested": int(requested)}
    rep["timing"] = {"controller_us": summary_us(sim.compute_ns), "plant_step_us": summary_us(sim.step_ns)}
    rep["misses"] = {"count": 0, "ratio": 0.0, "longest_burst": 0}
    rep["performance"] = performance(plant, sim.x, sim.u)
    failure = getattr(sim, "failure", None)
    rep["result"] = {"ok": failure is None, "failure": None if failure is None else failure["message"]}
    if failure is not None:
        rep["result"].update(step=failure["step"], what=failure["what"])
    return json_safe(rep)


def write_report(out_dir, report: dict, arrays: dict, plant, reference=None, latency: dict | None = None,
                 plots: bool = True) -> Path:
    """Write `report.json`, `trajectory.npz` and (optionally) `trajectory.png` / `latency.png` in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    atomic_savez(out / "trajectory.npz", arrays)
    report["files"] = {"trajectory": "trajectory.npz"}
    if plots:
        t = np.arange(len(arrays["x"])) * float(plant.dt)
        misses = arrays.get("status")
        plot_trajectory(out / "trajectory.png", t, arrays["x"], arrays["u"], plant, reference,
                        None if misses is None else misses != 0, title=report["kind"])
        report["files"]["trajectory_plot"] = "trajectory.png"
        if latency is not None:
            plot_latency(out / "latency.png", latency)
            report["files"]["latency_plot"] = "latency.png"
    atomic_write(out / "report.json", json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    return out / "report.json"


def plot_trajectory(path, t, x, u, plant, reference=None, misses=None, title: str = "") -> None:
    """States and actions against time; the reference simulation dashed; misses marked in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_x, n_u = x.shape[1], u.shape[1]
    fig, axes = plt.subplots(n_x + n_u, 1, figsize=(8, 1.8 * (n_x + n_u) + 0.6), sharex=True, squeeze=False)
    names = list(plant.state_names) + list(plant.input_names)
    for i, ax in enumerate(axes[:, 0]):
        is_x = i < n_x
        y, tt = (x[:, i], t) if is_x else (u[:, i - n_x], t[:-1])
        ax.plot(tt, y, lw=1.2, label=title or "run")
        if reference is not None:  # a reference that stopped early (non-finite) is drawn as far as it went
            yr = reference.x[:, i] if is_x else reference.u[:, i - n_x]
            ax.plot(tt[: len(yr)], yr, "--", lw=1.0, label="simulate")
        if misses is not None and np.any(misses):
            ax.plot(t[:-1][misses], y[:-1][misses] if is_x else y[misses], "r|", ms=6, label="miss")
        ax.set_ylabel(names[i] if i < len(names) else f"{'x' if is_x else 'u'}{i}")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("plant time [s]")
    fig.subplots_adjust(left=0.12, right=0.97, top=0.97, bottom=0.6 / fig.get_figheight(), hspace=0.15)
    atomic_savefig(fig, path, dpi=90)


def plot_latency(path, series_ns: dict) -> None:
    """Histograms (µs, log counts) of the latency series given as `{label: values in ns}`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series_ns), 1, figsize=(8, 2.2 * len(series_ns) + 0.4), squeeze=False)
    for ax, (label, v) in zip(axes[:, 0], series_ns.items(), strict=True):
        v = np.asarray(v, float)
        v = v[np.isfinite(v)] / 1e3
        if v.size:
            ax.hist(v, bins=100, log=True)
            for q, style in ((50, "-"), (99, "--")):
                ax.axvline(np.percentile(v, q), color="k", ls=style, lw=0.8, label=f"p{q} {np.percentile(v, q):.1f}")
            ax.legend(fontsize=8)
        ax.set_xlabel(f"{label} [µs]")
        ax.set_ylabel("count")
    # Fixed margins: tight_layout costs seconds on a loaded machine.
    fig.subplots_adjust(left=0.1, right=0.97, top=0.97, bottom=0.5 / fig.get_figheight(), hspace=0.5)
    atomic_savefig(fig, path, dpi=90)

