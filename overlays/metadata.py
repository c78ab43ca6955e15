"""accel.json for one model on one board: the build side of :mod:`flipq.host.accelmeta`.

The host reads accel.json with numpy alone; writing it needs the board's data and the
model's output range, which are build facts, so it lives here with the overlay flow.

>>> from flipq.boards import load_board
>>> meta = accel_meta_for(IntModel.load("build/demo/hls"), load_board("pynq-z2"))   # doctest: +SKIP
>>> meta.save("build/demo/overlay/accel.json")                                       # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from flipq.host.accelmeta import (DEFAULT_DMA_NAME, DEFAULT_IP_NAME, DEFAULT_IP_VLNV, USER_LAYOUTS, AccelMeta,
                                  AccelMetaError, DmaMeta, InputMeta, IpMeta, OutputMeta)
from flipq.host.intmodel import IntModel
from flipq.hls.hwplan import output_range_bits
from flipq.host.packing import PackingSpec


def accel_meta_for(model: IntModel, board, *, max_batch: int = 1024, dma_name: str = DEFAULT_DMA_NAME,
                   ip_name: str = DEFAULT_IP_NAME, ip_vlnv: str = DEFAULT_IP_VLNV,
                   output_bits: int | None = None, fclk_mhz: float | None = None) -> AccelMeta:
    """The metadata of ``model`` built for ``board`` (a :class:`flipq.boards.Board`).

    The DMA length width is the narrowest that carries ``max_batch`` samples in one
    transfer; a ``max_batch`` the board's DMA cannot carry in one transfer is refused with the
    largest that fits (a silent clamp would size the host's buffers differently from what the
    user asked for).
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise AccelMetaError(f"max_batch = {max_batch!r} must be an int >= 1")
    in_pack, out_pack, acc_bits, acc_signed, out_exp = _stream_packing(model, board, output_bits)
    in_shape = tuple(int(d) for d in model.input_shape)
    out_shape = tuple(int(d) for d in model.output_shape())
    per_sample = _bytes_per_sample(model, in_pack, out_pack)
    most = largest_batch(model, board, output_bits)
    if max_batch > most:
        raise AccelMetaError(f"max_batch = {max_batch}: the {board.name} DMA's length register "
                             f"({board.dma_max_length_width} bits) "
                             f"carries at most {most} samples of this model per transfer; use --max-batch "
                             f"{most} or less")
    length_width = max(8, (int(max_batch) * per_sample).bit_length())
    layout = model.input_layout if model.input_layout in USER_LAYOUTS else "NCHW"
    return AccelMeta(
        model_hash=model.digest(),
        board=board.name,
        fclk_mhz=float(fclk_mhz if fclk_mhz is not None else board.fclk0_mhz),
        input=InputMeta(in_shape, layout, model.input_quant, in_pack),
        output=OutputMeta(out_shape, out_exp, acc_bits, acc_signed, out_pack),
        dma=DmaMeta(dma_name, length_width, (1 << length_width) - 1, int(board.dma_data_width)),
        ip=IpMeta(ip_name, ip_vlnv),
        max_planes=model.max_planes(),
        max_batch=int(max_batch),
        plan=model.plan.to_dict() if model.plan is not None else None,
    )


def _stream_packing(model: IntModel, board, output_bits: int | None = None):
    """(input packing, output packing, acc bits, acc signed, output exp) on ``board``'s stream."""
    word_bits = int(board.dma_data_width)
    in_q = model.input_quant
    acc_bits, acc_signed, out_exp = output_range_bits(model)
    if output_bits is None:
        output_bits = next((b for b in (8, 16, 32) if b >= acc_bits), None)
        if output_bits is None:
            raise AccelMetaError(f"the output needs {acc_bits}-bit accumulators; flipq's output "
                                 "stream carries at most 32 bits per value")
    if output_bits < acc_bits:
        raise AccelMetaError(f"output_bits = {output_bits} is narrower than the {acc_bits}-bit "
                             "output accumulators")
    return (PackingSpec(in_q.bits, in_q.signed, word_bits), PackingSpec(output_bits, acc_signed, word_bits),
            acc_bits, acc_signed, out_exp)


def _bytes_per_sample(model: IntModel, in_pack: PackingSpec, out_pack: PackingSpec) -> int:
    """The larger of one sample's input and output stream: what sizes a DMA transfer."""
    return max(in_pack.bytes_per_sample(int(np.prod(model.input_shape))),
               out_pack.bytes_per_sample(int(np.prod(model.output_shape()))))


def stream_bytes_per_sample(model: IntModel, board, output_bits: int | None = None) -> tuple[int, int]:
    """Bytes one sample of ``model`` moves over ``board``'s DMA: (packed input, packed output)."""
    in_pack, out_pack, *_ = _stream_packing(model, board, output_bits)
    return (in_pack.bytes_per_sample(int(np.prod(model.input_shape))),
            out_pack.bytes_per_sample(int(np.prod(model.output_shape()))))


def largest_batch(model: IntModel, board, output_bits: int | None = None) -> int:
    """The most samples of ``model`` one DMA transfer on ``board`` carries (its LENGTH register)."""
    in_pack, out_pack, *_ = _stream_packing(model, board, output_bits)
    per_sample = _bytes_per_sample(model, in_pack, out_pack)
    most = ((1 << int(board.dma_max_length_width)) - 1) // per_sample
    if most < 1:
        raise AccelMetaError(f"one sample is {per_sample} bytes, more than the {board.name} DMA "
                             f"can move in one transfer ({(1 << int(board.dma_max_length_width)) - 1} bytes)")
    return most
