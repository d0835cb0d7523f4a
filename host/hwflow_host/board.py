"""The Board interface (contract 3 in docs/design.md) and the errors the host raises.

One small protocol for the emulator, the compiled C-sim and the PYNQ board, so the campaign loop
is the same code for all three:

- ``write_word(addr, value)``: ``addr`` is a WeightImage word address (0 .. total_words-1), ``value``
  the unsigned stored word (< 2**word_bits);
- ``read_word(addr) -> int``;
- ``run(x) -> np.ndarray``: float inputs (N, *input_shape) in, the output codes out as int64
  (N, n_out), identical to ``Emulator.run(x)``.

An address outside the weight memories or a value wider than the word raises ``BoardError``.
A board may also offer ``write_words(addrs, values)`` / ``read_words(addrs)`` (numpy arrays), which
the campaign uses when present: the PYNQ board packs them into 32-bit bus words, the emulator
board vectorizes them; both give the same results as the word-by-word calls.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from hwflow.errors import BoardError as _HwflowBoardError
from hwflow.errors import HwflowError


class BoardError(_HwflowBoardError):
    """The host's own BoardError (a subclass of ``hwflow.errors.BoardError``, so the workstation's
    ``except BoardError`` catches it too): an address outside the weight memories, a word too wide,
    no device, an overlay that does not match the manifest."""


class ManifestError(BoardError):
    """The build manifest is malformed, or disagrees with the WeightImage or the loaded overlay.
    Raised before any write to the device."""


class HardFaultError(BoardError):
    """A weight word did not read back what was written: the device's memory is faulty (or the
    design is not the one the manifest describes). The campaign stops rather than record trials
    measured on corrupted weights."""


class CampaignError(HwflowError):
    """The campaign cannot go on as asked: a plan that does not fit the bundle, a FaultMap sampled
    differently from the workstation's (numpy streams differ), a changed fault-free result."""


@runtime_checkable
class Board(Protocol):
    """What the campaign loop needs from a device (see the module docstring)."""

    def write_word(self, addr: int, value: int) -> None: ...

    def read_word(self, addr: int) -> int: ...

    def run(self, x: np.ndarray) -> np.ndarray: ...


def write_words(board: Board, addrs: np.ndarray, values: np.ndarray) -> None:
    """Write many words: the board's bulk method when it has one, else word by word."""
    addrs = np.asarray(addrs, dtype=np.int64).reshape(-1)
    values = np.asarray(values, dtype=np.uint64).reshape(-1)
    if addrs.size == 0:
        return
    bulk = getattr(board, "write_words", None)
    if bulk is not None:
        bulk(addrs, values)
        return
    for a, v in zip(addrs.tolist(), values.tolist(), strict=True):
        board.write_word(a, v)


def read_words(board: Board, addrs: np.ndarray) -> np.ndarray:
    """Read many words (uint64): the board's bulk method when it has one, else word by word."""
    addrs = np.asarray(addrs, dtype=np.int64).reshape(-1)
    if addrs.size == 0:
        return np.zeros(0, np.uint64)
    bulk = getattr(board, "read_words", None)
    if bulk is not None:
        return np.asarray(bulk(addrs), dtype=np.uint64).reshape(-1)
    return np.array([board.read_word(a) for a in addrs.tolist()], dtype=np.uint64)


def check_word(addr: object, value: object, total_words: int, width_of) -> tuple[int, int]:
    """Validate one (address, value) pair against contract 3; ``width_of(addr)`` gives the word width.

    Shared by the boards so they refuse the same inputs with the same messages.
    """
    addr = check_address(addr, total_words)
    width = width_of(addr)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        msg = f"word value for address {addr} must be an integer, got {value!r}"
        raise BoardError(msg)
    value = int(value)
    if not 0 <= value < (1 << width):
        msg = (f"value {value:#x} does not fit the {width}-bit word at address {addr} "
               f"(0..{(1 << width) - 1:#x}): a stored word is the unsigned bit pattern")
        raise BoardError(msg)
    return addr, value


def check_address(addr: object, total_words: int) -> int:
    if isinstance(addr, bool) or not isinstance(addr, (int, np.integer)):
        msg = f"a weight address is an integer word address, got {addr!r}"
        raise BoardError(msg)
    addr = int(addr)
    if not 0 <= addr < total_words:
        msg = f"address {addr} is outside the weight memories (word addresses 0..{total_words - 1})"
        raise BoardError(msg)
    return addr
