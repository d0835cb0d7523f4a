"""hwflow: make quantized neural networks on FPGAs survive bit flips in their weight memory, and prove it.

The package follows the flow: ``data`` and ``zoo`` (quantize/train) -> ``convert`` (hls4ml ModelGraph)
-> ``image`` (the WeightImage: stored weight words) -> ``emulator`` (bit-exact numpy execution)
-> ``verify`` (emulator against hls4ml's C simulation).
"""

__version__ = "0.1.0"


def from_hls_model(graph, *args, **kwargs):
    """A user's own, already configured and converted hls4ml ``ModelGraph`` as hwflow's design
    (see ``hwflow.convert.from_hls_model``); imported lazily, so ``import hwflow`` stays light."""
    from hwflow.convert import from_hls_model as convert_graph

    return convert_graph(graph, *args, **kwargs)
