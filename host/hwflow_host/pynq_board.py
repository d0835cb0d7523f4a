"""``PynqBoard``: the Board interface on a PYNQ board (Overlay, MMIO, AXI DMA).

Weights: each weight memory is a BRAM behind an AXI BRAM controller; the host reaches it with one
``MMIO(base, range)`` per memory and the packing of contract 8 (several narrow words per 32-bit bus
word, so writing one word is a read-modify-write of its bus word). The only MMIO objects that can
write are those of the manifest's memories, and every offset is computed from a checked word
address, so no input can make the host write outside them.

Data: ``run`` quantizes the float inputs to the input type's codes (as the emulator does), sends
one code per 32-bit stream word through the DMA, sets the batch register, starts the accelerator
(``ap_start``) and receives one output code per 32-bit word. Batches are split so that no DMA
transfer exceeds the DMA's buffer-length register (``c_sg_length_width`` in the overlay).

Before any write: the manifest is checked against the golden WeightImage and against the overlay
(every controller present at the manifest's base address with the manifest's range, the DMA, the
accelerator and its batch register), and the accelerator must be idle.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np

from hwflow.fixed import quantize_float
from hwflow.image import WeightImage
from hwflow_host.board import BoardError, ManifestError, check_address, check_word
from hwflow_host.manifest import Manifest, WeightMemory

log = logging.getLogger(__name__)

AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4
CTRL_OFFSET = 0x00  # ap_ctrl of an HLS s_axilite control interface
DEFAULT_LENGTH_WIDTH = 26  # pynq's assumption when the .hwh does not say (its MAX_C_SG_LENGTH_WIDTH)
_U32 = 0xFFFFFFFF


def import_pynq():
    """The board's pynq module, or a BoardError that says what to do."""
    try:
        import pynq
    except ImportError as err:
        msg = (f"pynq is not importable here ({err}): run the host on the board with its own Python "
               "(PYNQ images: sudo, with /usr/local/share/pynq-venv active; run.sh in the bundle does that)")
        raise BoardError(msg) from None
    return pynq


class PynqBoard:
    """The Board interface on a loaded overlay. ``pynq`` is the module to use (the real one by
    default; tests pass a recording fake with the same API)."""

    def __init__(self, manifest: Manifest, image: WeightImage, bitstream: str | Path, *, pynq=None,
                 name: str | None = None, timeout_s: float = 10.0):
        manifest.check_image(image)
        self.manifest = manifest
        self.image = image
        self.total_words = image.total_words
        self.name = name or manifest.board
        self.timeout_s = timeout_s
        self._pynq = pynq if pynq is not None else import_pynq()
        bitstream = Path(bitstream)
        if not bitstream.is_file() or not bitstream.with_suffix(".hwh").is_file():
            msg = (f"{bitstream}: the bitstream and its .hwh (same name, beside it) are needed to load the overlay; "
                   "this bundle was packed without them (hwflow deploy --no-bitstream is for dry runs only)")
            raise BoardError(msg)
        log.info("loading overlay %s", bitstream)
        self.overlay = self._pynq.Overlay(str(bitstream))
        ctrl = self._check_overlay()
        self._mmio = {m.name: self._pynq.MMIO(m.base, m.range) for m in manifest.memories}
        self._ctrl = self._pynq.MMIO(int(ctrl["phys_addr"]), int(ctrl["addr_range"]))
        self._batch_offset = int(ctrl["registers"][manifest.data.batch_register]["address_offset"])
        self._dma = getattr(self.overlay, manifest.data.dma)
        self._max_batch = self._batch_limit()
        self._in_buf = self._out_buf = None
        if not self._ctrl.read(CTRL_OFFSET) & AP_IDLE:
            msg = (f"accelerator {manifest.ip} is not idle after loading the overlay: the host writes weights only "
                   "while it is idle; reset the board and start again")
            raise BoardError(msg)

    # --- checks before any write --------------------------------------------------------------------

    def _check_overlay(self) -> dict:
        """Refuse a manifest that disagrees with the overlay (names, addresses, sizes); returns the
        accelerator's ip_dict entry."""
        m = self.manifest
        ip_dict, mem_dict = dict(self.overlay.ip_dict), dict(getattr(self.overlay, "mem_dict", {}) or {})
        problems = []
        for mem in m.memories:
            entry = _find(mem.ctrl, mem_dict, ip_dict)
            if entry is None:
                problems.append(f"BRAM controller {mem.ctrl} (memory {mem.name}) is not in the overlay")
                continue
            phys, size = int(entry.get("phys_addr", -1)), int(entry.get("addr_range", -1))
            if phys != mem.base or size != mem.range:
                problems.append(f"{mem.ctrl} is at {phys:#x} with range {size:#x} in the overlay, the manifest says "
                                f"{mem.base:#x} with range {mem.range:#x}")
        for name, what in ((m.data.dma, "AXI DMA"), (m.ip, "accelerator")):
            if name not in ip_dict:
                problems.append(f"{what} {name} is not in the overlay's ip_dict")
        ctrl = ip_dict.get(m.ip, {})
        if m.ip in ip_dict and m.data.batch_register not in (ctrl.get("registers") or {}):
            problems.append(f"{m.ip} has no register {m.data.batch_register!r} "
                            f"(it has: {', '.join(ctrl.get('registers') or {}) or 'none'})")
        if problems:
            msg = (f"the overlay does not match {m.source or 'the manifest'}; nothing was written: "
                   + "; ".join(problems) + ". Deploy the bitstream built with this manifest.")
            raise ManifestError(msg)
        return ctrl

    def _batch_limit(self) -> int:
        """Samples per DMA transfer: the DMA's length register bounds the bytes of one transfer. pynq's
        AxiDMA driver knows it (``buffer_max_size``, from ``c_sg_length_width`` in the .hwh)."""
        limit = getattr(self._dma, "buffer_max_size", None)
        if not isinstance(limit, int):
            params = self.overlay.ip_dict[self.manifest.data.dma].get("parameters") or {}
            width = params.get("c_sg_length_width", params.get("C_SG_LENGTH_WIDTH", DEFAULT_LENGTH_WIDTH))
            limit = (1 << int(width)) - 1
        per_sample = 4 * max(self.manifest.data.input_elements, self.manifest.data.output_elements)
        if per_sample > limit:
            msg = (f"one sample needs {per_sample}-byte DMA transfers but {self.manifest.data.dma} moves at most "
                   f"{limit} bytes (c_sg_length_width); rebuild with a wider DMA length register")
            raise ManifestError(msg)
        return limit // per_sample

    # --- weights ------------------------------------------------------------------------------------

    def _locate(self, addr: int) -> tuple[WeightMemory, int]:
        where = self.manifest.locate(addr)
        if where is None:
            array, index = self.image.locate(addr)
            msg = (f"address {addr} ({array.key}[{index}]) is in no weight memory: {array.key} is a constant of this "
                   f"build, not host-writable (memories: {', '.join(m.key for m in self.manifest.memories)})")
            raise BoardError(msg)
        return where

    def _width(self, addr: int) -> int:
        return self._locate(addr)[0].word_bits

    def write_word(self, addr: int, value: int) -> None:
        addr, value = check_word(addr, value, self.total_words, self._width)
        mem, index = self._locate(addr)
        offset, shift = mem.locate(index)
        mmio = self._mmio[mem.name]
        if mem.lanes == 1:
            mmio.write(offset, value)
            return
        old = int(mmio.read(offset)) & _U32
        mmio.write(offset, (old & ~(mem.mask << shift) & _U32) | (value << shift))

    def read_word(self, addr: int) -> int:
        mem, index = self._locate(check_address(addr, self.total_words))
        offset, shift = mem.locate(index)
        return (int(self._mmio[mem.name].read(offset)) >> shift) & mem.mask

    def write_words(self, addrs: np.ndarray, values: np.ndarray) -> None:
        """Many words, one bus access per bus word where all its lanes are written (a scrub), a
        read-modify-write where only some are. Everything is checked before the first write; a word
        given twice takes its last value."""
        plan = []
        for mem, index, vals in self._group(addrs, values):
            _, last = np.unique(index[::-1], return_index=True)  # the last write of each word, sorted by index
            keep_at = index.size - 1 - last
            index, vals = index[keep_at], vals[keep_at]
            bus = index // mem.lanes
            shifts = (index % mem.lanes) * mem.word_bits
            buses, first = np.unique(bus, return_index=True)
            words = np.bitwise_or.reduceat(vals << shifts, first)
            written = np.bitwise_or.reduceat(np.int64(mem.mask) << shifts, first)
            counts = np.diff(np.append(first, index.size))
            used = np.minimum(mem.lanes, mem.depth - buses * mem.lanes)
            for b, word, lanes, n, u in zip(buses.tolist(), words.tolist(), written.tolist(), counts.tolist(),
                                            used.tolist(), strict=True):
                plan.append((mem.name, 4 * b, word, 0 if n == u else _U32 & ~lanes))
        for name, offset, word, keep in plan:
            mmio = self._mmio[name]
            if keep:
                word |= int(mmio.read(offset)) & keep
            mmio.write(offset, word)

    def read_words(self, addrs: np.ndarray) -> np.ndarray:
        """Many words; each bus word is read once."""
        addrs = np.asarray(addrs).reshape(-1)
        out = np.zeros(addrs.size, np.uint64)
        for mem, index, pos in self._group(addrs, None):
            buses, inverse = np.unique(index // mem.lanes, return_inverse=True)
            mmio = self._mmio[mem.name]
            words = np.array([int(mmio.read(4 * b)) & _U32 for b in buses.tolist()], dtype=np.int64)
            shifts = (index % mem.lanes) * mem.word_bits
            out[pos] = ((words[inverse.reshape(-1)] >> shifts) & mem.mask).astype(np.uint64)
        return out

    def _group(self, addrs: np.ndarray, values: np.ndarray | None):
        """Per memory: word indices (int64) and either the values (writes, int64) or the positions in
        ``addrs`` (reads). Refuses the first bad address or value, before anything is written."""
        addrs = np.asarray(addrs).reshape(-1)
        if addrs.size and not np.issubdtype(addrs.dtype, np.integer):
            for a in addrs.tolist():
                check_address(a, self.total_words)  # raises: not an integer
        addrs = addrs.astype(np.int64)
        outside = (addrs < 0) | (addrs >= self.total_words)
        if np.any(outside):
            check_address(int(addrs[outside][0]), self.total_words)
        vals = None
        if values is not None:
            vals = np.asarray(values).reshape(-1)
            if vals.size != addrs.size or (vals.size and not np.issubdtype(vals.dtype, np.integer)):
                msg = f"{addrs.size} addresses need as many integer word values, got {vals.size} of {vals.dtype}"
                raise BoardError(msg)
            if vals.dtype.kind == "i" and np.any(vals < 0):
                i = int(np.flatnonzero(vals < 0)[0])
                check_word(int(addrs[i]), int(vals[i]), self.total_words, self._width)
            vals = vals.astype(np.uint64)
        out, covered = [], np.zeros(addrs.size, dtype=bool)
        for mem in self.manifest.memories:
            sel = np.flatnonzero((addrs >= mem.first_word) & (addrs < mem.first_word + mem.depth))
            if not sel.size:
                continue
            covered[sel] = True
            if vals is not None:
                wide = np.flatnonzero(vals[sel] >> np.uint64(mem.word_bits))
                if wide.size:
                    i = int(sel[wide[0]])
                    check_word(int(addrs[i]), int(vals[i]), self.total_words, self._width)
            out.append((mem, addrs[sel] - mem.first_word, sel if vals is None else vals[sel].astype(np.int64)))
        if not covered.all():
            self._locate(int(addrs[~covered][0]))
        return out

    # --- data path ----------------------------------------------------------------------------------

    def run(self, x: np.ndarray) -> np.ndarray:
        data = self.manifest.data
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[1:] != data.input_shape:
            if x.ndim < 1 or int(np.prod(x.shape[1:])) != data.input_elements:
                msg = f"inputs of shape {x.shape[1:]} per sample; the accelerator takes {data.input_shape}"
                raise BoardError(msg)
        # Through float32, as the emulator and the C simulation see the samples.
        codes = quantize_float(np.asarray(x, dtype=np.float32), data.input_type).reshape(len(x), -1)
        out = np.zeros((len(x), data.output_elements), np.int64)
        for start in range(0, len(x), self._max_batch):
            n = min(self._max_batch, len(x) - start)
            out[start : start + n] = self._run_batch(codes[start : start + n])
        return out

    def _run_batch(self, codes: np.ndarray) -> np.ndarray:
        data = self.manifest.data
        n = len(codes)
        if self._in_buf is None:
            self._in_buf = self._pynq.allocate(shape=(self._max_batch * data.input_elements,), dtype=np.int32)
            self._out_buf = self._pynq.allocate(shape=(self._max_batch * data.output_elements,), dtype=np.int32)
        n_in, n_out = n * data.input_elements, n * data.output_elements
        self._in_buf[:n_in] = codes.reshape(-1).astype(np.int32)
        self._ctrl.write(self._batch_offset, n)
        self._ctrl.write(CTRL_OFFSET, AP_START)
        self._dma.recvchannel.transfer(self._out_buf, nbytes=4 * n_out)
        self._dma.sendchannel.transfer(self._in_buf, nbytes=4 * n_in)
        self._wait_dma(self._dma.sendchannel, "send (MM2S)")
        self._wait_dma(self._dma.recvchannel, "receive (S2MM)")
        self._wait_idle()
        return np.array(self._out_buf[:n_out], dtype=np.int32).astype(np.int64).reshape(n, data.output_elements)

    def _wait_dma(self, channel, what: str) -> None:
        """pynq's ``wait()`` spins forever on a transfer that never completes (an accelerator that hangs,
        a stream that never ends), so the channel's idle bit is polled against a deadline first; a DMA
        error that pynq reports from ``wait()`` becomes a BoardError too (nothing of the trial is recorded)."""
        deadline = time.monotonic() + self.timeout_s
        while not channel.idle:
            if time.monotonic() > deadline:
                msg = (f"DMA {what} channel of {self.manifest.data.dma} did not finish within {self.timeout_s:g} s: "
                       "the accelerator hangs; reset the board (the campaign resumes where it stopped)")
                raise BoardError(msg)
        try:
            channel.wait()
        except RuntimeError as err:
            msg = f"DMA {what} channel of {self.manifest.data.dma} reported an error ({err}); reset the board"
            raise BoardError(msg) from err

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self._ctrl.read(CTRL_OFFSET) & AP_IDLE:
            if time.monotonic() > deadline:
                msg = (f"accelerator {self.manifest.ip} did not return to idle {self.timeout_s:g} s after its batch: "
                       "reset the board (the campaign resumes where it stopped)")
                raise BoardError(msg)

    def close(self) -> None:
        """Free the DMA buffers (the overlay stays loaded)."""
        for buf in (self._in_buf, self._out_buf):
            if buf is not None:
                buf.freebuffer()
        self._in_buf = self._out_buf = None


def _find(name: str, *dicts: dict) -> dict | None:
    """An overlay entry by instance name: the key itself, else a key naming it as a path component or
    with a suffix (pynq versions key memories as ``name``, ``name/S_AXI`` or ``hier/name``...)."""
    for d in dicts:
        if name in d:
            return d[name]
    pattern = re.compile(rf"(^|/){re.escape(name)}($|[/_])")
    for d in dicts:
        for key, entry in d.items():
            if pattern.search(str(key)):
                return entry
    return None
