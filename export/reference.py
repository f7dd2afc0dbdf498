"""A second implementation of an exported controller: the ONNX graph evaluated by numpy alone.

C-like on purpose: the initializers are read once, the node list is compiled into a straight-line program
over numbered registers, and each step is one numpy call. It implements exactly the operators lipnet's
exporter emits (and a few neighbours); any other operator is refused by name. Needs onnx at load time only.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import InvalidModelError, UnsupportedOperator
from .metadata import decode_metadata, load_model

__all__ = ["NumpyPolicy", "numpy_policy", "SUPPORTED_OPS", "linear_weights"]

SUPPORTED_OPS = ("Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Tanh", "Max", "Min", "Clip", "Where",
                 "Slice", "Concat", "Cast", "Identity", "Constant", "Neg", "Sin", "Cos")
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
# ONNX TensorProto element types that a controller graph may carry.
_DTYPES = {1: np.float32, 10: np.float16, 11: np.float64, 6: np.int32, 7: np.int64, 9: np.bool_}


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Program:
    """Compiles nodes into `(fn, input registers, output register)` steps over a register file."""

    def __init__(self, model):
        from onnx import numpy_helper

        self.model = model
        self.slots: dict[str, int] = {}
        self.constants: dict[int, np.ndarray] = {}
        for init in model.graph.initializer:
            self.constants[self._slot(init.name)] = numpy_helper.to_array(init)
        self.steps = []
        for node in model.graph.node:
            self._compile(node)

    def _slot(self, name: str) -> int:
        if name not in self.slots:
            self.slots[name] = len(self.slots)
        return self.slots[name]

    def _const(self, name: str, node) -> np.ndarray:
        slot = self.slots.get(name)
        if slot is None or slot not in self.constants:
            raise UnsupportedOperator(f"{node.op_type} node {node.name!r}: input {name!r} must be a constant for "
                                      "the numpy reference")
        return self.constants[slot]

    def _compile(self, node) -> None:
        op, a = node.op_type, _attrs(node)
        if node.domain not in ("", "ai.onnx") or op not in SUPPORTED_OPS:
            raise UnsupportedOperator(f"the numpy reference does not implement {node.domain or 'ai.onnx'}::{op} "
                                      f"(node {node.name!r}); it supports {', '.join(SUPPORTED_OPS)}")
        if op == "Constant":
            from onnx import numpy_helper

            if "value" not in a:
                raise UnsupportedOperator(f"Constant node {node.name!r} without a tensor `value`")
            self.constants[self._slot(node.output[0])] = numpy_helper.to_array(a["value"])
            return
        ins = [self._slot(n) if n else -1 for n in node.input]
        fn = self._kernel(op, a, node)
        self.steps.append((fn, ins, self._slot(node.output[0])))

    def _kernel(self, op: str, a: dict, node):
        if op == "Gemm":
            alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
            ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))

            def gemm(x, w, b=None):
                y = (x.T if ta else x) @ (w.T if tb else w)
                if alpha != 1.0:
                    y = y * y.dtype.type(alpha)
                if b is not None:
                    y = y + (b * b.dtype.type(beta) if beta != 1.0 else b)
                return y
            return gemm
        if op == "MatMul":
            return np.matmul
        if op in _BINARY:
            return _BINARY[op]
        if op == "Neg":
            return np.negative
        if op == "Relu":
            return lambda x: np.maximum(x, x.dtype.type(0))
        if op == "Tanh":
            return np.tanh
        if op == "Sin":  # the features of periodic states; numpy keeps the input's precision
            return np.sin
        if op == "Cos":
            return np.cos
        if op in ("Max", "Min"):
            f = np.maximum if op == "Max" else np.minimum

            def reduce(*xs):
                y = xs[0]
                for x in xs[1:]:
                    y = f(y, x)
                return y
            return reduce
        if op == "Clip":
            def clip(x, lo=None, hi=None):
                if lo is not None:
                    x = np.maximum(x, lo)
                return x if hi is None else np.minimum(x, hi)
            return clip
        if op == "Where":
            return np.where
        if op == "Identity":
            return lambda x: x
        if op == "Cast":
            to = _DTYPES.get(int(a["to"]))
            if to is None:
                raise UnsupportedOperator(f"Cast node {node.name!r} to ONNX type {a['to']} is not supported")
            return lambda x: x.astype(to)
        if op == "Concat":
            axis = int(a["axis"])
            return lambda *xs: np.concatenate(xs, axis=axis)
        if op == "Slice":
            return self._slice(node)
        raise UnsupportedOperator(f"no numpy kernel for {op}")  # unreachable: SUPPORTED_OPS is checked first

    def _slice(self, node):
        consts = [self._const(n, node).astype(np.int64).tolist() if n else None for n in node.input[1:]]
        starts, ends = consts[0], consts[1]
        axes = consts[2] if len(consts) > 2 and consts[2] is not None else list(range(len(starts)))
        steps = consts[3] if len(consts) > 3 and consts[3] is not None else [1] * len(starts)

        def slice_(x, *_):
            idx = [slice(None)] * x.ndim
            for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
                idx[ax] = slice(s, e, st)
            return x[tuple(idx)]
        return slice_


class NumpyPolicy:
    """An exported controller evaluated with numpy: `policy(state) -> action`, `run_batch(states)`.

    Attributes: `n_x`, `n_u`, `metadata`, `ops` (the node types in order), `path`.
    """

    def __init__(self, model, path: str | None = None):
        graph = model.graph
        init_names = {i.name for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in init_names]
        if len(inputs) != 1 or inputs[0].name != "state":
            raise InvalidModelError(f"model inputs are {[i.name for i in inputs]}; a lipnet controller has one "
                                    "input 'state' [batch, n_x]")
        if not graph.output or graph.output[0].name != "action":
            raise InvalidModelError(f"model outputs are {[o.name for o in graph.output]}; 'action' is expected")
        dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
        out_dims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
        if len(dims) != 2 or dims[1] < 1 or len(out_dims) != 2 or out_dims[1] < 1:
            raise InvalidModelError(f"'state' has shape {dims} and 'action' {out_dims}; [batch, n] with a fixed n "
                                    "is expected")
        self.n_x, self.n_u = dims[1], out_dims[1]
        self.path = path
        self.metadata = decode_metadata({p.key: p.value for p in model.metadata_props})
        self.ops = [n.op_type for n in graph.node]
        prog = _Program(model)
        self._in = prog.slots.get("state")
        self._out = prog.slots.get("action")
        if self._in is None or self._out is None:
            raise InvalidModelError("the graph does not connect 'state' to 'action'")
        # Register file template: constants in place, one extra always-None register for absent optional inputs.
        none = len(prog.slots)
        self._template = [None] * (none + 1)
        for slot, value in prog.constants.items():
            self._template[slot] = value
        self._steps = [(fn, tuple(i if i >= 0 else none for i in ins), out) for fn, ins, out in prog.steps]

    def run_batch(self, states) -> np.ndarray:
        """Actions (float32 `[b, n_u]`) for states `[b, n_x]`."""
        x = states if type(states) is np.ndarray and states.dtype == np.float32 else \
            np.asarray(states, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_x:
            raise ValueError(f"expected states of shape [batch, {self.n_x}], got {x.shape}")
        regs = self._template.copy()
        regs[self._in] = x
        for fn, ins, out in self._steps:
            regs[out] = fn(*[regs[i] for i in ins])
        y = regs[self._out]
        return y if y.dtype == np.float32 else y.astype(np.float32)

    def __call__(self, state) -> np.ndarray:
        """The action (float32 `[n_u]`) for one state (`[n_x]` or `[1, n_x]`)."""
        x = state if type(state) is np.ndarray and state.dtype == np.float32 else np.asarray(state, np.float32)
        if x.size != self.n_x:
            raise ValueError(f"expected one state of {self.n_x} values, got shape {x.shape}")
        return self.run_batch(x.reshape(1, self.n_x))[0]


def numpy_policy(path: str | os.PathLike) -> NumpyPolicy:
    """The numpy reference implementation of the controller in an exported `.onnx` file (its digest checked)."""
    from pathlib import Path

    from .runtime import check_integrity

    model = load_model(path)
    check_integrity(Path(path).read_bytes(), {p.key: p.value for p in model.metadata_props}, str(path))
    return NumpyPolicy(model, path=str(path))


def linear_weights(model) -> list[np.ndarray]:
    """The weight matrices `W` (out × in, float64, exact upcast) of the Gemm / MatMul nodes, in graph order.

    With periodic states the first acts on the sin/cos features, a 1-Lipschitz map of the state: bounds computed
    on these matrices still hold from state to action.
    """
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            a = _attrs(node)
            if "value" in a:
                inits[node.output[0]] = numpy_helper.to_array(a["value"])
    out = []
    for node in model.graph.node:
        if node.op_type not in ("Gemm", "MatMul"):
            continue
        if len(node.input) < 2 or node.input[1] not in inits:
            raise InvalidModelError(f"{node.op_type} node {node.name!r} has no constant weight")
        w = inits[node.input[1]].astype(np.float64)
        a = _attrs(node)
        if node.op_type == "Gemm":
            if int(a.get("transA", 0)):
                raise InvalidModelError(f"Gemm node {node.name!r} transposes its input; not a controller layer")
            w = w if int(a.get("transB", 0)) else w.T
            w = w * float(a.get("alpha", 1.0))
        else:
            w = w.T
        out.append(w)
    return out
