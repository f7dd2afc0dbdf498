"""Hardware-in-the-loop: the device agent (onnxruntime + numpy only), the host loop and the wire format."""
