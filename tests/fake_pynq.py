"""A recording fake of the pynq API, for testing PynqBoard without a board.

It mimics the shapes of the real API that ``hwflow_host.pynq_board`` uses: ``Overlay(path)`` with
``ip_dict`` / ``mem_dict`` (``phys_addr``, ``addr_range``, ``registers``, ``parameters``) and one
attribute per IP (the DMA's ``sendchannel`` / ``recvchannel`` with ``transfer(array, start=0,
nbytes=0)`` and ``wait()``), ``MMIO(base, length).read(offset) / .write(offset, value)`` and
``allocate(shape, dtype)``. Every MMIO access is recorded as ``(op, region, offset, value)``.

Behind the bus sits a backend with ``read32(bus_addr)``, ``write32(bus_addr, value)`` and
``run(x)``: ``BusMemory`` packs the weight words of any word-level Board (the emulator) into 32-bit
bus words exactly as contract 8 lays them out; a C-sim board with its own bus-level access can be
plugged in directly. ``layout_manifest`` writes a contract-8 manifest for a WeightImage, the way
``hwflow build`` lays out the memories.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from hwflow_host.manifest import Manifest, parse_manifest

from hwflow.image import WeightImage

AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4
BATCH_OFFSET = 0x10
CTRL_BASE = 0x43C0_0000
DMA_BASE = 0x4040_0000


class FakeDeviceError(Exception):
    """The host did something the hardware would not survive (a test failure, not a host error)."""


class PowerLoss(Exception):
    """Raised by the fake to interrupt a campaign in the middle of a batch."""


def layout_manifest(image: WeightImage, *, input_shape, input_type: str, output_shape, output_type: str,
                    model: str = "test-model", board: str = "pynq-z2", base: int = 0x4000_0000,
                    skip: tuple[str, ...] = ()) -> dict:
    """A contract-8 manifest for ``image``: one BRAM per array (``skip``: keys left out of BRAM),
    ranges a power of two of at least 4 KiB, each aligned to its range."""
    memories = []
    addr = base
    for arr in image:
        if arr.key in skip:
            continue
        word_bits = arr.format.width
        lanes = 32 // word_bits
        size = max(4096, 1 << math.ceil(math.log2(4 * -(-arr.size // lanes))))
        addr = -(-addr // size) * size
        memories.append({"name": arr.var, "layer": arr.layer, "array": arr.name, "port": f"{arr.var}_mem",
                         "ctrl": f"axi_bram_ctrl_{arr.var}", "base": addr, "range": size, "depth": arr.size,
                         "word_bits": word_bits, "lanes": lanes, "first_word": image.base(arr.layer, arr.name),
                         "format": str(arr.format), "scale": arr.scale.to_json()})
        addr += size
    return {"format": 1, "model": model, "board": board, "part": "xc7z020clg400-1", "clock_mhz": 100.0,
            "backend": "Vitis", "io_type": "io_parallel", "top": "hwflow_top", "ip": "hwflow_top_0",
            "data": {"interface": "axis-dma", "dma": "axi_dma_0", "word_bits": 32, "input_shape": list(input_shape),
                     "input_type": input_type, "output_shape": list(output_shape), "output_type": output_type,
                     "control": "s_axilite", "batch_register": "n_samples"},
            "weight_memories": memories, "weight_image": "weight_image.json", "program": "program.json"}


class BusMemory:
    """The weight BRAMs as 32-bit bus words in front of a word-level Board (contract 8 packing).

    Every bus bit is stored (unused lanes too), as a BRAM does. ``break_bit`` makes a cell stuck,
    to model a device with a real hard fault. Words changed on the bus reach the board before ``run``.
    """

    def __init__(self, manifest: Manifest, board):
        self.manifest, self.board = manifest, board
        self.bram = {}
        for m in manifest.memories:
            words = np.zeros(m.range // 4, np.uint64)
            for i in range(m.depth):
                off, shift = m.locate(i)
                words[off // 4] |= np.uint64(board.read_word(m.first_word + i) << shift)
            self.bram[m.name] = words
        self.broken: dict[int, tuple[int, int]] = {}  # bus address -> (and mask, or mask)
        self._dirty: set[tuple[str, int]] = set()

    def _where(self, bus_addr: int):
        for m in self.manifest.memories:
            if m.base <= bus_addr < m.base + m.range:
                return m, (bus_addr - m.base) // 4
        msg = f"bus address {bus_addr:#x} is in no BRAM"
        raise FakeDeviceError(msg)

    def break_bit(self, bus_addr: int, bit: int, value: int) -> None:
        self.broken[bus_addr] = (0xFFFFFFFF & ~(1 << bit), value << bit)

    def read32(self, bus_addr: int) -> int:
        m, i = self._where(bus_addr)
        return int(self.bram[m.name][i])

    def write32(self, bus_addr: int, value: int) -> None:
        if not 0 <= value <= 0xFFFFFFFF:
            msg = f"a 32-bit bus write of {value:#x}"
            raise FakeDeviceError(msg)
        m, i = self._where(bus_addr)
        if bus_addr in self.broken:
            and_, or_ = self.broken[bus_addr]
            value = (value & and_) | or_
        self.bram[m.name][i] = value
        self._dirty.add((m.name, i))

    def run(self, x: np.ndarray) -> np.ndarray:
        addrs, values = [], []
        for name, i in sorted(self._dirty):
            m = next(mm for mm in self.manifest.memories if mm.name == name)
            word = int(self.bram[name][i])
            for lane in range(m.lanes):
                index = i * m.lanes + lane
                if index < m.depth:
                    addrs.append(m.first_word + index)
                    values.append((word >> (lane * m.word_bits)) & m.mask)
        if addrs:
            self.board.write_words(np.array(addrs, np.int64), np.array(values, np.uint64))
        self._dirty.clear()
        return self.board.run(x)


class FakeBuffer(np.ndarray):
    """What ``pynq.allocate`` returns: a numpy array with a physical address and cache operations."""

    def freebuffer(self) -> None:
        self.freed = True

    def flush(self) -> None:
        pass

    def invalidate(self) -> None:
        pass


class FakeChannel:
    def __init__(self, pynq: FakePynq, name: str):
        self.pynq, self.name, self.pending = pynq, name, None

    def transfer(self, array, start: int = 0, nbytes: int = 0) -> None:
        if not isinstance(array, FakeBuffer):
            msg = "DMA transfers need a buffer from pynq.allocate"
            raise FakeDeviceError(msg)
        nbytes = nbytes or array.nbytes
        if nbytes > (1 << self.pynq.length_width) - 1:
            msg = f"a {nbytes}-byte DMA transfer exceeds the length register"
            raise FakeDeviceError(msg)
        self.pending = (array, start, nbytes)
        self.pynq.log.append(("dma", self.name, "transfer", nbytes))

    @property
    def idle(self) -> bool:
        """DMASR's idle bit: never set again once the accelerator hangs (``device.hang``)."""
        return not self.pynq.device.hang

    def wait(self) -> None:
        self.pynq.log.append(("dma", self.name, "wait", None))
        if self.pynq.device.dma_error:
            raise RuntimeError(self.pynq.device.dma_error)  # as pynq reports DMASR's error bits
        self.pynq.device.dma_wait()


class FakeDMA:
    """pynq's AxiDMA: two channels and the largest transfer (``buffer_max_size``, from c_sg_length_width)."""

    def __init__(self, pynq: FakePynq):
        self.sendchannel = FakeChannel(pynq, "send")
        self.recvchannel = FakeChannel(pynq, "recv")
        self.buffer_max_size = (1 << pynq.length_width) - 1


class FakeDevice:
    """The block design behind the fake: BRAM controllers, the accelerator's control registers, the DMA."""

    def __init__(self, pynq: FakePynq, manifest: dict, backend):
        self.pynq, self.manifest, self.backend = pynq, parse_manifest(manifest), backend
        self.ctrl = {0: AP_IDLE, BATCH_OFFSET: 0}
        self.started = False
        self.runs = 0
        self.power_loss_after: int | None = None  # raise PowerLoss during this run (1-based)
        self.hang = False  # the DMA never completes
        self.dma_error = ""  # pynq's wait() raises this
        self.stays_busy = False  # the DMA completes but ap_idle never returns
        self.dma = FakeDMA(pynq)

    def dma_wait(self) -> None:
        send, recv = self.dma.sendchannel, self.dma.recvchannel
        if not (self.started and send.pending and recv.pending):
            return
        self.runs += 1
        if self.power_loss_after is not None and self.runs >= self.power_loss_after:
            msg = f"power lost during run {self.runs}"
            raise PowerLoss(msg)
        data = self.manifest.data
        n = self.ctrl[BATCH_OFFSET]
        in_buf, _, in_bytes = send.pending
        out_buf, _, out_bytes = recv.pending
        if in_bytes != 4 * n * data.input_elements or out_bytes != 4 * n * data.output_elements:
            msg = f"n_samples={n} but the DMA moves {in_bytes} / {out_bytes} bytes"
            raise FakeDeviceError(msg)
        codes = np.asarray(in_buf[: n * data.input_elements], dtype=np.int64)
        x = data.input_type.to_float(codes).reshape((n, *data.input_shape)).astype(np.float32)
        out = np.asarray(self.backend.run(x), dtype=np.int64).reshape(n, -1)
        out_buf[: out.size] = out.reshape(-1).astype(np.int32)
        send.pending = recv.pending = None
        self.started = False
        self.ctrl[0] = 0 if self.stays_busy else AP_IDLE | AP_DONE

    def read(self, region: str, addr: int, offset: int) -> int:
        if region == "ctrl":
            return self.ctrl.get(offset, 0)
        return self.backend.read32(addr)

    def write(self, region: str, addr: int, offset: int, value: int) -> None:
        if region == "ctrl":
            if offset == 0 and value & AP_START:
                if not self.ctrl[0] & AP_IDLE:
                    msg = "ap_start while the accelerator is busy"
                    raise FakeDeviceError(msg)
                self.started = True
                self.ctrl[0] = 0
            else:
                self.ctrl[offset] = value
            return
        if self.started:
            msg = "a weight write while the accelerator runs"
            raise FakeDeviceError(msg)
        self.backend.write32(addr, value)


class FakeOverlay:
    def __init__(self, pynq: FakePynq, path: str):
        self.pynq, self.path = pynq, path
        self.ip_dict = pynq.ip_dict
        self.mem_dict = pynq.mem_dict

    def __getattr__(self, name: str):
        if name == self.pynq.dma_name:
            return self.pynq.device.dma
        raise AttributeError(name)


class FakeMMIO:
    def __init__(self, pynq: FakePynq, base: int, length: int):
        self.pynq, self.base, self.length = pynq, base, length
        self.region = pynq.region_of(base, length)

    def _check(self, offset: int) -> int:
        if offset % 4 or not 0 <= offset <= self.length - 4:
            msg = f"MMIO offset {offset:#x} outside {self.region} (length {self.length:#x})"
            raise FakeDeviceError(msg)
        return self.base + offset

    def read(self, offset: int, length: int = 4) -> int:
        value = self.pynq.device.read(self.region, self._check(offset), offset)
        self.pynq.log.append(("read", self.region, offset, value))
        return value

    def write(self, offset: int, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            msg = f"MMIO.write takes an int, got {type(value).__name__}"
            raise FakeDeviceError(msg)
        addr = self._check(offset)
        self.pynq.log.append(("write", self.region, offset, value))
        self.pynq.device.write(self.region, addr, offset, value)


class FakePynq:
    """Stands in for the ``pynq`` module: ``Overlay``, ``MMIO``, ``allocate``; ``log`` records traffic.

    ``manifest`` (a contract-8 dict) describes the *hardware* (the overlay's ip_dict and mem_dict);
    the host may be given a different manifest, to test that it refuses a mismatch.
    """

    def __init__(self, manifest: dict, backend, *, length_width: int = 14):
        self.log: list[tuple] = []
        self.length_width = length_width
        self.dma_name = manifest["data"]["dma"]
        self.mem_dict = {m["ctrl"]: {"phys_addr": m["base"], "addr_range": m["range"], "type": "xilinx.com:ip:"
                                     "axi_bram_ctrl:4.1"} for m in manifest["weight_memories"]}
        self.ip_dict = {
            manifest["ip"]: {"phys_addr": CTRL_BASE, "addr_range": 0x10000, "type": "xilinx.com:hls:hwflow_top:1.0",
                             "registers": {"CTRL": {"address_offset": 0, "size": 32},
                                           manifest["data"]["batch_register"]: {"address_offset": BATCH_OFFSET,
                                                                                "size": 32}}},
            self.dma_name: {"phys_addr": DMA_BASE, "addr_range": 0x10000, "type": "xilinx.com:ip:axi_dma:7.1",
                            "parameters": {"c_sg_length_width": str(length_width), "c_include_sg": "0"}},
        }
        self.device = FakeDevice(self, manifest, backend)
        self.overlays: list[FakeOverlay] = []

    def Overlay(self, path: str) -> FakeOverlay:  # noqa: N802 - pynq's name
        overlay = FakeOverlay(self, path)
        self.overlays.append(overlay)
        self.log.append(("overlay", path, None, None))
        return overlay

    def MMIO(self, base: int, length: int) -> FakeMMIO:  # noqa: N802 - pynq's name
        return FakeMMIO(self, base, length)

    def allocate(self, shape, dtype) -> FakeBuffer:
        self.log.append(("allocate", tuple(shape), np.dtype(dtype).name, None))
        return np.zeros(shape, dtype).view(FakeBuffer)

    def region_of(self, base: int, length: int) -> str:
        for name, entry in self.mem_dict.items():
            if entry["phys_addr"] <= base and base + length <= entry["phys_addr"] + entry["addr_range"]:
                return name
        ctrl = self.ip_dict[self.device.manifest.ip] if hasattr(self, "device") else None
        if ctrl and ctrl["phys_addr"] <= base and base + length <= ctrl["phys_addr"] + ctrl["addr_range"]:
            return "ctrl"
        msg = f"MMIO({base:#x}, {length:#x}) maps no device of the overlay"
        raise FakeDeviceError(msg)

    def writes(self) -> list[tuple]:
        return [e for e in self.log if e[0] == "write"]


# --- test models -------------------------------------------------------------------------------------


@functools.cache
def converted(name: str = "mlp-digits", weight_bits: int = 8, act_bits: int = 8):
    """(Program, WeightImage) of an untrained zoo model (random batch-norm statistics) as hls4ml
    converts it; once per test session, shared by the test modules."""
    import tempfile

    from hwflow.convert import HlsOptions, convert, image_from_hls, program_from_hls
    from tests.conftest import zoo_model

    with tempfile.TemporaryDirectory(prefix="hwflow-test-") as tmp:
        hls_model = convert(zoo_model(name, weight_bits, act_bits), HlsOptions.make("parallel"), Path(tmp) / name)
        return program_from_hls(hls_model, source={"model": name}), image_from_hls(hls_model)


def manifest_for(program, image: WeightImage, **kwargs) -> dict:
    """``layout_manifest`` with the data path of ``program``."""
    return layout_manifest(image, input_shape=program.input.output_shape, input_type=str(program.input.result),
                           output_shape=program.output.output_shape, output_type=str(program.output.result), **kwargs)


_BUILDS: dict[str, object] = {}


def mlp_build(tmp_path_factory):
    """``hwflow build`` of mlp-digits for pynq-z2 (every array in BRAM, Resource strategy so it fits) and
    its compiled C simulation as a ``CSimBoard``; once per test session."""
    if "mlp" not in _BUILDS:
        from hwflow.convert import HlsOptions
        from hwflow.hardware.boards import load_board
        from hwflow.hardware.csim_board import CSimBoard
        from hwflow.hardware.project import BuildOptions, generate
        from tests.conftest import zoo_model

        out = tmp_path_factory.mktemp("mlp-build")
        options = BuildOptions(hls=HlsOptions.make("parallel", "Vitis", "Resource", 64), min_words=1, name="mlp")
        build = generate(zoo_model("mlp-digits", 8, 8), load_board("pynq-z2"), out, options)
        _BUILDS["mlp"] = (build, CSimBoard(out))
    return _BUILDS["mlp"]
