"""The board backend: packed integers through the AXI DMA to flipq's accelerator and back.

Runs on the PYNQ image (Python 3.10, numpy, pynq 3.x) and, on x86, against the simulated
device of :mod:`flipq.overlays.pynq_sim` (attached by the caller) with the same pynq code
paths; figures are labelled measured only on a real device.

>>> meta = AccelMeta.load("overlay/accel.json")                  # doctest: +SKIP
>>> backend = PynqBackend(Path("overlay"), meta)                  # doctest: +SKIP
>>> acc = backend.run(q_in, planes=4)   # int64 (n, *meta.output.shape)  # doctest: +SKIP

Rules it keeps (pynq 3.x): buffers are allocated once, at the largest chunk, and never
rebound (hls4ml's driver rebinds its output buffer and the next DMA writes to a stale
address); batches are cut to the DMA LENGTH limit; the receive channel is armed before the
send channel starts; completion is polled with a deadline rather than a bare ``wait()``, and
DMA error bits are reported by name.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from flipq.host.accelmeta import AccelMeta
from flipq.host.packing import pack, unpack

BITSTREAM = "flipq.bit"
METADATA = "accel.json"

_DMASR = {"MM2S": 0x04, "S2MM": 0x34}
_DMACR = {"MM2S": 0x00, "S2MM": 0x30}
_LENGTH = {"MM2S": 0x28, "S2MM": 0x58}
_HALTED, _IDLE = 1 << 0, 1 << 1
_RESET = 1 << 2
_ERROR_BITS = (
    (1 << 4, "DMAIntErr", "internal error: a zero length, or a stream packet longer than the "
                          "receive buffer"),
    (1 << 5, "DMASlvErr", "slave error: the memory side answered SLVERR"),
    (1 << 6, "DMADecErr", "decode error: the buffer address maps to nothing"),
)
_AP_START = 1 << 0


class PynqBackendError(RuntimeError):
    """The overlay cannot be used as asked; the message names file, field or register."""


class DmaError(PynqBackendError):
    """An AXI DMA channel raised an error bit; ``bits`` holds their names."""

    def __init__(self, message: str, channel: str, bits: tuple[str, ...]):
        super().__init__(message)
        self.channel, self.bits = channel, bits


class AcceleratorTimeout(PynqBackendError, TimeoutError):
    """A transfer did not complete within the backend's timeout."""


def dma_error_names(dmasr: int) -> tuple[str, ...]:
    return tuple(name for bit, name, _ in _ERROR_BITS if dmasr & bit)


class PynqBackend:
    name = "pynq"

    def __init__(self, overlay_dir: Path, meta: AccelMeta, timeout_s: float = 5.0):
        self.overlay_dir = Path(overlay_dir)
        self.timeout_s = float(timeout_s)
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.measured = False  # set once pynq's device is known
        self.last_timings: dict[str, float] = {}
        self._overlay = None
        self._in_buf = self._out_buf = None
        self._needs_reload = False

        disk = AccelMeta.load(self.overlay_dir / METADATA)
        if disk.model_hash != meta.model_hash:
            raise PynqBackendError(
                f"{self.overlay_dir / METADATA}: the overlay was built for model {disk.model_hash}, "
                f"but the caller expects model {meta.model_hash}; rebuild the overlay for this model "
                "or load the model it was built from")
        for what in ("shape",):
            for side in ("input", "output"):
                a, b = getattr(getattr(disk, side), what), getattr(getattr(meta, side), what)
                if tuple(a) != tuple(b):
                    raise PynqBackendError(f"{self.overlay_dir / METADATA}: {side}.{what} is {list(a)}, "
                                           f"the caller expects {list(b)}")
        self.meta = disk

        bit = self.overlay_dir / BITSTREAM
        for f in (bit, bit.with_suffix(".hwh")):
            if not f.is_file():
                raise FileNotFoundError(f"overlay file not found: {f} (copy the whole overlay folder "
                                        "from the build: flipq.bit, flipq.hwh, accel.json)")
        import pynq

        self._pynq = pynq
        try:
            device = pynq.Device.active_device
        except (RuntimeError, IndexError) as e:  # pynq 3.x on a machine without a device
            raise PynqBackendError(f"no PYNQ device ({e}): run on the board, or simulate it on this "
                                   "machine with FLIPQ_PYNQ_SIM=1 (flipq run / flipq bench)") from None
        # a simulated device says so; anything else is a real board and its timings are measured
        self.measured = not getattr(device, "simulated", False)
        self._overlay = pynq.Overlay(str(bit.resolve()))
        self._bind()
        self._check_clock()

        rows = self.meta.rows_per_transfer
        self._rows = rows
        in_spec, out_spec = self.meta.input.packing, self.meta.output.packing
        self._in_wps = in_spec.words_per_sample(self.meta.input.n_elems)
        self._out_wps = out_spec.words_per_sample(self.meta.output.n_elems)
        # Allocated once at the largest chunk; slices of these are what the DMA sees.
        self._in_buf = pynq.allocate(shape=(rows * self._in_wps,), dtype=in_spec.word_dtype)
        self._out_buf = pynq.allocate(shape=(rows * self._out_wps,), dtype=out_spec.word_dtype)

    # -- setup -----------------------------------------------------------------------------
    def _bind(self) -> None:
        ol, m = self._overlay, self.meta
        for name, what in ((m.dma.name, "dma.name"), (m.ip.name, "ip.name")):
            if name not in ol.ip_dict:
                raise PynqBackendError(
                    f"{self.overlay_dir / METADATA}: {what} = {name!r} is not in "
                    f"{self.overlay_dir / 'flipq.hwh'} (IP there: {', '.join(sorted(ol.ip_dict))})")
        self._dma = getattr(ol, m.dma.name)
        if getattr(self._dma, "_sg", False) or not hasattr(self._dma, "sendchannel"):
            raise PynqBackendError(f"{m.dma.name}: expected an AXI DMA in simple mode (c_include_sg=0)")
        if self._dma.sendchannel is None or self._dma.recvchannel is None:
            raise PynqBackendError(f"{m.dma.name}: needs both MM2S and S2MM channels")
        hw_max = int(self._dma.buffer_max_size)
        if hw_max < m.dma.max_transfer_bytes:
            raise PynqBackendError(
                f"{m.dma.name}: the hardware moves at most {hw_max} bytes per transfer "
                f"(c_sg_length_width), accel.json's dma.max_transfer_bytes says {m.dma.max_transfer_bytes}")
        self._accel = getattr(ol, m.ip.name)

    def _check_clock(self) -> None:
        try:
            fclk = float(self._pynq.Clocks.fclk0_mhz)
        except Exception as e:  # noqa: BLE001 - a board without PS clock access still runs
            self.fclk_mhz = None
            self._clock_note = f"fclk0 unreadable ({e})"
            return
        self.fclk_mhz = fclk
        if abs(fclk - self.meta.fclk_mhz) > 0.01 * self.meta.fclk_mhz:
            raise PynqBackendError(f"fclk0 runs at {fclk:g} MHz, accel.json's fclk_mhz is "
                                   f"{self.meta.fclk_mhz:g} MHz: the loaded overlay is not this one")

    # -- running ---------------------------------------------------------------------------
    def run(self, q_in: np.ndarray, planes: int | None) -> np.ndarray:
        """Integer NHWC inputs ``(n, *input.shape)`` -> int64 accumulators ``(n, *output.shape)``.

        ``planes`` of None accumulates every stored plane (``accel.json``'s ``max_planes``)."""
        if self._in_buf is None:
            raise PynqBackendError("the backend is closed")
        m = self.meta
        q_in = np.asarray(q_in)
        if q_in.dtype.kind not in "iu":
            raise TypeError(f"q_in must hold integers (quantized inputs), got dtype {q_in.dtype}")
        if q_in.ndim != len(m.input.shape) + 1 or tuple(q_in.shape[1:]) != tuple(m.input.shape):
            raise ValueError(f"q_in has shape {tuple(q_in.shape)}, expected (n, "
                             f"{', '.join(map(str, m.input.shape))}) (channels-last, batch first)")
        if planes is None:
            planes = self.meta.max_planes
        if isinstance(planes, bool) or not isinstance(planes, (int, np.integer)) or not 1 <= planes <= 8:
            raise ValueError(f"planes must be an int in 1..8, got {planes!r}")
        if self._needs_reload:
            self._reload()
        n = q_in.shape[0]
        t = {"pack": 0.0, "transfer": 0.0, "compute": 0.0, "unpack": 0.0}
        out = np.empty((n, m.output.n_elems), dtype=np.int64)
        for start in range(0, n, self._rows):
            stop = min(n, start + self._rows)
            t0 = time.perf_counter()
            words = pack(q_in[start:stop], m.input.packing)
            t1 = time.perf_counter()
            out_words = self._transfer(words, stop - start, int(planes), t)
            t2 = time.perf_counter()
            out[start:stop] = unpack(out_words, m.output.n_elems, m.output.packing)
            t["pack"] += t1 - t0
            t["unpack"] += time.perf_counter() - t2
        self.last_timings = t
        return out.reshape((n,) + tuple(m.output.shape))

    def _transfer(self, words: np.ndarray, rows: int, planes: int, t: dict) -> np.ndarray:
        m = self.meta
        n_in, n_out = rows * self._in_wps, rows * self._out_wps
        ta = time.perf_counter()
        self._in_buf[:n_in] = words.reshape(-1)
        tb = time.perf_counter()
        self._accel.write(m.ip.planes_offset, planes)
        self._accel.write(m.ip.control["n_samples"], rows)
        self._accel.write(m.ip.control["ap_ctrl"], _AP_START)
        send, recv = self._dma.sendchannel, self._dma.recvchannel
        out_bytes = n_out * self._out_buf.itemsize
        # Receive first: the accelerator's output must have somewhere to go, or the stream stalls.
        recv.transfer(self._out_buf, nbytes=out_bytes)
        send.transfer(self._in_buf, nbytes=n_in * self._in_buf.itemsize)
        deadline = time.monotonic() + self.timeout_s
        self._wait_idle("MM2S", deadline)
        self._wait_idle("S2MM", deadline)
        send.wait()  # returns at once: idle is set; lets pynq clear its channel state
        recv.wait()  # ... and invalidate the receive buffer's cache lines
        got = self._dma.mmio.read(_LENGTH["S2MM"])
        if got != out_bytes:
            self._needs_reload = True
            raise PynqBackendError(f"{m.dma.name}: S2MM received {got} bytes for {rows} samples, "
                                   f"expected {out_bytes} (output packing or n_samples mismatch)")
        tc = time.perf_counter()
        result = np.array(self._out_buf[:n_out]).reshape(rows, self._out_wps)
        td = time.perf_counter()
        t["transfer"] += (tb - ta) + (td - tc)
        t["compute"] += tc - tb
        return result

    def _wait_idle(self, channel: str, deadline: float) -> None:
        mmio = self._dma.mmio
        while True:
            sr = mmio.read(_DMASR[channel])
            bits = dma_error_names(sr)
            if bits:
                self._recover()
                details = "; ".join(f"{name} ({desc})" for bit, name, desc in _ERROR_BITS if sr & bit)
                raise DmaError(f"{self.meta.dma.name} {channel} channel error: {details}; "
                               f"DMASR=0x{sr:08X}. The DMA was reset.", channel, bits)
            if sr & _IDLE:
                return
            if sr & _HALTED:
                self._recover()
                raise PynqBackendError(f"{self.meta.dma.name} {channel} channel halted without an "
                                       f"error bit (DMASR=0x{sr:08X}). The DMA was reset.")
            if time.monotonic() > deadline:
                ctrl = self._accel.read(self.meta.ip.control["ap_ctrl"])
                self._recover()
                raise AcceleratorTimeout(
                    f"{self.meta.dma.name} {channel} transfer did not complete within "
                    f"{self.timeout_s:g} s (DMASR=0x{sr:08X}, {self.meta.ip.name} CTRL=0x{ctrl:X}: "
                    f"{'idle' if ctrl & 4 else 'busy'}). The DMA was reset and the bitstream will be "
                    "reloaded before the next run.")

    def _recover(self) -> None:
        """Soft-reset the DMA (either channel's Reset bit resets both) and reload the
        bitstream before the next run, since a wedged HLS block only resets with the PL."""
        mmio = self._dma.mmio
        mmio.write(_DMACR["MM2S"], _RESET)
        deadline = time.monotonic() + 1.0
        while mmio.read(_DMACR["MM2S"]) & _RESET and time.monotonic() < deadline:
            pass
        self._needs_reload = True

    def _reload(self) -> None:
        self._overlay.download()
        self._bind()
        self._dma.sendchannel.start()
        self._dma.recvchannel.start()
        self._needs_reload = False

    def close(self) -> None:
        for buf in (self._in_buf, self._out_buf):
            if buf is not None:
                buf.freebuffer()
        self._in_buf = self._out_buf = None
        self._overlay = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
