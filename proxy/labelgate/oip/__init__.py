"""Open Inference Protocol helpers: the tensor codec in ``labelgate.oip.tensors``."""
