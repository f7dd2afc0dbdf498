"""The onnxruntime session the HIL agent and `simulate` use: `export.runtime.session` (torch-free).

A minimal private stand-in is used only while `export.runtime` is not installed, so that `hil` keeps working
on a board that carries an older `export`; it follows the same interface (`__call__`, `n_x`, `n_u`,
`provider`, `metadata`).
"""

from __future__ import annotations

__all__ = ["open_session", "PROVIDERS"]

PROVIDERS = ("cpu", "cuda", "tensorrt")

_ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
              "tensorrt": "TensorrtExecutionProvider"}


class _Session:
    """Stand-in for `export.runtime.ControllerSession`: one state `[n_x]` float32 → action `[n_u]` float32."""

    def __init__(self, path: str, provider: str, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chain = {"cpu": ["cpu"], "cuda": ["cuda", "cpu"], "tensorrt": ["tensorrt", "cuda", "cpu"]}[provider]
        available = set(ort.get_available_providers())
        if _ORT_NAMES[provider] not in available:
            raise RuntimeError(f"onnxruntime provider {provider!r} is not available here "
                               f"(available: {sorted(available)}); install onnxruntime-gpu or use --provider cpu")
        self._sess = ort.InferenceSession(str(path), opts, providers=[_ORT_NAMES[p] for p in chain])
        inp, out = self._sess.get_inputs()[0], self._sess.get_outputs()[0]
        self._in, self._out = inp.name, out.name
        self.n_x, self.n_u = int(inp.shape[-1]), int(out.shape[-1])
        self.provider = provider
        self.metadata = dict(self._sess.get_modelmeta().custom_metadata_map)

    def __call__(self, state):
        import numpy as np

        x = np.asarray(state, dtype=np.float32).reshape(1, self.n_x)
        return self._sess.run([self._out], {self._in: x})[0].reshape(self.n_u)


def open_session(path: str, provider: str = "cpu", threads: int = 1):
    """An onnxruntime session for the controller at `path` on `provider` (`cpu`, `cuda`, `tensorrt`)."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; valid: {', '.join(PROVIDERS)}")
    try:
        from export.runtime import session
    except ImportError as exc:
        if exc.name not in ("export.runtime", "export"):
            raise
        return _Session(path, provider, threads)
    return session(path, provider=provider, threads=threads)
