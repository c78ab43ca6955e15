"""FINN's reference networks (brevitas_examples.bnn_pynq) through flipq: TFC-2W2A and SFC-2W2A
lowered to integers (thresholds for BatchNorm, the input affine ``2*x - 1``, TensorNorm as the
output affine), compiled to the bit-serial C-sim, and compared row by row: C-sim = emulator
(every row, full precision and ``planes=1``), emulator = Brevitas forward up to the output
affine's documented bound with the argmax equal on every row. 1W2A (bipolar weights) is
exact; 1W1A's 1-bit input quantizer is refused in one line saying what to use instead. FINN's
FC also runs on its own (1, 28, 28) input, which it flattens before the input quantizer. CNV-W1A1
and CNV-W1A2 (8-bit inputs, bipolar activations inside) are exact.

Random seeded parameters (tests/finn_nets.py); FINN's inputs (uint8 images / 255); io_parallel
only and a few rows, to keep the compiles few. CNV-2W2A is benchmarks/finn_cnv.py's.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: siblings by path

from finn_nets import export_and_lower, finn_model, input_shape, random_images, torch_forward  # noqa: E402

ROWS = 24

_chains: dict = {}


def run_chain(name: str, folder: Path, flat: bool = True, rows: int = ROWS) -> dict:
    """Build, lower, compile and run FINN network ``name`` once per session (``flat``: see
    finn_nets.finn_model)."""
    if (name, flat) in _chains:
        return _chains[name, flat]
    from flipq.hls.bitserial import build_bitserial
    from flipq.host.csim import CsimBackend
    from flipq.host.emulator import Emulator

    model = finn_model(name, seed=0, flat=flat)
    shape = input_shape(name, flat)
    raw, intmodel, prepared, plan = export_and_lower(model, shape, folder)
    with contextlib.redirect_stdout(io.StringIO()):
        build = build_bitserial(intmodel, prepared, folder / "hls", io_type="io_parallel", plan=plan)
    x = random_images(rows, shape, seed=1)
    emu = Emulator(intmodel)
    q = emu.quantize_input(x)
    with CsimBackend(build.lib_path, build.meta) as csim:
        chain = {"intmodel": intmodel, "q": q, "emulator": emu.run(q), "csim": csim.run(q, None),
                 "csim_planes1": csim.run(q, 1), "emulator_planes1": Emulator(intmodel, planes=1).run(q),
                 "torch": torch_forward(model, x), "forward": emu.forward(x)}
    _chains[name, flat] = chain
    return chain


def rows_differing(a: np.ndarray, b: np.ndarray) -> list[int]:
    n = len(a)
    return np.flatnonzero(~(a.reshape(n, -1) == b.reshape(n, -1)).all(axis=1)).tolist()


def check_chain(chain: dict) -> None:
    assert rows_differing(chain["csim"], chain["emulator"]) == []
    assert rows_differing(chain["csim_planes1"], chain["emulator_planes1"]) == []
    mine, ref = chain["forward"], chain["torch"]
    assert mine.shape == ref.shape
    # the output affine (TensorNorm) runs in float64 on the host, the reference in float32: the
    # lowering states the bound per output (IntModel.output_bound, docs/datapath.md)
    worst = np.abs(mine - ref) - chain["intmodel"].output_bound()
    assert worst.max() <= 0, f"emulator vs Brevitas beyond the documented bound by {worst.max():.3g}"
    assert np.flatnonzero(mine.argmax(axis=1) != ref.argmax(axis=1)).tolist() == []
    # the integer model is what the emulator ran: its real outputs are the forward's
    assert np.array_equal(chain["intmodel"].to_real(chain["emulator"]).reshape(mine.shape), mine)


@pytest.mark.parametrize("name", ["tfc_2w2a", "sfc_2w2a"])
def test_2w2a_csim_equals_emulator_and_brevitas(name, tmp_path_factory):
    chain = run_chain(name, tmp_path_factory.mktemp(name))
    check_chain(chain)
    # thresholds, not a power-of-two requantization, carry BatchNorm
    assert any(layer.op == "threshold" for layer in chain["intmodel"].layers)


@pytest.mark.parametrize("name", ["tfc_1w1a", "tfc_1w2a"])
def test_1bit_nets_are_exact_or_the_refusal_says_what_to_change(name, tmp_path_factory):
    """1W2A: bipolar weights are 2-bit weights {-1, +1}, exact. 1W1A: its 1-bit input quantizer
    is refused in one line naming the node and what to use instead, before any C++."""
    from flipq.hls.verify import is_flipq_refusal

    folder = tmp_path_factory.mktemp(name)
    if name == "tfc_1w1a":
        with pytest.raises(ValueError) as info:
            run_chain(name, folder)
        message = str(info.value)
        assert is_flipq_refusal(info.value) and re.match(r"node '[^']+' \(op type BipolarQuant\)", message)
        assert "1-bit (bipolar) input quantizer" in message and "use an input quantizer of 2 or more bits" in message
        assert not list(folder.rglob("*.cpp"))
        return
    chain = run_chain(name, folder)
    check_chain(chain)
    assert any(layer.op == "threshold" for layer in chain["intmodel"].layers)


def test_tfc_2w2a_on_finn_s_own_4d_input(tmp_path_factory):
    """FINN's FC flattens its (1, 28, 28) input before 2*x - 1 and the input quantizer: the flatten
    moves behind them (flipq.hls.input_reshape), then folds into the first layer's rows."""
    check_chain(run_chain("tfc_2w2a", tmp_path_factory.mktemp("tfc4d"), flat=False))


@pytest.mark.parametrize("name", ["cnv_1w1a", "cnv_1w2a"])
def test_cnv_1bit_nets_are_exact(name, tmp_path_factory):
    """FINN's CNV-W1A1 (the network FINN runs at about 3,000 images/s on the PYNQ-Z2) and
    CNV-W1A2 as brevitas_examples ships them: bipolar weights as 2-bit {-1, +1}, bipolar
    activations as thresholds onto {-1, +1}; the channels-last conversion moves its layout
    changes through BipolarQuant as through a Quant. C-sim = emulator on every row (and at
    planes=1), emulator = Brevitas within the output affine's bound, argmax equal."""
    chain = run_chain(name, tmp_path_factory.mktemp(name), rows=8)  # CNV's C-sim: a few rows a second
    check_chain(chain)
    assert any(layer.op == "threshold" for layer in chain["intmodel"].layers)
