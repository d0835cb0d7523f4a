"""``EmulatorBoard``: the Board interface (contract 3) on the bit-exact emulator.

The board's weight memory is a writable copy of the WeightImage's words; ``run`` emulates the
network on whatever the memory holds, exactly as the hardware would compute it. The host campaign
(``hwflow_host.campaign``) runs on it unchanged, which is how CI checks the on-board loop without a
board, and how ``python -m hwflow_host BUNDLE --board emulator`` dry-runs a bundle.
"""

from __future__ import annotations

import numpy as np

from hwflow.emulator import Emulator, Program
from hwflow.errors import BoardError
from hwflow.image import WeightImage


class EmulatorBoard:
    """Weight words in memory, the emulator as the accelerator. ``name`` is recorded with results."""

    def __init__(self, program: Program, image: WeightImage, *, name: str = "emulator-board", chunk: int = 256):
        self.name = name
        self._arrays = list(image.arrays)
        self._words = np.concatenate([a.words for a in image]) if len(image) else np.zeros(0, np.uint64)
        self._bases = np.cumsum([0] + [a.size for a in image])
        self._widths = np.concatenate([np.full(a.size, a.format.width, np.int64) for a in image]) \
            if len(image) else np.zeros(0, np.int64)
        self._emulator = Emulator(program, image, chunk=chunk)
        self._dirty: set[int] = set()  # arrays written since the last run

    @property
    def total_words(self) -> int:
        return int(self._words.size)

    def image(self) -> WeightImage:
        """The weight memory's current content as a WeightImage."""
        return WeightImage(tuple(a.with_words(self._words[b : b + a.size].copy())
                                 for a, b in zip(self._arrays, self._bases.tolist(), strict=False)))

    # --- contract 3 ---------------------------------------------------------------------------------

    def write_word(self, addr: int, value: int) -> None:
        addr, value = self._address(addr), self._value(value)
        if value >> int(self._widths[addr]):
            self._too_wide(addr, value)
        self._store(np.array([addr]), np.array([value], dtype=np.uint64))

    def read_word(self, addr: int) -> int:
        return int(self._words[self._address(addr)])

    def write_words(self, addrs: np.ndarray, values: np.ndarray) -> None:
        addrs = self._addresses(addrs)
        values = np.asarray(values).reshape(-1)
        if values.size != addrs.size:
            msg = f"{addrs.size} addresses but {values.size} values"
            raise BoardError(msg)
        if values.size and values.dtype.kind not in "ui":
            msg = f"word values are unsigned integers, got an array of {values.dtype}"
            raise BoardError(msg)
        if values.dtype.kind == "i" and np.any(values < 0):
            self._value(int(values[values < 0][0]))
        values = values.astype(np.uint64)
        too_wide = (values >> self._widths[addrs].astype(np.uint64)) != 0
        if np.any(too_wide):
            i = int(np.flatnonzero(too_wide)[0])
            self._too_wide(int(addrs[i]), int(values[i]))
        self._store(addrs, values)

    def _store(self, addrs: np.ndarray, values: np.ndarray) -> None:
        changed = self._words[addrs] != values
        if np.any(changed):
            self._words[addrs] = values
            arrays = np.searchsorted(self._bases, addrs[changed], side="right") - 1
            self._dirty.update(int(i) for i in np.unique(arrays))

    def read_words(self, addrs: np.ndarray) -> np.ndarray:
        return self._words[self._addresses(addrs)].copy()

    def run(self, x: np.ndarray) -> np.ndarray:
        if self._dirty:
            image = self.image()
            keys = {self._arrays[i].key for i in self._dirty}
            self._emulator = self._emulator.with_arrays(image, keys)
            self._dirty.clear()
        return np.asarray(self._emulator.run(x), dtype=np.int64).reshape(len(x), -1)

    # --- checks -------------------------------------------------------------------------------------

    def _address(self, addr: object) -> int:
        if isinstance(addr, bool) or not isinstance(addr, (int, np.integer)):
            msg = f"a weight address is an integer word address, got {addr!r}"
            raise BoardError(msg)
        if not 0 <= int(addr) < self.total_words:
            msg = f"address {int(addr)} is outside the weight memories (word addresses 0..{self.total_words - 1})"
            raise BoardError(msg)
        return int(addr)

    def _addresses(self, addrs: np.ndarray) -> np.ndarray:
        addrs = np.asarray(addrs).reshape(-1)
        if addrs.size and not np.issubdtype(addrs.dtype, np.integer):
            return np.array([self._address(a) for a in addrs.tolist()], dtype=np.int64)
        addrs = addrs.astype(np.int64)
        bad = (addrs < 0) | (addrs >= self.total_words)
        if np.any(bad):
            self._address(int(addrs[bad][0]))
        return addrs

    def _too_wide(self, addr: int, value: int) -> None:
        width = int(self._widths[addr])
        msg = f"value {value:#x} does not fit the {width}-bit word at address {addr} (0..{(1 << width) - 1:#x})"
        raise BoardError(msg)

    @staticmethod
    def _value(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            msg = f"a word value is an unsigned integer, got {value!r}"
            raise BoardError(msg)
        if int(value) < 0:
            msg = f"negative word value {int(value)}: a stored word is the unsigned bit pattern"
            raise BoardError(msg)
        return int(value)
