"""Hardware-in-the-loop: the device agent (onnxruntime + numpy only), the host loop and the wire format.

Device side (torch-free): `hil.device` (agent), `hil.wire` (protocol, see `hil/PROTOCOL.md`), `hil.realtime`.
Host side: `hil.host` (fixed-rate loop), `hil.fallback`, `hil.stepper`, `hil.simulate`, `hil.stats`,
`hil.report`, `hil.api` (`run_hil`, `run_simulation`). Nothing is imported here, so that importing a device
module never pulls in the host side.
"""

__all__: list[str] = []
