"""Hardening: make a quantized network tolerate faults in its weight memory (docs/methods.md).

Three published methods, usable alone or stacked: weight scaling (a storage property applied at
conversion: ``scale``), FT-ClipAct clipped activations (a Keras layer: ``clipact``) and FlatENN's
sharpness-aware quantization-aware training (a training method: ``saq``).
"""
