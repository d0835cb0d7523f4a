"""hwflow_host: the on-board side of hwflow (what runs on the PYNQ board's own Python).

It needs Python 3.10+, numpy 1.x, sqlite3 and, on the board, ``pynq``; nothing else. The
numpy-only parts of hwflow it builds on (``hwflow.errors``, ``fixed``, ``image``, ``faults``,
``results``) travel with it in the deployment bundle (``hwflow deploy``), so a FaultMap sampled here
from a trial's seed is sampled by the very code the workstation campaign uses.

- ``board``: the Board interface (contract 3) and the host's errors;
- ``manifest``: the build manifest (contract 8), checked against the WeightImage and the overlay;
- ``pynq_board``: ``PynqBoard`` (Overlay, MMIO, DMA);
- ``campaign``: the campaign loop, the same for every Board (PYNQ, emulator, C-sim);
- ``bundle``: reads an unpacked deployment bundle;
- ``__main__``: ``python -m hwflow_host BUNDLE --db results.sqlite``.
"""

__version__ = "0.1.0"
