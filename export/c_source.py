"""C99 source of an exported controller: one `controller.c` (self-contained) and its `controller.h`.

The generated code computes the function the ONNX exporter folds into one graph, in raw plant units:

    u = sat(W_D σ(⋯ σ(W_1 f(x) + b_1) ⋯) + b_D)

input and output scalings folded into the first and last layers (`Controller.folded_weights`), f the sin/cos
features of periodic states (identity without), σ the controller's activation and sat its actuator saturation
(smooth tanh, hard clip, or none; per channel as `Controller.saturate`). No malloc, no static mutable state
(reentrant), weights as `static const` arrays stored transposed (`w[in][out]`, so the inner loop runs over
independent outputs and vectorises without reassociating sums), scratch on the stack. libm only where the
function needs it (`tanh` activation or saturation, periodic features).

One entry point, `int lipnet_policy(const float *state, float *action)`: 0, or a negative code with the
fallback action written when a state is NaN/inf (`LIPNET_ERR_NONFINITE_STATE`) or the arithmetic overflowed
(`LIPNET_ERR_NONFINITE_ACTION`); the action is never NaN or inf. Finiteness is tested on the bit pattern, so
it survives `-ffast-math`.

Integrity: the last line, `const char lipnet_source_sha256[] = "...";`, is the sha256 of every other line of the
file (`source_digest`); `lipnet hil serve` and `lipnet export --inspect` check it, and so does
`hil/c/Makefile` with `grep -v` and `sha256sum`. Needs numpy only (no torch).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

__all__ = ["C_FORMAT", "C_FLOATS", "SUPPORTED_ACTIVATIONS", "ERROR_CODES", "DIGEST_PREFIX", "CNetwork",
           "c_network", "generate", "source_digest", "recorded_digest", "read_info", "c_string", "c_literal"]

C_FORMAT = "lipnet-c/1"
C_FLOATS = ("float", "double")
# Every activation of lipnet.nn.activations.ACTIVATIONS (a test checks that the two lists agree).
SUPPORTED_ACTIVATIONS = ("relu", "tanh", "groupsort")
ERROR_CODES = {"LIPNET_OK": 0, "LIPNET_ERR_NONFINITE_STATE": -1, "LIPNET_ERR_NONFINITE_ACTION": -2}
DIGEST_PREFIX = "const char lipnet_source_sha256[] = "
_DIGEST_LINE = re.compile(r'^const char lipnet_source_sha256\[\] = "([0-9a-f]{64})";$', re.M)
_INFO_LINE = re.compile(r'^const char lipnet_info\[\] = (".*");$', re.M)


@dataclass
class CNetwork:
    """What the C source computes, with every number as it is written in the file (float64 holding them exactly).

    `weights[l]` is `W_l` (out × in) and `biases[l]` `b_l`, rounded to the C type; `plan` is
    `export.folded.saturation_plan`; `periodic` / `centre` the periodic state indices and their centres;
    `fallback` the action written on a non-finite state (float32).
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activation: str
    plan: dict
    n_x: int
    n_u: int
    c_float: str = "float"
    periodic: tuple[int, ...] = ()
    centre: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fallback: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def uses_libm(self) -> bool:
        """Whether the code calls tanh, sin or cos (link with -lm)."""
        return self.activation == "tanh" or bool(self.plan["tanh"].any()) or bool(self.periodic)

    @property
    def widths(self) -> list[int]:
        """Input features, hidden widths, n_u."""
        return [self.weights[0].shape[1], *[w.shape[0] for w in self.weights]]


def _rounded(a, c_float: str) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a.astype(np.float32).astype(np.float64) if c_float == "float" else a.copy()


def c_network(controller, c_float: str = "float", fallback=None) -> CNetwork:
    """The `CNetwork` of a trained `Controller` (eval mode): folded weights rounded to `c_float`.

    Raises ValueError for an activation the C export does not implement (the message lists those it does).
    """
    from .folded import saturation_plan

    if c_float not in C_FLOATS:
        raise ValueError(f"unknown C arithmetic {c_float!r}; valid: {', '.join(C_FLOATS)}")
    if controller.activation not in SUPPORTED_ACTIVATIONS:
        raise ValueError(f"activation {controller.activation!r} is not supported by the C export; supported: "
                         f"{', '.join(SUPPORTED_ACTIVATIONS)} (retrain with --activation one of them, or export "
                         "to ONNX)")
    folded = controller.folded_weights()
    weights = [_rounded(w, c_float) for w, _ in folded]
    biases = [_rounded(b, c_float) for _, b in folded]
    lo, hi = controller.limits()
    # The limits are float32 buffers (exact in float64); the smooth saturation's centre and half width are
    # rounded like the folded graph's buffers.
    plan = saturation_plan(lo, hi, controller.saturation, controller.has_limits)
    plan = {**plan, "centre": _rounded(plan["centre"], c_float), "half": _rounded(plan["half"], c_float)}
    periodic = tuple(int(p) for p in getattr(controller, "periodic", ()))
    centre = _rounded(controller.periodic_center(), "float") if periodic else np.zeros(0)
    n_u = int(controller.n_u)
    fb = np.zeros(n_u) if fallback is None else np.asarray(fallback, np.float64).reshape(n_u)
    fb = np.clip(fb, lo, hi) if controller.has_limits else fb
    if not np.isfinite(fb).all():
        raise ValueError(f"the fallback action {fb.tolist()} is not finite")
    return CNetwork(weights, biases, controller.activation, plan, int(controller.n_x), n_u, c_float, periodic,
                    centre, fb.astype(np.float32))


# --- C text helpers ---------------------------------------------------------------------------------------
def c_literal(value: float, c_float: str = "float") -> str:
    """A C floating literal that reads back exactly as `value` (float32 with an `f` suffix, or double)."""
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"non-finite constant {v} cannot be written as a C literal")
    text = format(np.float32(v).item() if c_float == "float" else v, ".9g" if c_float == "float" else ".17g")
    if not any(ch in text for ch in ".en"):
        text += ".0"
    return text + ("f" if c_float == "float" else "")


def c_string(text: str) -> str:
    """`text` as a C string literal: ASCII only, quotes, backslashes and `?` (trigraphs) escaped."""
    out = []
    for ch in str(text):
        if ch in '"\\?':
            out.append("\\" + ch)
        elif 32 <= ord(ch) < 127:
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode("utf-8"))
    return '"' + "".join(out) + '"'


def _comment(text: str) -> str:
    """Text safe inside a /* */ comment: ASCII, no comment end, no trigraph, no line splice."""
    text = str(text).encode("ascii", "backslashreplace").decode("ascii")
    text = text.replace("*/", "* /").replace("??", "? ?")
    return text + " " if text.endswith("\\") else text  # a backslash at the end of a line would splice it


def _array(name: str, values: np.ndarray, c_type: str, c_float: str, per_line: int = 8) -> str:
    values = np.asarray(values, np.float64)
    lit = [c_literal(v, c_float) for v in values.reshape(-1)]
    if values.ndim == 1:
        rows = [", ".join(lit[i:i + per_line]) for i in range(0, len(lit), per_line)]
        return f"static const {c_type} {name}[{values.shape[0]}] = {{\n    " + ",\n    ".join(rows) + "\n};\n"
    n_out = values.shape[1]
    blocks = []
    for r in range(values.shape[0]):
        row = lit[r * n_out:(r + 1) * n_out]
        lines = [", ".join(row[i:i + per_line]) for i in range(0, n_out, per_line)]
        blocks.append("    {" + ",\n     ".join(lines) + "}")
    return f"static const {c_type} {name}[{values.shape[0]}][{n_out}] = {{\n" + ",\n".join(blocks) + "\n};\n"


def _formula(net: CNetwork) -> str:
    sigma = {"relu": "relu", "tanh": "tanh", "groupsort": "groupsort2"}[net.activation]
    inner = "f(x)"
    for l in range(len(net.weights)):
        inner = f"W_{l + 1} {inner} + b_{l + 1}"
        if l < len(net.weights) - 1:
            inner = f"{sigma}({inner})"
    return f"u = sat({inner})"


def _saturation_text(net: CNetwork) -> list[str]:
    plan, lines = net.plan, []
    for k in range(net.n_u):
        lo, hi = plan["low"][k], plan["high"][k]
        if plan["mode"] == "none" or not (math.isfinite(lo) or math.isfinite(hi)):
            lines.append(f"u[{k}]: none (unbounded)")
        elif plan["tanh"][k]:
            lines.append(f"u[{k}]: smooth, c + h tanh((v - c) / h), c = {plan['centre'][k]:.9g}, h = "
                         f"{plan['half'][k]:.9g}, then clamped to [{lo:.9g}, {hi:.9g}]")
        else:
            lines.append(f"u[{k}]: clipped to [{lo:.9g}, {hi:.9g}]")
    return lines


# --- the two files --------------------------------------------------------------------------------------
def _header_block(net: CNetwork, info: dict) -> str:
    """The interface: include guard, #defines, prototypes (shared by controller.h and controller.c)."""
    dt = info.get("dt")
    d = [
        "#ifndef LIPNET_CONTROLLER_H",
        "#define LIPNET_CONTROLLER_H",
        "",
        f"#define LIPNET_FORMAT {c_string(C_FORMAT)}",
        f"#define LIPNET_N_X {net.n_x}",
        f"#define LIPNET_N_U {net.n_u}",
        f"#define LIPNET_N_FEATURES {net.widths[0]}",
        f"#define LIPNET_HIDDEN {c_string(','.join(str(w) for w in net.widths[1:-1]))}",
        f"#define LIPNET_ACTIVATION {c_string(net.activation)}",
        f"#define LIPNET_C_FLOAT {c_string(net.c_float)}",
        f"#define LIPNET_PLANT {c_string(info.get('plant') or '')}",
        f"#define LIPNET_DT {c_literal(dt, 'double') if dt is not None else '0.0'}"
        + ("" if dt is not None else "  /* unknown: the run recorded no sample time */"),
        f"#define LIPNET_LIPSCHITZ_UPPER {c_literal(info['lipschitz_upper'], 'double')}",
        f"#define LIPNET_LIPSCHITZ_METHOD {c_string(info['lipschitz_method'])}",
        f"#define LIPNET_NETWORK_HASH {c_string(info.get('network_hash') or '')}",
        f"#define LIPNET_CERTIFICATE_STATUS {c_string(info.get('certificate_status') or '')}",
        f"#define LIPNET_USES_LIBM {int(net.uses_libm)}",
        "",
    ]
    for name, code in ERROR_CODES.items():
        d.append(f"#define {name} {code}" if code == 0 else f"#define {name} ({code})")
    d += [
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        "/* state: LIPNET_N_X floats in raw plant units; action: LIPNET_N_U floats (the saturated command).",
        " * Returns LIPNET_OK, or a negative LIPNET_ERR_* code with the fallback action written. */",
        "int lipnet_policy(const float *state, float *action);",
        "",
        "/* JSON: format, plant, dt, dimensions, bound, hashes, fallback (what `lipnet hil serve` reports). */",
        "extern const char lipnet_info[];",
        "/* sha256 of every other line of controller.c (lipnet checks it before building or serving). */",
        "extern const char lipnet_source_sha256[];",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "",
        "#endif /* LIPNET_CONTROLLER_H */",
        "",
    ]
    return "\n".join(d)


def _banner(net: CNetwork, info: dict, c_name: str, h_name: str, what: str) -> str:
    dt = info.get("dt")
    cert = info.get("certificate_status") or "missing"
    libm = ("tanhf/sinf/cosf" if net.c_float == "float" else "tanh/sin/cos") if net.uses_libm else None
    lines = [
        f"lipnet C export ({C_FORMAT}): {what}, generated by lipnet {info.get('lipnet_version', '?')} "
        "`lipnet export`.",
        f"Do not edit: the last line of {c_name} is the sha256 of every other line, checked by `lipnet hil serve`,",
        "`lipnet export --inspect` and hil/c/Makefile.",
        "",
        f"Controller: raw plant state x (LIPNET_N_X = {net.n_x} floats) -> actuator command u (LIPNET_N_U = "
        f"{net.n_u} floats)",
        f"  {_formula(net)}",
        "  f(x) = x" if not net.periodic else
        f"  f(x) = [x_i, or sin(x_i - c_i) for periodic i in {list(net.periodic)}] ++ [cos(x_p - c_p) - 1 per "
        "periodic p]",
        "  input and output scaling are folded into W_1, b_1 and W_D, b_D; layers "
        + " -> ".join(str(w) for w in net.widths) + f"; activation {net.activation}",
        *[f"  saturation {s}" for s in _saturation_text(net)],
        f"  arithmetic: {net.c_float} ({'IEEE binary32' if net.c_float == 'float' else 'IEEE binary64'}); "
        "interface float32",
        f"Plant: {info.get('plant') or '(not recorded)'}   dt: "
        + (f"{dt:g} s" if dt is not None else "(not recorded)"),
        f"Lipschitz upper bound (l2, state -> action, sound, computed on the weights in this file): "
        f"{info['lipschitz_upper']:.9g} ({info['lipschitz_method']})",
        f"Certificate: {cert}" + (f" ({info['certificate_reason']})" if info.get("certificate_reason") else ""),
        f"Network hash (lipnet certify): {info.get('network_hash') or '(unavailable)'}",
        "",
        "Call:  float x[LIPNET_N_X], u[LIPNET_N_U];  int rc = lipnet_policy(x, u);",
        "  rc LIPNET_OK (0): u is the controller's action.",
        "  rc LIPNET_ERR_NONFINITE_STATE (-1): some x[i] is NaN or +-inf; u is the fallback action "
        f"{[float(v) for v in net.fallback]}",
        "     (the plant's equilibrium action within the limits, or zeros when the plant is not known).",
        "  rc LIPNET_ERR_NONFINITE_ACTION (-2): the arithmetic overflowed (|x| near FLT_MAX); u is the fallback.",
        "  u never holds NaN or inf. No malloc, no mutable globals (reentrant, thread-safe); stack: "
        f"{2 * max(net.widths)} x {net.c_float}.",
        f"Build: cc -std=c99 -O2 -c {c_name}" + (f"   (link with -lm: {libm})" if libm else
                                                  "   (no libm needed)"),
        f"  shared library for ctypes / `lipnet hil serve`: cc -std=c99 -O2 -shared -fPIC {c_name} -o "
        f"{c_name[:-2]}.so" + (" -lm" if libm else ""),
        f"  interface: {h_name}; the standalone UDP agent: hil/c/Makefile (hil/PROTOCOL.md).",
    ]
    return "/*\n" + "".join(f" * {_comment(line)}\n" if line else " *\n" for line in lines) + " */\n"


def _code(net: CNetwork, info: dict) -> str:
    real, cf = ("float", "float") if net.c_float == "float" else ("double", "double")
    fn = {"tanh": "tanhf", "sin": "sinf", "cos": "cosf"} if real == "float" else \
        {"tanh": "tanh", "sin": "sin", "cos": "cos"}
    zero = c_literal(0.0, cf)
    out = []
    out.append("#include <stdint.h>\n#include <string.h>\n" + ("#include <math.h>\n" if net.uses_libm else ""))
    out.append(f"\ntypedef {real} lipnet_real_t;\n\n")
    for l, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        out.append(f"/* layer {l + 1}: {w.shape[1]} -> {w.shape[0]}, stored transposed: lipnet_w{l + 1}[in][out] */\n")
        out.append(_array(f"lipnet_w{l + 1}", w.T, "lipnet_real_t", cf))
        out.append(_array(f"lipnet_b{l + 1}", b, "lipnet_real_t", cf))
    out.append(_array("lipnet_fallback", net.fallback, "float", "float"))
    info_json = json.dumps(info, sort_keys=False, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    out.append(f"\nconst char lipnet_info[] = {c_string(info_json)};\n")
    out.append("""
static int lipnet_finite(float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return (bits & 0x7f800000u) != 0x7f800000u;
}

static void lipnet_write_fallback(float *action)
{
    int k;
    for (k = 0; k < LIPNET_N_U; ++k)
        action[k] = lipnet_fallback[k];
}
""")
    width = max(net.widths)
    body = [
        "int lipnet_policy(const float *state, float *action)",
        "{",
        f"    lipnet_real_t a[{width}], b[{width}];",
        "    int i, o, k;",
        "",
        "    for (i = 0; i < LIPNET_N_X; ++i) {",
        "        if (!lipnet_finite(state[i])) {",
        "            lipnet_write_fallback(action);",
        "            return LIPNET_ERR_NONFINITE_STATE;",
        "        }",
        "    }",
    ]
    if not net.periodic:
        body += ["    for (i = 0; i < LIPNET_N_X; ++i)", "        a[i] = (lipnet_real_t)state[i];"]
    else:
        body += ["    /* features: sin/cos of the periodic states about their centres, the others as they are */"]
        body += ["    for (i = 0; i < LIPNET_N_X; ++i)", "        a[i] = (lipnet_real_t)state[i];"]
        for j, (p, c) in enumerate(zip(net.periodic, net.centre, strict=True)):
            # float: the difference is taken in float32 like the exported graph; double: exactly.
            body += ["    {",
                     f"        const lipnet_real_t d = (lipnet_real_t)state[{p}] - {c_literal(c, cf)};",
                     f"        a[{p}] = {fn['sin']}(d);",
                     f"        a[{net.n_x + j}] = {fn['cos']}(d) - {c_literal(1.0, cf)};",
                     "    }"]
    src, dst = "a", "b"
    n_layers = len(net.weights)
    for l, w in enumerate(net.weights):
        n_out, n_in = w.shape
        body += ["",
                 f"    /* layer {l + 1}: {n_in} -> {n_out} */",
                 f"    for (o = 0; o < {n_out}; ++o)",
                 f"        {dst}[o] = lipnet_b{l + 1}[o];",
                 f"    for (i = 0; i < {n_in}; ++i) {{",
                 f"        const lipnet_real_t z = {src}[i];",
                 f"        for (o = 0; o < {n_out}; ++o)",
                 f"            {dst}[o] += lipnet_w{l + 1}[i][o] * z;",
                 "    }"]
        if l < n_layers - 1:
            if net.activation == "relu":  # written so that NaN propagates (caught at the output)
                body += [f"    for (o = 0; o < {n_out}; ++o)",
                         f"        if ({dst}[o] < {zero})",
                         f"            {dst}[o] = {zero};"]
            elif net.activation == "tanh":
                body += [f"    for (o = 0; o < {n_out}; ++o)", f"        {dst}[o] = {fn['tanh']}({dst}[o]);"]
            else:  # GroupSort of size 2 (MaxMin) on the pairs (2i, 2i + 1): [max, min]
                body += [f"    for (o = 0; o < {n_out}; o += 2) {{",
                         f"        if ({dst}[o] < {dst}[o + 1]) {{",
                         f"            const lipnet_real_t t = {dst}[o];",
                         f"            {dst}[o] = {dst}[o + 1];",
                         f"            {dst}[o + 1] = t;",
                         "        }",
                         "    }"]
        src, dst = dst, src
    plan = net.plan
    body += ["", "    /* actuator saturation */"]
    for k in range(net.n_u):
        lo, hi = plan["low"][k], plan["high"][k]
        body.append("    {")
        body.append(f"        lipnet_real_t v = {src}[{k}];")
        if plan["mode"] != "none":
            if plan["tanh"][k]:
                c, h = c_literal(plan["centre"][k], cf), c_literal(plan["half"][k], cf)
                body.append(f"        v = {c} + {h} * {fn['tanh']}((v - {c}) / {h});")
            if math.isfinite(lo):
                body.append(f"        if (v < {c_literal(lo, cf)})")
                body.append(f"            v = {c_literal(lo, cf)};")
            if math.isfinite(hi):
                body.append(f"        if (v > {c_literal(hi, cf)})")
                body.append(f"            v = {c_literal(hi, cf)};")
        body.append(f"        action[{k}] = (float)v;")
        body.append("    }")
    body += ["    for (k = 0; k < LIPNET_N_U; ++k) {",
             "        if (!lipnet_finite(action[k])) {",
             "            lipnet_write_fallback(action);",
             "            return LIPNET_ERR_NONFINITE_ACTION;",
             "        }",
             "    }",
             "    return LIPNET_OK;",
             "}", ""]
    out.append("\n" + "\n".join(body))
    return "".join(out)


def source_digest(text: str) -> str:
    """sha256 (hex) of every line of a generated `controller.c` but the `lipnet_source_sha256` one."""
    kept = "".join(line for line in text.splitlines(keepends=True) if not line.startswith(DIGEST_PREFIX))
    return hashlib.sha256(kept.encode("utf-8")).hexdigest()


def recorded_digest(text: str) -> str | None:
    """The digest a `controller.c` records (None when it has no `lipnet_source_sha256` line, or several)."""
    found = _DIGEST_LINE.findall(text)
    return found[0] if len(found) == 1 else None


def read_info(text: str) -> dict | None:
    """The `lipnet_info` JSON of a generated `controller.c` (None when there is none or it does not parse)."""
    m = _INFO_LINE.search(text)
    if not m:
        return None
    literal = m.group(1)[1:-1]
    raw = re.sub(r"\\([0-7]{3}|.)", lambda g: chr(int(g.group(1), 8)) if len(g.group(1)) == 3 else g.group(1),
                 literal)
    try:
        obj = json.loads(raw.encode("latin-1").decode("utf-8"))
    except (ValueError, UnicodeError):
        return None
    return obj if isinstance(obj, dict) else None


def generate(net: CNetwork, info: dict, c_name: str = "controller.c") -> tuple[str, str]:
    """`(controller.c text, controller.h text)` of `net`; `info` is the `lipnet_info` JSON object.

    `info` must hold `lipschitz_upper` and `lipschitz_method` (and may hold `plant`, `dt`, `network_hash`,
    `certificate_status`, `certificate_reason`, `lipnet_version`, ...); the dimensions, activation, arithmetic
    and fallback are added from `net`.
    """
    h_name = c_name[:-2] + ".h" if c_name.endswith(".c") else c_name + ".h"
    info = {"plant": info.get("plant") or "", "dt": info.get("dt"), "format": C_FORMAT, "n_x": net.n_x,
            "n_u": net.n_u, "hidden": net.widths[1:-1], "activation": net.activation, "c_float": net.c_float,
            "periodic": list(net.periodic), "fallback": [float(v) for v in net.fallback],
            **{k: v for k, v in info.items() if k not in ("plant", "dt")}}
    interface = _header_block(net, info)
    header = _banner(net, info, c_name, h_name, h_name) + "\n" + interface
    body = (_banner(net, info, c_name, h_name, c_name) + "\n/* the interface, as in " + h_name + " */\n"
            + interface + "\n" + _code(net, info) + "\n")
    text = body + f'{DIGEST_PREFIX}"{source_digest(body)}";\n'
    return text, header
