"""A simulated PYNQ device, so the unmodified pynq 3.x driver code runs on x86.

pynq finds devices through ``Device`` subclasses that carry ``_probe_`` and
``_probe_priority_`` (the lowest priority that finds something becomes
``Device.active_device``). :class:`SimDevice` is one: with ``FLIPQ_PYNQ_SIM=1`` its probe
answers, and pynq's own ``Overlay``, ``allocate``, ``MMIO``, ``Clocks`` and
``pynq.lib.dma.DMA`` (``sendchannel``/``recvchannel`` ``transfer``/``wait``) talk to it.

What it models, register by register, so a driver bug shows up here and not first on a board:

- **AXI DMA, simple mode** (PG021): per channel DMACR (RS, Reset), DMASR (Halted, Idle,
  DMAIntErr, DMASlvErr, DMADecErr, IOC_Irq/Err_Irq write-one-to-clear), SA/DA, LENGTH.
  Idle is 0 after start until the first transfer completes, a LENGTH write while halted is
  ignored, an error halts the channel and only a soft reset clears it; S2MM LENGTH reads
  back the bytes actually received.
- **Non-coherent DDR**: each buffer has a CPU view and a DDR copy; ``flush`` copies CPU->DDR,
  ``invalidate`` DDR->CPU, and the DMA only sees DDR, so a missing flush/invalidate gives
  stale data as on the board.
- **The accelerator** (Vitis HLS ``ap_ctrl_hs``): CTRL ap_start/ap_done/ap_idle, its
  ``planes`` and ``n_samples`` registers (offsets from the .hwh). It consumes the MM2S
  stream only once started, calls :attr:`SimDevice.compute` (the PL, a Python callback
  ``compute(input_words, planes) -> output_words``) and streams the result to S2MM, which
  completes when armed with a length that holds it (a shorter one raises DMAIntErr here; the
  board's behaviour then is undefined).
- **PS7 clocks**: the SLCR PLL and FPGA clock control registers pynq's ``Clocks`` reads and
  writes (``Clocks.fclk0_mhz``), reset to the PYNQ-Z2 boot values (IO PLL 1 GHz, fclk0 100 MHz).

Fault injection: ``SimDevice.fault`` = ``"hang"`` (the accelerator never answers),
``"mm2s_slverr"``, ``"mm2s_decerr"``, ``"s2mm_slverr"``, ``"s2mm_decerr"`` or ``"s2mm_interr"``.

>>> monkeypatch.setenv("FLIPQ_PYNQ_SIM", "1")          # doctest: +SKIP
>>> dev = activate()                                   # doctest: +SKIP
>>> dev.compute = lambda words, planes: words[:4]      # doctest: +SKIP
>>> ol = pynq.Overlay("overlay/flipq.bit")             # doctest: +SKIP

Zynq-7000 (PS7, 32-bit Arm) only; a ``.hwh`` must lie beside the ``.bit``, whose content
is not read.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Callable

import numpy as np

from pynq.buffer import PynqBuffer
from pynq.pl_server.device import Device

from flipq.host.accelerator import SIM_ENV  # one name for the switch, which the host reads too

FAULTS = (None, "hang", "mm2s_slverr", "mm2s_decerr", "s2mm_slverr", "s2mm_decerr", "s2mm_interr")

# DMASR bits (PG021)
HALTED, IDLE, SG_INCLD = 1 << 0, 1 << 1, 1 << 3
DMA_INT_ERR, DMA_SLV_ERR, DMA_DEC_ERR = 1 << 4, 1 << 5, 1 << 6
IOC_IRQ, DLY_IRQ, ERR_IRQ = 1 << 12, 1 << 13, 1 << 14
# DMACR bits
RS, RESET = 1 << 0, 1 << 2
DMACR_RESET_VALUE = 0x00010000  # IRQThreshold = 1

SLCR_BASE, SLCR_SIZE = 0xF8000000, 0x1000
DDR_BASE, DDR_SIZE = 0x10000000, 0x10000000  # where simulated buffers are placed


class SimError(RuntimeError):
    """A misuse of the simulated hardware that real hardware would not report at all."""


def sim_enabled() -> bool:
    return os.environ.get(SIM_ENV, "") == "1"


class _Channel:
    def __init__(self, name: str):
        self.name = name
        self.reset()

    def reset(self) -> None:
        self.dmacr = DMACR_RESET_VALUE
        self.dmasr = HALTED
        self.addr = 0
        self.addr_msb = 0
        self.length = 0
        self.busy = False

    @property
    def running(self) -> bool:
        return not self.dmasr & HALTED

    def start_transfer(self, length: int) -> None:
        self.length = length
        self.busy = True
        self.dmasr &= ~IDLE

    def complete(self, nbytes: int | None = None) -> None:
        if nbytes is not None:
            self.length = nbytes
        self.busy = False
        self.dmasr |= IDLE | IOC_IRQ

    def error(self, bit: int) -> None:
        # PG021: an error halts the channel gracefully: RS drops, Halted rises.
        self.busy = False
        self.dmacr &= ~RS
        self.dmasr = (self.dmasr | bit | ERR_IRQ | HALTED) & ~IDLE


class SimAxiDma:
    """The AXI DMA register file in direct register (simple) mode."""

    OFFSETS = {"mm2s": 0x00, "s2mm": 0x30}

    def __init__(self, device: "SimDevice", name: str, params: dict):
        self.device, self.name = device, name
        self.length_width = int(params.get("c_sg_length_width", 14))
        if int(params.get("c_include_sg", 0)):
            raise SimError(f"{name}: the simulator models simple mode only (c_include_sg=0)")
        self.stream_bytes = int(params.get("c_m_axis_mm2s_tdata_width", 32)) // 8
        self.mm2s, self.s2mm = _Channel("MM2S"), _Channel("S2MM")

    def reset(self) -> None:
        self.mm2s.reset()
        self.s2mm.reset()

    def _chan(self, offset: int) -> tuple[_Channel, int]:
        return (self.s2mm, offset - 0x30) if offset >= 0x30 else (self.mm2s, offset)

    def read(self, offset: int) -> int:
        ch, rel = self._chan(offset)
        if rel == 0x00:
            return ch.dmacr
        if rel == 0x04:
            return ch.dmasr
        if rel == 0x18:
            return ch.addr
        if rel == 0x1C:
            return ch.addr_msb
        if rel == 0x28:
            return ch.length
        return 0

    def write(self, offset: int, value: int) -> None:
        ch, rel = self._chan(offset)
        if rel == 0x00:
            if value & RESET:
                # Either channel's Reset bit resets the whole core; the bit self-clears.
                self.reset()
                self.device.stream_reset()
                return
            ch.dmacr = value & ~RESET
            if value & RS:
                ch.dmasr &= ~HALTED
            elif not ch.busy:
                ch.dmasr = (ch.dmasr | HALTED) & ~IDLE
        elif rel == 0x04:
            ch.dmasr &= ~(value & (IOC_IRQ | DLY_IRQ | ERR_IRQ))
        elif rel == 0x18:
            ch.addr = value
        elif rel == 0x1C:
            ch.addr_msb = value
        elif rel == 0x28:
            length = value & ((1 << self.length_width) - 1)
            if not ch.running:
                return  # PG021: writing LENGTH while halted has no effect
            if length == 0:
                ch.error(DMA_INT_ERR)
                return
            ch.start_transfer(length)
            self.device.advance()


class SimHlsAccel:
    """A Vitis HLS block with ap_ctrl_hs and scalar arguments on s_axi_control."""

    def __init__(self, name: str, registers: dict):
        self.name = name
        offsets = {k: v["address_offset"] for k, v in registers.items()}
        for need in ("CTRL", "planes"):
            if need not in offsets:
                raise SimError(f"{name}: the .hwh gives no '{need}' register; flipq's accelerator "
                               "has CTRL at 0x00 and planes on s_axi_control")
        self.offsets = offsets
        self.args = {k: 0 for k in offsets if k not in ("CTRL", "GIER", "IP_IER", "IP_ISR")}
        self.reset()

    def reset(self) -> None:
        self.running = False
        self.done = False
        self.consumed = False
        self.pending_out: bytes | None = None
        self.latched_planes = 0

    @property
    def planes(self) -> int:
        return self.args.get("planes", 0)

    def read(self, offset: int) -> int:
        if offset == self.offsets["CTRL"]:
            v = (0 if self.running else 1 << 2) | (1 << 1 if self.done else 0)
            self.done = False  # ap_done is clear-on-read
            return v | (1 if self.running and not self.consumed else 0)
        for k, off in self.offsets.items():
            if off == offset and k in self.args:
                return self.args[k]
        return 0

    def write(self, offset: int, value: int, device: "SimDevice") -> None:
        if offset == self.offsets["CTRL"]:
            if value & 1 and not self.running:
                self.running, self.consumed, self.done = True, False, False
                self.latched_planes = self.planes
                device.advance()
            return
        for k, off in self.offsets.items():
            if off == offset and k in self.args:
                self.args[k] = value


class SimSlcr:
    """The PS7 SLCR clock registers pynq's ``Clocks`` touches, at PYNQ-Z2 boot values."""

    def __init__(self):
        self.regs = {
            0x100: 26 << 12,  # ARM_PLL_CTRL: 50 MHz * 26 = 1300 MHz
            0x104: 21 << 12,  # DDR_PLL_CTRL: 1050 MHz
            0x108: 20 << 12,  # IO_PLL_CTRL: 1000 MHz
            0x120: (2 << 8) | (0 << 4),  # ARM_CLK_CTRL: ARM PLL / 2 = 650 MHz
        }
        for i, off in enumerate((0x170, 0x180, 0x190, 0x1A0)):
            self.regs[off] = (2 << 20) | (5 << 8) if i == 0 else (1 << 20) | (10 << 8)

    def read(self, offset: int) -> int:
        return self.regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        self.regs[offset] = value & 0xFFFFFFFF

    def fclk_mhz(self, idx: int = 0) -> float:
        reg = self.regs[0x170 + 0x10 * idx]
        src = (reg >> 4) & 0x3
        pll = {0: 0x108, 1: 0x108, 2: 0x100, 3: 0x104}[src]
        pll_mhz = 50.0 * ((self.regs[pll] >> 12) & 0x7F)
        return pll_mhz / (((reg >> 8) & 0x3F) * ((reg >> 20) & 0x3F))


class SimDevice(Device):
    """The simulated board; see the module docstring."""

    _probe_priority_ = 5  # ahead of pynq's own devices (50+), so the sim wins when enabled
    simulated = True  # read by flipq.host.pynq_backend: timings here are not measurements

    @classmethod
    def _probe_(cls):
        return [cls()] if sim_enabled() else []

    def __init__(self, tag: str = "flipq_sim0"):
        super().__init__(tag)
        self.name = "flipq-sim"
        self.arch = "armv7l"  # pynq's Clocks picks the Zynq-7000 register model from this
        self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False, "CALLABLE": False}
        self.timestamp = ""
        self.bitfile_name = None
        self._bitfile_name = None
        self.compute: Callable[[np.ndarray, int], np.ndarray] | None = None
        self.fault: str | None = None
        self.slcr = SimSlcr()
        self.dma: SimAxiDma | None = None
        self.accel: SimHlsAccel | None = None
        self._regions: dict[int, tuple[int, object]] = {SLCR_BASE: (SLCR_SIZE, self.slcr)}
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._next_addr = DDR_BASE
        self.downloads = 0
        self.compute_calls = 0

    # -- bitstream & metadata ----------------------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name, partial: bool = False):
        from pynqmetadata.frontends import Metadata
        from pynq.metadata.runtime_metadata_parser import RuntimeMetadataParser

        from flipq.overlays.check import read_hwh

        hwh = Path(bitfile_name).with_suffix(".hwh")
        read_hwh(hwh)  # a missing, truncated or foreign .hwh: one line naming it, not a parser traceback
        return RuntimeMetadataParser(Metadata(input=str(hwh)))

    def download(self, bitstream, parser=None):
        if parser is None:
            raise SimError("the simulated device needs the .hwh metadata to load a bitstream")
        self._configure(parser)
        self.downloads += 1
        self._bitfile_name = bitstream.bitfile_name
        super().post_download(bitstream, parser, self.name)

    def _configure(self, parser) -> None:
        """Rebuild the PL models: a fresh bitstream resets every register."""
        self._regions = {SLCR_BASE: (SLCR_SIZE, self.slcr)}
        self.dma = self.accel = None
        for name, ip in parser.ip_dict.items():
            if "phys_addr" not in ip:
                continue
            if ip["type"].startswith("xilinx.com:ip:axi_dma:"):
                if self.dma is not None:
                    raise SimError(f"the simulator models one AXI DMA; the design has {self.dma.name} and {name}")
                self.dma = SimAxiDma(self, name, ip["parameters"])
                self._regions[ip["phys_addr"]] = (ip["addr_range"], self.dma)
            elif "CTRL" in ip.get("registers", {}):
                if self.accel is not None:
                    raise SimError(f"the simulator models one accelerator; the design has "
                                   f"{self.accel.name} and {name}")
                self.accel = SimHlsAccel(name, ip["registers"])
                self._regions[ip["phys_addr"]] = (ip["addr_range"], self.accel)

    def close(self):
        pass

    # -- registers -------------------------------------------------------------------------
    def _region(self, address: int):
        for base, (size, model) in self._regions.items():
            if base <= address < base + size:
                return model, address - base
        raise SimError(f"no simulated register at 0x{address:08X} (the board would raise a bus error)")

    def read_registers(self, address: int, length: int) -> bytes:
        model, off = self._region(address)
        return b"".join(struct.pack("<I", model.read(off + 4 * i) & 0xFFFFFFFF)
                        for i in range(max(1, length // 4)))[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        model, off = self._region(address)
        data = bytes(data) + b"\0" * (-len(data) % 4)
        for i in range(len(data) // 4):
            (value,) = struct.unpack_from("<I", data, 4 * i)
            if isinstance(model, SimHlsAccel):
                model.write(off + 4 * i, value, self)
            else:
                model.write(off + 4 * i, value)

    # -- memory ----------------------------------------------------------------------------
    def allocate(self, shape, dtype, **kwargs):
        dtype = np.dtype(dtype)
        count = int(np.prod(shape)) if np.ndim(shape) else int(shape)
        size = max(4096, -(-count * dtype.itemsize // 4096) * 4096)
        if self._next_addr + size > DDR_BASE + DDR_SIZE:
            raise MemoryError(f"simulated DDR exhausted allocating {size} bytes")
        addr = self._next_addr
        self._next_addr += size
        cpu = np.zeros(size, dtype=np.uint8)
        ddr = np.zeros(size, dtype=np.uint8)
        self._buffers[addr] = (cpu, ddr)
        return PynqBuffer(shape, dtype, buffer=cpu, device=self, device_address=addr, bo=addr,
                          coherent=False)

    def flush(self, bo, offset, ptr, size):
        cpu, ddr = self._buffers[bo]
        ddr[offset:offset + size] = cpu[offset:offset + size]

    def invalidate(self, bo, offset, ptr, size):
        cpu, ddr = self._buffers[bo]
        cpu[offset:offset + size] = ddr[offset:offset + size]

    def _ddr(self, address: int, nbytes: int) -> np.ndarray | None:
        for base, (_, ddr) in self._buffers.items():
            if base <= address and address + nbytes <= base + ddr.size:
                return ddr[address - base:address - base + nbytes]
        return None

    # -- the PL ----------------------------------------------------------------------------
    def stream_reset(self) -> None:
        if self.accel is not None and self.fault != "hang":
            self.accel.reset()

    def advance(self) -> None:
        """Move data as far as the current register state allows."""
        dma, acc = self.dma, self.accel
        if dma is None or acc is None:
            return
        mm2s, s2mm = dma.mm2s, dma.s2mm
        if acc.running and not acc.consumed and mm2s.busy:
            src = self._ddr((mm2s.addr_msb << 32) | mm2s.addr, mm2s.length)
            if self.fault == "mm2s_slverr":
                return mm2s.error(DMA_SLV_ERR)
            if self.fault == "mm2s_decerr" or src is None:
                return mm2s.error(DMA_DEC_ERR)
            word_bytes = dma.stream_bytes
            words = np.frombuffer(src.tobytes(), dtype=f"<u{word_bytes}").copy()
            mm2s.complete()
            acc.consumed = True
            if self.fault == "hang":
                return
            if self.compute is None:
                raise SimError("no PL behaviour: set flipq.overlays.pynq_sim.sim_device().compute "
                               "to a function (input_words, planes) -> output_words")
            self.compute_calls += 1
            out = np.ascontiguousarray(self.compute(words, acc.latched_planes))
            acc.pending_out = out.astype(f"<u{word_bytes}", copy=False).tobytes()
        if acc.pending_out is not None and s2mm.busy:
            out = acc.pending_out
            if self.fault == "s2mm_interr" or len(out) > s2mm.length:
                return s2mm.error(DMA_INT_ERR)
            if self.fault == "s2mm_slverr":
                return s2mm.error(DMA_SLV_ERR)
            dst = self._ddr((s2mm.addr_msb << 32) | s2mm.addr, len(out))
            if self.fault == "s2mm_decerr" or dst is None:
                return s2mm.error(DMA_DEC_ERR)
            dst[:] = np.frombuffer(out, dtype=np.uint8)
            s2mm.complete(len(out))
            acc.pending_out = None
            acc.running, acc.done = False, True

    def fclk_mhz(self, idx: int = 0) -> float:
        return self.slcr.fclk_mhz(idx)


def activate() -> SimDevice:
    """Make pynq probe again and return the simulated device (needs ``FLIPQ_PYNQ_SIM=1``).

    pynq caches its device list and the ``Clocks`` register model on first use; both are
    dropped here so a fresh device (and fresh simulated memory) takes over.
    """
    if not sim_enabled():
        raise SimError(f"set {SIM_ENV}=1 to use the simulated PYNQ device")
    _forget_devices()
    return sim_device()


def deactivate() -> None:
    """Drop pynq's cached devices (e.g. after a test), so the next use probes again."""
    _forget_devices()


def _forget_devices() -> None:
    from pynq.ps import Clocks

    for attr in ("_devices", "_active_device"):
        if attr in Device.__dict__:
            delattr(Device, attr)
    if "_real_instance" in Clocks.__dict__:
        delattr(Clocks, "_real_instance")
    Clocks.device = None


def sim_device() -> SimDevice:
    """The active simulated device (probing pynq's devices again if an earlier probe ran
    before the simulator was enabled)."""
    if sim_enabled() and not any(isinstance(d, SimDevice) for d in Device.__dict__.get("_devices", [])):
        _forget_devices()
    dev = Device.active_device if Device.devices else None
    if not isinstance(dev, SimDevice):
        raise SimError(f"pynq's active device is {dev!r}, not the simulator; set {SIM_ENV}=1 "
                       "and call flipq.overlays.pynq_sim.activate()")
    return dev


def compute_from_int(fn: Callable[[np.ndarray, int], np.ndarray], meta) -> Callable:
    """Wrap an integer model ``fn(q_in (n, *input.shape), planes) -> acc (n, *output.shape)``
    as the PL callback, packing and unpacking as accel.json says (e.g. the emulator)."""
    from flipq.host.packing import pack, unpack

    in_spec, out_spec = meta.input.packing, meta.output.packing
    in_elems, in_shape = meta.input.n_elems, tuple(meta.input.shape)

    def compute(words: np.ndarray, planes: int) -> np.ndarray:
        q = unpack(words, in_elems, in_spec).reshape((-1,) + in_shape)
        acc = np.asarray(fn(q, planes), dtype=np.int64)
        return pack(acc.reshape(acc.shape[0], -1), out_spec).reshape(-1)

    return compute


def attach(folder: str | Path, intmodel=None) -> str:
    """Make pynq's simulated device the programmable logic of the overlay in ``folder``:
    the board wrapper compiled with g++ (``sim/libflipq_top.so`` from ``flipq overlay build
    --simulate``) when present, else the emulator behind the packing of accel.json. Returns
    which. Needs ``FLIPQ_PYNQ_SIM=1``; call before opening the folder on the ``pynq`` backend.

    >>> attach("build/demo/overlay")                                   # doctest: +SKIP
    'wrapper'
    >>> Accelerator.load("build/demo/overlay", backend="pynq")         # doctest: +SKIP
    """
    from flipq.host.accelerator import find_intmodel
    from flipq.host.accelmeta import AccelMeta
    from flipq.host.emulator import Emulator
    from flipq.host.intmodel import IntModel

    folder = Path(folder)
    meta = AccelMeta.load(folder / "accel.json")
    device = activate()
    lib = folder / "sim" / "libflipq_top.so"
    if lib.is_file():
        from flipq.overlays.wrapper import pl_from_wrapper

        device.compute = pl_from_wrapper(lib, meta)
        return "wrapper"
    emulator = Emulator(intmodel if intmodel is not None else IntModel.load(find_intmodel(folder)))

    def datapath(q: np.ndarray, planes: int | None) -> np.ndarray:
        # planes 0 or above the stored planes means "all", as the hardware register does
        emulator.set_planes(planes if planes and planes < emulator.model.max_planes() else None)
        return emulator.run(q)

    device.compute = compute_from_int(datapath, meta)
    return "emulator"
