"""Build a generated `controller.c` with the system C compiler and run it through ctypes; C parity at export.

Torch-free at import (standard library and numpy only), so the device agent serves `controller.c` or a built
`.so` on a board without torch or onnxruntime (`lipnet hil serve controller.c`). The compiler is `$CC` when
set (exactly that program: a missing one means no compiler), else the first of `cc`, `gcc`, `clang` on PATH;
flags `-std=c99 -O2` (the parity build adds `-Wall -Wextra -pedantic` and records any warning).

`three_way_parity` (imports torch and onnxruntime when called) compares torch, onnxruntime and the compiled C
on the same states: the export parity regions (training, far, saturation) plus edge cases (zero, the centre,
corners and axes of the box out to 10⁵ times it, tiny states), and checks the non-finite contract
(NaN/inf state → `LIPNET_ERR_NONFINITE_STATE` and the fallback action; never NaN out).
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .c_source import ERROR_CODES, read_info, recorded_digest, source_digest

__all__ = ["CBuildError", "CModelError", "CPolicy", "find_compiler", "compiler_version", "compile_shared",
           "load_c_policy", "check_source", "build_agent", "three_way_parity", "edge_states", "CFLAGS",
           "WARNINGS", "C_SUFFIXES", "LIB_SUFFIXES", "agent_source", "describe"]

CFLAGS = ("-std=c99", "-O2")
WARNINGS = ("-Wall", "-Wextra", "-pedantic")
C_SUFFIXES = (".c",)
LIB_SUFFIXES = (".so", ".dylib")
_NONFINITE_STATE = ERROR_CODES["LIPNET_ERR_NONFINITE_STATE"]
_NONFINITE_ACTION = ERROR_CODES["LIPNET_ERR_NONFINITE_ACTION"]

# Compiled beside controller.c into the parity library: one ctypes call for a whole batch.
_HARNESS = r"""/* lipnet parity harness: many states per ctypes call (not part of the exported controller) */
int lipnet_policy(const float *state, float *action);
int lipnet_batch(const float *states, float *actions, int *codes, long n, int n_x, int n_u);
int lipnet_batch(const float *states, float *actions, int *codes, long n, int n_x, int n_u)
{
    long i;
    int bad = 0;
    for (i = 0; i < n; ++i) {
        codes[i] = lipnet_policy(states + i * n_x, actions + i * n_u);
        bad += codes[i] != 0;
    }
    return bad;
}
"""


class CBuildError(RuntimeError):
    """No C compiler here, or the compiler failed on the source."""


class CModelError(ValueError):
    """A file that is not a (verifiable) lipnet C controller: missing, foreign, modified, or without its info."""


# --- compiler ---------------------------------------------------------------------------------------------
def find_compiler(cc: str | None = None) -> tuple[list[str] | None, str]:
    """`(command, name)` of the C compiler, or `(None, why there is none)`.

    `cc` (else `$CC`, which may carry flags) is used alone when given; otherwise `cc`, `gcc`, `clang` on PATH.
    """
    spec = cc if cc is not None else os.environ.get("CC")
    if spec:
        cmd = shlex.split(spec)
        exe = shutil.which(cmd[0]) if cmd else None
        if exe is None:
            return None, f"CC={spec!r} is not an executable program"
        return [exe, *cmd[1:]], Path(cmd[0]).name
    for name in ("cc", "gcc", "clang"):
        exe = shutil.which(name)
        if exe:
            return [exe], name
    return None, "no C compiler on PATH (cc, gcc or clang; or set CC)"


def compiler_version(cmd: list[str]) -> str:
    """The first line of `cc --version` ('' when it does not say)."""
    try:
        res = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (res.stdout.strip().splitlines() or [""])[0]


def _run_compiler(args: list[str], what: str, label: str) -> str:
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CBuildError(f"the C compiler {what} could not run on {label} ({exc.__class__.__name__}: {exc})") \
            from None
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr or res.stdout).strip().splitlines() if ln.strip()]
        first = next((ln for ln in lines if "error" in ln), lines[0] if lines else f"exit status {res.returncode}")
        raise CBuildError(f"the C compiler {what} failed on {label}: {first.strip()[:300]}")
    return res.stderr.strip()


def compile_shared(source: str | os.PathLike, out: str | os.PathLike, cc: str | None = None,
                   harness: bool = True, warnings: bool = True) -> dict:
    """Compile `source` (+ the batch harness) into the shared library `out`; returns what was run.

    Raises `CBuildError` when there is no compiler or it fails.
    """
    cmd, what = find_compiler(cc)
    if cmd is None:
        raise CBuildError(what)
    source, out = Path(source), Path(out)
    with tempfile.TemporaryDirectory(prefix="lipnet-c-") as tmp:
        extra = []
        if harness:
            extra.append(str(Path(tmp) / "lipnet_harness.c"))
            Path(extra[0]).write_text(_HARNESS, encoding="ascii")
        args = [*cmd, *CFLAGS, *(WARNINGS if warnings else ()), "-shared", "-fPIC", str(source), *extra,
                "-o", str(out), "-lm"]
        log = _run_compiler(args, what, source.name)
    return {"compiler": what, "version": compiler_version(cmd), "flags": " ".join((*CFLAGS, "-shared", "-fPIC")),
            "warnings": log}


# --- the controller through ctypes ------------------------------------------------------------------------
class CPolicy:
    """A compiled lipnet controller: `policy(state) -> action` (float32), `run_batch(states)`, `call(state)`.

    Attributes: `n_x`, `n_u`, `info` (the file's `lipnet_info`), `metadata` (the same as `lipnet.*` keys, like an
    ONNX model's), `integrity`, `provider` (`"c"`), `path`, `last_code` (the return code of the last call).
    Not thread-safe (preallocated buffers), like `export.runtime.ControllerSession`.
    """

    def __init__(self, library: str | os.PathLike, *, integrity: str = "not checked", source: str | None = None):
        try:
            self._lib = ctypes.CDLL(str(library))
        except OSError as exc:
            raise CModelError(f"{library} is not a loadable shared library ({exc}); build it with `cc -std=c99 "
                              "-O2 -shared -fPIC controller.c -o controller.so -lm`") from None
        try:
            fn = self._lib.lipnet_policy
            info_addr = ctypes.addressof(ctypes.c_char.in_dll(self._lib, "lipnet_info"))
        except (AttributeError, ValueError):
            raise CModelError(f"{library} has no lipnet_policy / lipnet_info: not a controller exported by "
                              "`lipnet export --out controller.c`") from None
        try:
            info = json.loads(ctypes.string_at(info_addr).decode("utf-8"))
            self.n_x, self.n_u = int(info["n_x"]), int(info["n_u"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise CModelError(f"{library}: lipnet_info is not the JSON of a lipnet C export") from None
        if not (0 < self.n_x <= 1024 and 0 < self.n_u <= 1024):
            raise CModelError(f"{library}: dimensions n_x={self.n_x}, n_u={self.n_u} outside 1..1024")
        try:
            sha_addr = ctypes.addressof(ctypes.c_char.in_dll(self._lib, "lipnet_source_sha256"))
            self.source_sha256 = ctypes.string_at(sha_addr).decode("ascii", "replace")
        except (AttributeError, ValueError):
            self.source_sha256 = None
        fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_void_p], ctypes.c_int
        self._fn = fn
        self._batch = getattr(self._lib, "lipnet_batch", None)  # in libraries lipnet builds (the harness)
        if self._batch is not None:
            self._batch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_int,
                                    ctypes.c_int]
            self._batch.restype = ctypes.c_int
        self.info = info
        self.metadata = {f"lipnet.{k}": v for k, v in info.items()}
        self.metadata["lipnet.source_sha256"] = self.source_sha256
        self.integrity = integrity
        self.provider = self.requested_provider = "c"
        self.fallback_reason = None
        self.path = source or str(library)
        self.call_path = "ctypes"
        self._x = np.zeros(self.n_x, np.float32)
        self._u = np.zeros(self.n_u, np.float32)
        self._xp, self._up = self._x.ctypes.data, self._u.ctypes.data
        self.last_code = 0

    def call(self, state) -> tuple[int, np.ndarray]:
        """`(return code, action)` for one state (`[n_x]` or `[1, n_x]`)."""
        action = self(state)
        return self.last_code, action

    def __call__(self, state) -> np.ndarray:
        """The action (float32 `[n_u]`, a fresh array) for one state; the return code is in `last_code`."""
        if type(state) is not np.ndarray:
            state = np.asarray(state, dtype=np.float32)
        if state.size != self.n_x or state.shape[-1] != self.n_x:
            raise ValueError(f"expected one state of {self.n_x} values ([n_x] or [1, n_x]), got shape {state.shape}")
        self._x[:] = state.reshape(self.n_x)
        self.last_code = self._fn(self._xp, self._up)
        return self._u.copy()

    def run_batch_codes(self, states) -> tuple[np.ndarray, np.ndarray]:
        """`(actions float32 [b, n_u], return codes int32 [b])` for states `[b, n_x]`."""
        x = np.ascontiguousarray(states, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_x:
            raise ValueError(f"expected states of shape [batch, {self.n_x}], got {x.shape}")
        u = np.zeros((len(x), self.n_u), np.float32)
        codes = np.zeros(len(x), np.int32)
        if self._batch is not None:
            self._batch(x.ctypes.data, u.ctypes.data, codes.ctypes.data, len(x), self.n_x, self.n_u)
        else:
            for i in range(len(x)):
                u[i] = self(x[i])
                codes[i] = self.last_code
        return u, codes

    def run_batch(self, states) -> np.ndarray:
        """Actions (float32 `[b, n_u]`) for states `[b, n_x]`."""
        return self.run_batch_codes(states)[0]

    def __repr__(self) -> str:
        return f"CPolicy(n_x={self.n_x}, n_u={self.n_u}, path={self.path!r}, integrity={self.integrity!r})"


def check_source(text: str, label: str = "the C source") -> str:
    """`"verified"` when a `controller.c` matches the sha256 it records; raises `CModelError` otherwise.

    A C file that is not a lipnet export at all (no `lipnet_info`) is refused too: its dimensions are unknown.
    """
    if read_info(text) is None:
        raise CModelError(f"{label} is not a controller written by `lipnet export --out controller.c` (no "
                          "lipnet_info); export one")
    recorded = recorded_digest(text)
    if recorded is None:
        raise CModelError(f"{label} is a lipnet C export without exactly one lipnet_source_sha256 line (removed or "
                          "duplicated); re-export it with `lipnet export`")
    if source_digest(text) != recorded:
        raise CModelError(f"{label}: the source does not match the sha256 recorded at export "
                          "(lipnet_source_sha256): the file was modified or is corrupted; re-export it with "
                          "`lipnet export`")
    return "verified"


def _read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CModelError(f"cannot read {path} as C source ({exc.__class__.__name__}: {exc})") from None


def load_c_policy(path: str | os.PathLike, cc: str | None = None, verify: bool = True) -> CPolicy:
    """A `CPolicy` from `controller.c` (checked against its sha256, compiled here) or a built `.so`.

    A `.so` is served as it is: its integrity says it cannot be checked (the digest covers the source).
    Raises `CModelError` (a ValueError) for a bad file and `CBuildError` (a RuntimeError) without a compiler.
    """
    path = Path(path)
    if not path.is_file():
        raise CModelError(f"no C controller at {path}; export one with `lipnet export RUN_DIR --out {path.stem}.c`")
    if path.suffix in LIB_SUFFIXES:
        return CPolicy(path.resolve(), integrity="unverified (a compiled library: the sha256 covers the source; "
                       "serve the .c to check it)", source=str(path))
    if path.suffix not in C_SUFFIXES:
        raise CModelError(f"{path}: expected controller.c or a built .so / .dylib")
    text = _read_source(path)
    integrity = check_source(text, str(path)) if verify else "not checked (verify=False)"
    cmd, what = find_compiler(cc)
    if cmd is None:
        raise CBuildError(f"cannot build {path}: {what}; build the library where a compiler is (cc -std=c99 -O2 "
                          f"-shared -fPIC {path.name} -o {path.stem}.so -lm) and serve the .so")
    with tempfile.TemporaryDirectory(prefix="lipnet-c-") as tmp:
        lib = Path(tmp) / f"{path.stem}.so"
        compile_shared(path, lib, cc=cc, harness=True, warnings=False)
        # dlopen maps the file: it may be removed with the folder once loaded.
        return CPolicy(lib, integrity=integrity, source=str(path))


# --- the standalone C agent -------------------------------------------------------------------------------
def agent_source() -> Path:
    """`hil/c/agent.c`, the standalone UDP device agent."""
    import hil

    return Path(hil.__file__).resolve().parent / "c" / "agent.c"


def build_agent(controller_c: str | os.PathLike, out: str | os.PathLike, cc: str | None = None) -> dict:
    """Compile `hil/c/agent.c` with `controller.c` (and its `.h` beside it) into the executable `out`.

    The source's sha256 is checked first (`CModelError` if it does not match); the agent then reports
    `integrity: verified at build` in its handshake. `hil/c/Makefile` does the same without Python.
    """
    controller_c = Path(controller_c)
    check_source(_read_source(controller_c), str(controller_c))
    header = controller_c.with_suffix(".h")
    if not header.is_file():
        raise CModelError(f"{header} is missing: the agent needs the header written beside {controller_c.name}")
    cmd, what = find_compiler(cc)
    if cmd is None:
        raise CBuildError(what)
    args = [*cmd, *CFLAGS, *WARNINGS, "-DLIPNET_AGENT_VERIFIED=1", f'-DLIPNET_CONTROLLER_HEADER="{header.name}"',
            f"-I{header.parent}", str(agent_source()), str(controller_c), "-o", str(out), "-lm"]
    log = _run_compiler(args, what, "hil/c/agent.c")
    return {"compiler": what, "command": " ".join(args), "warnings": log, "path": str(out)}


# --- parity at export -------------------------------------------------------------------------------------
def edge_states(centre: np.ndarray, half: np.ndarray, seed: int = 0) -> np.ndarray:
    """Zero, the centre, tiny states, each axis and random corners of the box at 1, 10, 10³ and 10⁵ times it."""
    centre, half = np.asarray(centre, np.float64), np.asarray(half, np.float64)
    n = centre.size
    rows = [np.zeros(n), centre, np.full(n, 1e-30), np.full(n, -1e-40)]
    for factor in (1.0, 10.0, 1e3, 1e5):
        for i in range(n):
            for sign in (1.0, -1.0):
                e = np.zeros(n)
                e[i] = sign * factor * half[i]
                rows.append(centre + e)
        rng = np.random.default_rng(seed)
        signs = rng.choice([-1.0, 1.0], size=(min(2 ** n, 32), n))
        rows.extend(centre + factor * half * signs)
    return np.asarray(rows).astype(np.float32)


def _nonfinite_check(policy: CPolicy, centre: np.ndarray, fallback: np.ndarray) -> dict:
    """NaN/inf in each coordinate → code -1 and exactly the fallback; huge states → a finite action."""
    cases, problems = 0, []
    fb = np.asarray(fallback, np.float32)
    for i in range(policy.n_x):
        for bad in (np.nan, np.inf, -np.inf):
            x = np.asarray(centre, np.float32).copy()
            x[i] = bad
            code, u = policy.call(x)
            cases += 1
            if code != _NONFINITE_STATE or not np.array_equal(u, fb):
                problems.append(f"state[{i}]={bad}: code {code}, action {u.tolist()}")
    big = np.float32(3e38)
    for sign in (1.0, -1.0):
        x = np.full(policy.n_x, sign * big, np.float32)
        code, u = policy.call(x)
        cases += 1
        if not np.isfinite(u).all() or code not in (0, _NONFINITE_ACTION) or (
                code == _NONFINITE_ACTION and not np.array_equal(u, fb)):
            problems.append(f"state {sign * big:g}·1: code {code}, action {u.tolist()}")
    return {"cases": cases, "passed": not problems, "problems": problems[:5],
            "fallback": [float(v) for v in fb],
            "contract": "NaN/inf state -> LIPNET_ERR_NONFINITE_STATE (-1) and the fallback action; overflow -> "
                        "LIPNET_ERR_NONFINITE_ACTION (-2) and the fallback; never NaN or inf out"}


def three_way_parity(controller, onnx_path, c_text: str, *, plant: str | None, samples: int, seed: int,
                     tolerance: float, fallback, cc: str | None = None, c_name: str = "controller.c") -> dict:
    """torch ↔ onnxruntime ↔ compiled C on the same states; `status` is passed, failed or "not compiled here".

    The metric is the ONNX parity's: `|Δu| / max(1, m(x))`, m(x) the largest |pre-activation| at x. Without a
    compiler only the onnxruntime ↔ torch column is filled and `passed` is None.
    """
    from .parity import compare, parity_states, torch_actions, working_magnitude
    from .runtime import session

    sampled = parity_states(controller, plant, n=samples, seed=seed)
    box = sampled["box"]
    states = dict(sampled["states"])
    states["edge"] = edge_states(np.asarray(box["centre"]), np.asarray(box["half_width"]), seed)
    sess = session(onnx_path, warmup=0)
    cmd, what = find_compiler(cc)
    result = {"tolerance": float(tolerance), "box": box, "box_source": sampled["source"],
              "metric": "max |u_a − u_b| / max(1, m(x)), m(x) the largest |pre-activation| of any layer at x",
              "compiled": cmd is not None, "compiler": None, "regions": {}}
    policy, tmp = None, None
    try:
        if cmd is not None:
            tmp = tempfile.TemporaryDirectory(prefix="lipnet-c-parity-")
            src = Path(tmp.name) / c_name
            src.write_text(c_text, encoding="utf-8")
            build = compile_shared(src, Path(tmp.name) / "controller.so", cc=cc, harness=True, warnings=True)
            result["compiler"] = build
            policy = CPolicy(Path(tmp.name) / "controller.so", integrity="verified")
        worst = 0.0
        for name, x in states.items():
            ref = torch_actions(controller, x)
            scale = np.maximum(1.0, working_magnitude(controller, x))
            onnx_u = sess.run_batch(x)
            row = {"n": int(len(x)), "onnx_vs_torch": compare(ref, onnx_u, scale)}
            pairs = [row["onnx_vs_torch"]]
            if policy is not None:
                c_u, codes = policy.run_batch_codes(x)
                row["c_vs_torch"] = compare(ref, c_u, scale)
                row["c_vs_onnx"] = compare(onnx_u, c_u, scale)
                row["c_nonzero_codes"] = int((codes != 0).sum())
                pairs += [row["c_vs_torch"], row["c_vs_onnx"]]
                if row["c_nonzero_codes"]:
                    row["c_vs_torch"]["max_scaled"] = float("inf")  # a finite state must never take the fallback
            row["max_scaled"] = max(p["max_scaled"] for p in pairs)
            worst = max(worst, row["max_scaled"])
            result["regions"][name] = row
        result["worst"] = worst
        if policy is None:
            result.update(status="not compiled here", passed=None,
                          reason=f"{what}: the C source was written without compiling it; compile it and run the "
                                 "parity where a C compiler is (`lipnet export` there)")
            return result
        result["nonfinite"] = _nonfinite_check(policy, np.asarray(box["centre"]), fallback)
        passed = worst <= tolerance and result["nonfinite"]["passed"]
        result.update(status="passed" if passed else "failed", passed=bool(passed))
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def describe(parity: dict) -> str:
    """One line: how the C parity went."""
    if not parity.get("compiled"):
        return f"not compiled here ({parity.get('reason', '')})"
    line = f"{parity['status']}: worst scaled error {parity['worst']:.3g} (tolerance {parity['tolerance']:g})"
    bad = parity.get("nonfinite", {})
    return line if bad.get("passed", True) else line + f"; non-finite contract broken: {bad['problems'][0]}"
