"""hwflow: make quantized neural networks on FPGAs survive bit flips in their weight memory, and prove it.

The package follows the flow: ``data`` and ``zoo`` (quantize/train) -> ``convert`` (hls4ml ModelGraph)
-> ``image`` (the WeightImage: stored weight words) -> ``emulator`` (bit-exact numpy execution)
-> ``verify`` (emulator against hls4ml's C simulation).
"""

__version__ = "0.1.0"
