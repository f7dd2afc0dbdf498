"""Running a sweep: the sweep folder, one trial (in whatever process runs it), the executors, the driver loop.

Why plain Ray tasks rather than Ray Tune: a trial here is a whole, self-checkpointing `lipnet train` run whose
folder *is* the state (`train_state.pt`, written atomically every `checkpoint_every` steps). Resuming, skipping
finished trials and recording failures therefore follow from the run folders themselves, and the sweep needs from
Ray only "run this function with N CPUs somewhere and give me its result". Tune would add its own experiment
state (`~/ray_results`, a trainable API, reporting via `tune.report`, its own checkpoint copies and resume
logic) on top of ours, a second source of truth about which trial is finished, and a dependency on
`ray[tune]` (pandas, pyarrow, ...). Its schedulers (ASHA, PBT) need intermediate results to stop or mutate
trials, which grid and random sweeps of fixed-budget runs do not use. `ray.remote(num_cpus=...)` plus `ray.wait`
keeps the driver loop ~50 lines, lets the same loop run with no Ray at all (`--backend local`), and lets the
summary be rebuilt from the folders alone.

The sweep folder carries the marker `.lipnet-sweep` (with a random token), `sweep.json` (the last row of every
trial that ever ran in it), `summary.csv` and `summary.png`, and one run folder per trial. A worker that sees the
marker with the same token writes the trial's run folder in place; one that does not (a cluster node without a
shared file system) trains in a temporary folder and sends the files back, which the driver writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipnet import __version__
from lipnet.exceptions import LipnetArgument, RunFolderError
from lipnet.fileio import TEMP_PATTERN, atomic_write

from .spec import SweepSpec, Trial, expand, short_name

__all__ = ["run_sweep", "run_trial", "SweepResult", "check_sweep_dir", "SWEEP_MARKER", "SUMMARY_CSV", "SUMMARY_PNG",
           "STATE_FILE", "RAY_MISSING", "read_run", "trial_mode", "check_address"]

SWEEP_MARKER = ".lipnet-sweep"
STATE_FILE = "sweep.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_PNG = "summary.png"
STATE_FORMAT = "lipnet-sweep/1"
RAY_MISSING = ('Ray is not installed: pip install -e ".[sweep]" (or pip install "ray>=2.10"), or run the sweep '
               "without Ray: --backend local")
METRIC_COLUMNS = ["cost_vs_lqr_optimum", "cost_vs_saturated_lqr", "success_rate", "lipschitz_bound"]
CERT_COLUMNS = ["certified_bound", "certified_method", "closed_loop_certified"]
TAIL_COLUMNS = ["steps", "seconds", "wall_seconds", "threads", "node", "error"]
LOCAL_NODE_IP = "127.0.0.2"  # the embedded Ray's node address (Linux routes all of 127.0.0.0/8 to loopback)
# The files a finished trial's folder holds (sent back by a worker without the sweep folder).
_DONE = ("report.md", "summary.json")


# --------------------------------------------------------------------------------------------- the sweep folder
def _contains_cwd(path: Path) -> bool:
    cwd = Path.cwd().resolve()
    target = path.resolve()
    return cwd == target or target in cwd.parents


def check_sweep_dir(out: str | os.PathLike) -> Path:
    """Raise `RunFolderError` unless `out` can hold this sweep (new, empty, or a lipnet sweep folder); no writes."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} exists and is not a folder; choose another --out for the sweep")
    if out.exists() and any(out.iterdir()) and not (out / SWEEP_MARKER).is_file():
        what = "a lipnet run folder" if (out / ".lipnet-run").exists() else "not a lipnet sweep folder"
        raise RunFolderError(f"--out {out} is {what} (no {SWEEP_MARKER} marker) and not empty; choose a new or "
                             "empty folder, or the folder of an earlier sweep to continue it")
    if out.exists() and _contains_cwd(out) and any(out.iterdir()):
        raise RunFolderError(f"--out {out} is the working directory or a folder above it; choose a folder below "
                             "it, e.g. --out sweeps/NAME")
    return out


def _read_token(out: Path) -> str | None:
    try:
        token = json.loads((out / SWEEP_MARKER).read_text()).get("token")
    except (OSError, ValueError, AttributeError):
        return None
    return str(token) if token else None


def _prepare_sweep_dir(out: Path, token: str) -> None:
    """Create the sweep folder and its marker (with `token`, unless it has one)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if _read_token(out) is None:
            atomic_write(out / SWEEP_MARKER,
                         json.dumps({"lipnet_sweep": 1, "lipnet_version": __version__, "token": token}) + "\n")
    except OSError as exc:
        raise RunFolderError(f"cannot write to sweep folder {out}: {exc.strerror or exc}; choose a writable --out") \
            from None


def _load_state(out: Path) -> dict[str, dict]:
    try:
        data = json.loads((out / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    trials = data.get("trials") if isinstance(data, dict) and data.get("format") == STATE_FORMAT else None
    return {k: v for k, v in trials.items() if isinstance(v, dict)} if isinstance(trials, dict) else {}


def trial_mode(run_dir: Path, certify: bool, failed_before: bool = False) -> str:
    """What a trial's folder needs: `done`, `certify` (trained, no certificate), `resume`, `restart` or `new`."""
    from lipnet.certify import CERTIFICATE_NAME
    from lipnet.train.rundir import TRAIN_STATE

    if not run_dir.exists():
        return "new"
    if all((run_dir / name).is_file() for name in _DONE):
        return "certify" if certify and not (run_dir / CERTIFICATE_NAME).is_file() else "done"
    if (run_dir / TRAIN_STATE).is_file() and not failed_before:
        return "resume"
    return "restart"


# ------------------------------------------------------------------------------------------------- one trial
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    if isinstance(exc, ModuleNotFoundError) and ("lipnet" in text or "plants" in text):
        text += " (install lipnet on every node of the cluster)"
    return f"{exc.__class__.__name__}: {text}"[:500]


def _node_name() -> str:
    ray = sys.modules.get("ray")
    if ray is not None:
        with contextlib.suppress(Exception):
            if ray.is_initialized():
                return ray.get_runtime_context().get_node_id()[:12]
    return socket.gethostname()


def _sees_sweep(folder: Path, token: str | None) -> bool:
    try:
        return bool(token) and json.loads((folder / SWEEP_MARKER).read_text()).get("token") == token
    except (OSError, ValueError, AttributeError):
        return False


def _quiet(*_args, **_kw) -> None:
    pass


def read_run(run_dir: Path) -> dict[str, Any]:
    """The summary columns of a finished run folder (summary.json, and certificate.json when there is one)."""
    from lipnet.certify import CERTIFICATE_NAME, read_certificate
    from lipnet.certify.certificate import stated_tightest

    s = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    ev = s.get("evaluation") or {}
    row = {"cost_vs_lqr_optimum": ev.get("cost_ratio_to_lqr_optimum"),
           "cost_vs_saturated_lqr": ev.get("cost_ratio_to_lqr_policy"),
           "success_rate": ev.get("success_rate"),
           "lipschitz_bound": s.get("lipschitz_bound_by_construction"),
           "steps": s.get("steps"), "seconds": s.get("seconds")}
    cert_path = run_dir / CERTIFICATE_NAME
    if cert_path.is_file():
        cert = read_certificate(cert_path)
        bound, method = stated_tightest(cert)
        row.update(certified_bound=bound, certified_method=method,
                   closed_loop_certified=(cert.get("closed_loop") or {}).get("certified"))
    return row


def _work(task: dict, work: Path) -> None:
    import plants
    from lipnet.train import loop
    from lipnet.train.config import RunConfig
    from lipnet.train.report import write_report

    mode = task["mode"]
    if mode == "new" and work.exists():  # a task Ray retried (its worker died): go on from what the first left
        mode = trial_mode(work, bool(task.get("certify")))
    if mode in ("new", "resume", "restart"):
        cfg = RunConfig.from_dict(task["config"])
        result = loop.train(cfg, work, resume=mode == "resume", overwrite=mode == "restart", progress=False,
                            log=_quiet)
        write_report(result)
    if task.get("certify") and mode != "done":
        from lipnet.certify import certify_controller, write_certificate
        from lipnet.train.checkpoint import load_trained

        trained = load_trained(work)
        spec = trained.plant
        cert = certify_controller(trained.controller, plants.load(spec) if spec else None,
                                  roa=bool(task.get("roa")))
        write_certificate(cert, work)


def run_trial(task: dict) -> dict:
    """Train (or resume, or certify) one trial; never raises for the trial's own errors: they go into the row.

    `task`: id, config (RunConfig dict), run_dir, token (of the sweep folder), mode (`trial_mode`), certify,
    roa, threads (torch CPU threads, = the CPUs the trial was given), files (the folder's files, to resume on a
    node that cannot see it). Returns the trial's summary row; `_files` holds the run folder's files when the
    sweep folder was not visible from here.
    """
    import torch

    from lipnet._threads import torch_threads

    t0 = time.perf_counter()
    threads = max(1, int(task.get("threads") or 1))
    row: dict[str, Any] = {"trial": task["id"], "status": "failed", "error": "", "threads": threads,
                           "node": _node_name()}
    run_dir = Path(task["run_dir"])
    tmp = None
    try:
        work = run_dir
        if not _sees_sweep(run_dir.parent, task.get("token")):
            tmp = Path(tempfile.mkdtemp(prefix="lipnet-trial-"))
            work = tmp / run_dir.name
            if task.get("files"):
                work.mkdir()
                for name, data in task["files"].items():
                    atomic_write(work / name, data)
        with torch_threads(threads), warnings.catch_warnings():
            row["threads"] = torch.get_num_threads()
            warnings.simplefilter("ignore")  # the report lists the run's warnings; here they would break the bar
            _work(task, work)
        row.update(read_run(work))
        row["status"] = "done"
        if tmp is not None:
            row["_files"] = {p.name: p.read_bytes() for p in work.iterdir()
                             if p.is_file() and not TEMP_PATTERN.match(p.name)}
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded and the sweep goes on
        row["error"] = _one_line(exc)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        row["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return row


# ------------------------------------------------------------------------------------------------- executors
class _Local:
    """Without Ray: in this process one after another (jobs = 1), or a pool of `jobs` processes."""

    remote = False

    def __init__(self, jobs: int = 1):
        self.jobs = jobs
        self.pool = None
        self.futures: dict = {}

    def describe(self) -> str:
        return "locally, one trial at a time" if self.jobs == 1 else f"locally, {self.jobs} processes"

    @property
    def capacity(self) -> int:
        return self.jobs

    def run(self, tasks: list[dict], on_start):
        if self.jobs == 1:
            for task in tasks:
                on_start(task["id"])
                yield run_trial(task)
            return
        import concurrent.futures as cf
        import multiprocessing

        self.pool = cf.ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"))
        queue = list(tasks)
        while queue or self.futures:
            while queue and len(self.futures) < self.jobs:
                task = queue.pop(0)
                self.futures[self.pool.submit(run_trial, task)] = task
                on_start(task["id"])
            finished, _ = cf.wait(list(self.futures), return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                task = self.futures.pop(fut)
                try:
                    yield fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker process that died
                    yield {"trial": task["id"], "status": "failed", "error": _one_line(exc)}

    def close(self) -> None:
        if self.pool is not None:
            if self.futures:  # interrupted: stop the running trials (their folders keep the last checkpoint)
                for proc in list(getattr(self.pool, "_processes", {}).values()):
                    with contextlib.suppress(Exception):
                        proc.terminate()
            self.pool.shutdown(wait=not self.futures, cancel_futures=True)
            self.pool = None
            self.futures.clear()


def check_address(address: str, timeout: float = 5.0) -> None:
    """Raise `LipnetArgument` unless `address` (HOST:PORT, `ray://HOST:PORT` or `auto`) answers on TCP."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port_text = hostport.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise LipnetArgument(f"--address must be HOST:PORT of a Ray cluster's head (the address `ray start --head` "
                             f"prints, e.g. 10.0.0.5:6379), got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout):
            pass
    except OSError as exc:
        raise LipnetArgument(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one there with "
                             f"`ray start --head --port {port_text}`, or fix --address / RAY_ADDRESS") from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise LipnetArgument(RAY_MISSING) from None
    return ray


class _Ray:
    """Plain Ray tasks, `num_cpus=cpus_per_trial` each: an embedded local Ray, or an existing cluster."""

    def __init__(self, address: str | None, cpus_per_trial: int):
        ray = self.ray = _import_ray()
        self.address, self.cpus = address, cpus_per_trial
        self.remote = address is not None
        self.refs: dict = {}
        common = {"logging_level": logging.ERROR, "log_to_driver": False}
        with _quiet_ray_logs():
            if address is None:
                # "local": a fresh cluster on this machine's cores, even where `ray start` made another. Its nodes
                # talk over loopback: Ray rewrites 127.0.0.1 to the machine's network address, not 127.0.0.2.
                local = {"address": "local", "include_dashboard": False, "object_store_memory": 200 * 1024**2,
                         **common}
                try:
                    ray.init(**local, _node_ip_address=LOCAL_NODE_IP if sys.platform.startswith("linux") else None)
                except RuntimeError as exc:  # a Ray without the private option: its default address
                    if "_node_ip_address" not in str(exc):
                        raise
                    ray.init(**local)
            else:
                try:
                    ray.init(address=address, **common)
                except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, its own auth errors, ...
                    raise LipnetArgument(
                        f"cannot join the Ray cluster at {address} ({_one_line(exc)[:200]}); check that it runs the "
                        "same Ray and Python versions as here and, with token authentication (Ray >= 2.59), that "
                        "its token is here too (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)") from None
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            largest = max((n.get("Resources", {}).get("CPU", 0) for n in nodes), default=0)
            if largest < cpus_per_trial:
                raise LipnetArgument(f"no node of the Ray cluster has {cpus_per_trial} CPUs (the largest has "
                                     f"{largest:g}); lower --cpus-per-trial")
            self.nodes = len(nodes)
            self.fn = ray.remote(run_trial).options(num_cpus=cpus_per_trial, max_retries=1)
        except BaseException:
            ray.shutdown()
            raise

    def describe(self) -> str:
        cpus = self.ray.cluster_resources().get("CPU", 0)
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
        return f"on {where} ({self.nodes} node{'s' * (self.nodes != 1)}, {cpus:g} CPUs, {self.cpus} per trial)"

    @property
    def capacity(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1) // self.cpus))

    def run(self, tasks: list[dict], on_start):
        ray = self.ray
        queue = list(tasks)
        while queue or self.refs:
            while queue and len(self.refs) < self.capacity:  # what runs now; the rest waits here, not in Ray
                task = queue.pop(0)
                self.refs[self.fn.remote(task)] = task
                on_start(task["id"])
            ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=1.0)
            for ref in ready:
                task = self.refs.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the worker or its node died
                    yield {"trial": task["id"], "status": "failed", "error": _one_line(exc)}

    def close(self) -> None:
        for ref in list(self.refs):
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        self.refs.clear()
        with contextlib.suppress(Exception), _quiet_ray_logs():
            self.ray.shutdown()


@contextlib.contextmanager
def _quiet_ray_logs():
    """Ray's start-up notices go to its loggers; the sweep prints its own one line."""
    loggers = [logging.getLogger(n) for n in ("ray", "ray._private", "ray._private.worker")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


# ------------------------------------------------------------------------------------------------ the driver
@dataclass
class SweepResult:
    """What a sweep produced: its folder, one row per trial (summary.csv), the counts."""

    out: Path
    rows: list[dict]
    done: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    columns: list[str] = field(default_factory=list)

    @property
    def summary_csv(self) -> Path:
        return self.out / SUMMARY_CSV

    @property
    def summary_png(self) -> Path:
        return self.out / SUMMARY_PNG


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return value


def _columns(trials: list[Trial], certify: bool, rows: list[dict]) -> list[str]:
    keys: list[str] = []
    for t in trials:
        for p in t.values:
            if short_name(p) not in keys:
                keys.append(short_name(p))
    for always in ("plant", "optimizer"):
        if always not in keys:
            keys.append(always)
    cert = certify or any(r.get("certified_bound") not in (None, "") for r in rows)
    return ["trial", "status", *keys, *METRIC_COLUMNS, *(CERT_COLUMNS if cert else []), *TAIL_COLUMNS]


def _write_summary(out: Path, columns: list[str], rows: list[dict], state: dict[str, dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: _cell(r.get(c)) for c in columns})
    atomic_write(out / SUMMARY_CSV, buf.getvalue())
    atomic_write(out / STATE_FILE, json.dumps({"format": STATE_FORMAT, "lipnet_version": __version__,
                                               "trials": state}, indent=1, default=str) + "\n")


def _config_columns(trial: Trial) -> dict[str, Any]:
    cols = {short_name(p): v for p, v in trial.values.items()}
    cols.setdefault("plant", trial.config["plant"])
    cols.setdefault("optimizer", trial.config["train"]["optimizer"])
    return cols


def _store_files(run_dir: Path, files: dict[str, bytes]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if "/" in name or name.startswith(".."):
            continue
        atomic_write(run_dir / name, data)


def _folder_files(run_dir: Path) -> dict[str, bytes] | None:
    if not run_dir.is_dir():
        return None
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and not TEMP_PATTERN.match(p.name)}


def make_executor(backend: str, address: str | None, cpus_per_trial: int, jobs: int):
    """The executor for `backend` ("ray" or "local"); Ray is started or joined here (raises on bad input)."""
    if backend == "local":
        if address:
            raise LipnetArgument("--address needs the Ray backend; drop --backend local (or the address)")
        return _Local(jobs)
    if backend != "ray":
        raise LipnetArgument(f"--backend must be ray or local, got {backend!r}")
    if jobs != 1:
        raise LipnetArgument("--jobs is for --backend local; with Ray, --cpus-per-trial and the cluster's CPUs "
                             "decide how many trials run at once")
    _import_ray()
    if address:
        check_address(address)
    return _Ray(address, cpus_per_trial)


def run_sweep(spec: SweepSpec | list[Trial], out: str | os.PathLike, backend: str = "ray",
              address: str | None = None, cpus_per_trial: int = 1, jobs: int = 1, certify: bool | None = None,
              roa: bool | None = None, progress: bool = True, log=print) -> SweepResult:
    """Run every trial of `spec` (a `SweepSpec`, or trials from `expand`) into `out/<trial-id>/`.

    Everything is checked (the trials, `out`, Ray and the address) before the sweep folder is touched. Finished
    trials are skipped, killed ones resumed; a failed trial is a row with its error. `summary.csv`/`sweep.json`
    are rewritten after every trial, so a Ctrl-C (re-raised as KeyboardInterrupt) leaves them current.
    """
    t_start = time.perf_counter()
    if isinstance(spec, SweepSpec):
        trials = expand(spec)
        certify = spec.certify if certify is None else certify
        roa = spec.roa if roa is None else roa
    else:
        trials = list(spec)
    certify, roa = bool(certify), bool(roa)
    if roa and not certify:
        raise LipnetArgument("--roa certifies regions of attraction as part of --certify; add --certify")
    if not isinstance(cpus_per_trial, int) or not 1 <= cpus_per_trial <= 1024:
        raise LipnetArgument(f"--cpus-per-trial must be an integer from 1 to 1024, got {cpus_per_trial!r}")
    if not isinstance(jobs, int) or not 1 <= jobs <= 1024:
        raise LipnetArgument(f"--jobs must be an integer from 1 to 1024, got {jobs!r}")
    out = check_sweep_dir(out)
    rows: dict[str, dict] = {}
    pending: list[str] = []
    result = SweepResult(out=out, rows=[])
    state = _load_state(out)
    token = _read_token(out) or uuid.uuid4().hex
    plan = []
    for t in trials:  # what each trial needs, from its folder (read only)
        run_dir = out / t.id
        before = state.get(t.id) or {}
        mode = trial_mode(run_dir, certify, failed_before=before.get("status") == "failed")
        row = {"trial": t.id, **_config_columns(t)}
        if mode == "done":
            stored = before if before.get("status") == "done" else {}
            try:
                row.update({**stored, **read_run(run_dir), "status": "done", "error": ""})
            except (OSError, ValueError) as exc:
                mode = "restart"
                row.update(error=_one_line(exc))
        if mode != "done":
            row["status"] = "pending"
            pending.append(t.id)
        rows[t.id] = row
        plan.append((t, mode))
    # Ray is started (or joined) only when there is something to run, and before the folder is touched.
    executor = make_executor(backend, address, cpus_per_trial, jobs) if pending else _Local(1)
    bar = None
    try:
        _prepare_sweep_dir(out, token)
        tasks = []
        for t, mode in plan:
            if mode == "done":
                continue
            run_dir = out / t.id
            task = {"id": t.id, "config": t.config, "run_dir": str(run_dir.resolve()), "token": token,
                    "mode": mode, "certify": certify, "roa": roa, "threads": cpus_per_trial}
            if executor.remote and mode in ("resume", "certify"):
                task["files"] = _folder_files(run_dir)
            tasks.append(task)
        result.skipped = len(trials) - len(tasks)
        columns = _columns(trials, certify, list(rows.values()))
        result.columns = columns

        def flush():
            state.update({k: {c: v for c, v in r.items() if not c.startswith("_")} for k, r in rows.items()})
            _write_summary(out, columns, [rows[t.id] for t in trials], state)

        resumed = sum(1 for task in tasks if task["mode"] == "resume")
        log(f"sweep: {len(trials)} trials in {out} ({result.skipped} finished before, {resumed} to resume), "
            + (executor.describe() if tasks else "nothing to run"))
        flush()
        counts = {"done": result.skipped, "failed": 0, "running": 0}
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(trials), initial=result.skipped, desc="sweep", unit="trial", leave=True)
            bar.set_postfix(counts)

        def on_start(trial: str) -> None:
            rows[trial]["status"] = "running"
            counts["running"] += 1
            if bar is not None:
                bar.set_postfix(counts)
            flush()

        for finished in executor.run(tasks, on_start):
            tid = finished["trial"]
            files = finished.pop("_files", None)
            if files and finished.get("status") == "done":
                try:
                    _store_files(out / tid, files)
                except OSError as exc:
                    finished.update(status="failed", error=_one_line(exc))
            rows[tid].update(finished)
            pending.remove(tid)
            counts["running"] -= 1
            counts["done" if finished["status"] == "done" else "failed"] += 1
            if finished["status"] != "done":
                msg = f"trial {tid} failed: {finished.get('error', '')}"
                (bar.write(msg, file=sys.stderr) if bar is not None else log(msg))
            if bar is not None:
                bar.set_postfix(counts)
                bar.update(1)
            flush()
    except KeyboardInterrupt:
        result.interrupted = True
        for tid in pending:
            rows[tid]["status"] = "interrupted" if rows[tid].get("status") == "running" else "pending"
        if (out / SWEEP_MARKER).exists() and rows and result.columns:
            with contextlib.suppress(Exception):
                state.update({k: {c: v for c, v in r.items() if not c.startswith("_")} for k, r in rows.items()})
                _write_summary(out, result.columns, [rows[t.id] for t in trials], state)
        raise
    finally:
        if bar is not None:
            bar.close()
        executor.close()
        result.rows = [rows[t.id] for t in trials if t.id in rows]
        result.done = sum(1 for r in result.rows if r.get("status") == "done")
        result.failed = sum(1 for r in result.rows if r.get("status") == "failed")
        result.seconds = time.perf_counter() - t_start
        if result.rows and (out / SWEEP_MARKER).exists():
            with contextlib.suppress(Exception):
                from .summary import plot_summary

                plot_summary(result.rows, out / SUMMARY_PNG)
    return result
