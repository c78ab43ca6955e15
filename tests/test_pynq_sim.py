"""PynqBackend through the unmodified pynq 3.x driver code against the simulated device."""

import json
import time

import numpy as np
import pytest

pynq = pytest.importorskip("pynq")

from flipq.boards import load_board  # noqa: E402
from flipq.overlays import pynq_sim  # noqa: E402
from flipq.host.accelmeta import AccelMeta, AccelMetaError  # noqa: E402
from flipq.host.bitplan import BitPlan  # noqa: E402
from flipq.host.emulator import Emulator  # noqa: E402
from flipq.host.intmodel import IntLayer, IntModel, QuantSpec  # noqa: E402
from flipq.host.pynq_backend import (AcceleratorTimeout, DmaError, PynqBackend,  # noqa: E402
                                     PynqBackendError)
from flipq.overlays.hwh import generate_hwh  # noqa: E402
from flipq.overlays.metadata import accel_meta_for  # noqa: E402


def tiny_intmodel(seed: int = 0, n_in: int = 12, n_hidden: int = 10, n_out: int = 5) -> IntModel:
    rng = np.random.default_rng(seed)
    layers = [
        IntLayer("dense", "fc1", {"out_shape": [n_hidden], "w_exp": -3, "weight_bits": 4, "act_bits": 4},
                 rng.integers(-8, 8, (n_in, n_hidden)), rng.integers(-20, 20, n_hidden)),
        IntLayer("requant", "q1", {"out_shape": [n_hidden], "relu": True,
                                   "quant": QuantSpec(4, False, False, -2).to_dict()}),
        IntLayer("dense", "fc2", {"out_shape": [n_out], "w_exp": -3, "weight_bits": 4, "act_bits": 4},
                 rng.integers(-8, 8, (n_hidden, n_out))),
    ]
    return IntModel((n_in,), QuantSpec(4, True, False, -2), layers, output_exp=-5,
                    plan=BitPlan.uniform(["fc1", "fc2"], 4, 4), input_layout="NC")


def reference(model):
    def run(q, planes):
        emu = Emulator(model)
        emu.set_planes(planes)
        return emu.run(q)
    return run


def write_overlay(folder, model, max_batch=16):
    board = load_board("pynq-z2")
    meta = accel_meta_for(model, board, max_batch=max_batch)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flipq.hwh").write_text(generate_hwh(meta, board))
    (folder / "flipq.bit").write_bytes(b"simulated: content not read")
    meta.save(folder / "accel.json")
    return meta


@pytest.fixture
def sim(monkeypatch):
    monkeypatch.setenv(pynq_sim.SIM_ENV, "1")
    yield pynq_sim.activate()
    pynq_sim.deactivate()


@pytest.fixture
def setup(sim, tmp_path):
    model = tiny_intmodel()
    meta = write_overlay(tmp_path / "overlay", model, max_batch=16)
    sim.compute = pynq_sim.compute_from_int(reference(model), meta)
    backend = PynqBackend(tmp_path / "overlay", meta, timeout_s=0.3)
    yield model, meta, backend, sim
    backend.close()


def inputs(n, seed=1, shape=(12,)):
    return np.random.default_rng(seed).integers(-8, 8, (n,) + shape)


def test_equals_reference_through_pynq_dma(setup):
    model, meta, backend, sim = setup
    assert backend.name == "pynq" and backend.measured is False
    q = inputs(10)
    for planes in (4, 3, 1):
        got = backend.run(q, planes)
        assert got.dtype == np.int64 and got.shape == (10, 5)
        assert np.array_equal(got, reference(model)(q, planes))
    assert np.array_equal(backend.run(q, None), reference(model)(q, None))
    assert set(backend.last_timings) == {"pack", "transfer", "compute", "unpack"}
    assert all(v >= 0 for v in backend.last_timings.values())
    assert backend.fclk_mhz == pytest.approx(100.0)


def test_repeated_runs_reuse_buffers(setup):
    model, meta, backend, sim = setup
    bufs = (backend._in_buf.physical_address, backend._out_buf.physical_address)
    for seed in range(5):
        q = inputs(7, seed)
        assert np.array_equal(backend.run(q, 4), reference(model)(q, 4))
    assert (backend._in_buf.physical_address, backend._out_buf.physical_address) == bufs
    assert sim.compute_calls == 5


def test_batch_over_dma_limit_is_chunked(setup):
    model, meta, backend, sim = setup
    assert meta.rows_per_transfer == 16
    q = inputs(53)
    assert np.array_equal(backend.run(q, 2), reference(model)(q, 2))
    assert sim.compute_calls == 4  # 16 + 16 + 16 + 5
    assert backend.run(q[:0], 2).shape == (0, 5)


def test_hang_times_out_then_recovers(setup):
    model, meta, backend, sim = setup
    sim.fault = "hang"
    t0 = time.monotonic()
    with pytest.raises(AcceleratorTimeout, match=r"S2MM transfer did not complete within 0.3 s"):
        backend.run(inputs(4), 4)
    assert time.monotonic() - t0 < 2.0
    sim.fault = None
    downloads = sim.downloads
    q = inputs(4)
    assert np.array_equal(backend.run(q, 4), reference(model)(q, 4))
    assert sim.downloads == downloads + 1  # the PL was reloaded after the hang


@pytest.mark.parametrize("fault, channel, bit", [
    ("s2mm_slverr", "S2MM", "DMASlvErr"), ("s2mm_decerr", "S2MM", "DMADecErr"),
    ("mm2s_slverr", "MM2S", "DMASlvErr"), ("s2mm_interr", "S2MM", "DMAIntErr")])
def test_dma_error_names_the_bit(setup, fault, channel, bit):
    model, meta, backend, sim = setup
    sim.fault = fault
    with pytest.raises(DmaError, match=f"{channel} channel error: {bit}") as e:
        backend.run(inputs(3), 4)
    assert e.value.bits == (bit,) and e.value.channel == channel
    sim.fault = None
    q = inputs(3)
    assert np.array_equal(backend.run(q, 4), reference(model)(q, 4))


def test_missing_invalidate_would_show(sim, tmp_path):
    """The simulated DDR is not coherent: the DMA reads what was flushed, not the CPU view."""
    buf = pynq.allocate(shape=(8,), dtype=np.uint32)
    buf[:] = 7
    assert not sim._ddr(buf.physical_address, 32).any()
    buf.flush()
    assert sim._ddr(buf.physical_address, 32).view(np.uint32).tolist() == [7] * 8


def test_hash_mismatch_refused(sim, tmp_path):
    model = tiny_intmodel()
    write_overlay(tmp_path / "ov", model)
    other = accel_meta_for(tiny_intmodel(seed=5), load_board("pynq-z2"), max_batch=16)
    with pytest.raises(PynqBackendError) as e:
        PynqBackend(tmp_path / "ov", other)
    assert other.model_hash in str(e.value) and model.digest() in str(e.value)


def test_bad_inputs(setup):
    model, meta, backend, sim = setup
    with pytest.raises(ValueError, match=r"q_in has shape \(3, 11\), expected \(n, 12\)"):
        backend.run(np.zeros((3, 11), np.int64), 4)
    with pytest.raises(ValueError, match=r"expected \(n, 12\)"):
        backend.run(np.zeros(12, np.int64), 4)
    with pytest.raises(TypeError, match="integers"):
        backend.run(np.zeros((3, 12)), 4)
    with pytest.raises(ValueError, match="planes must be an int in 1..8"):
        backend.run(np.zeros((3, 12), np.int64), 0)
    with pytest.raises(ValueError, match="does not fit 4-bit signed"):
        backend.run(np.full((2, 12), 9), 4)


def test_missing_files_named(sim, tmp_path):
    model = tiny_intmodel()
    meta = write_overlay(tmp_path / "ov", model)
    (tmp_path / "ov" / "flipq.hwh").unlink()
    with pytest.raises(FileNotFoundError, match="flipq.hwh"):
        PynqBackend(tmp_path / "ov", meta)


def test_clocks_and_registers_via_pynq(setup):
    model, meta, backend, sim = setup
    assert pynq.Clocks.fclk0_mhz == pytest.approx(100.0)
    pynq.Clocks.fclk0_mhz = 50
    assert sim.fclk_mhz(0) == pytest.approx(50.0)
    backend.run(inputs(2), 3)
    assert sim.accel.args["planes"] == 3 and sim.accel.args["n_samples"] == 2


def test_accelmeta_json_round_trip_and_errors(tmp_path):
    meta = accel_meta_for(tiny_intmodel(), load_board("pynq-z2"))
    assert AccelMeta.from_json(meta.to_json()) == meta
    assert meta.output.acc_signed and meta.output.packing.bits >= meta.output.acc_bits
    d = json.loads(meta.to_json())
    del d["dma"]["length_width"]
    with pytest.raises(AccelMetaError, match=r"x.json: missing field 'dma.length_width'"):
        AccelMeta.from_dict(d, "x.json")
    d = json.loads(meta.to_json())
    d["input"]["quant"]["bits"] = "4"
    with pytest.raises(AccelMetaError, match=r"field 'input.quant.bits' = '4' has the wrong type"):
        AccelMeta.from_dict(d, "x.json")
    d = json.loads(meta.to_json())
    d["dma"]["max_transfer_bytes"] = 100
    with pytest.raises(AccelMetaError, match="does not match dma.length_width"):
        AccelMeta.from_dict(d, "x.json")


def test_accumulator_width_covers_every_planes_setting():
    model = tiny_intmodel()
    meta = accel_meta_for(model, load_board("pynq-z2"))
    q = np.random.default_rng(3).integers(-8, 8, (4000, 12))
    lim = 2 ** (meta.output.acc_bits - 1)
    for planes in range(1, 5):
        acc = reference(model)(q, planes)
        assert -lim <= acc.min() and acc.max() < lim


def test_eight_threads_through_the_simulated_device(sim, tmp_path):
    """One DMA pair: without serialization four threads got "DMA channel not idle" on 90 of
    120 calls. Eight threads x 50 predicts must all equal the emulator."""
    import threading

    from flipq.host import Accelerator

    model = tiny_intmodel()
    folder = tmp_path / "overlay"
    write_overlay(folder, model, max_batch=16)
    model.save(folder)
    assert pynq_sim.attach(folder) == "emulator"
    acc = Accelerator.load(folder, backend="pynq")
    x = np.random.default_rng(3).normal(size=(20, 12))
    want = Accelerator.load(folder, backend="emulator").predict(x)
    failures, done = [], []

    def worker(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(50):
                rows = rng.integers(1, 21)
                got = acc.predict(x[:rows])
                done.append(np.array_equal(got, want[:rows]))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            failures.append(repr(e))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acc.close()
    assert not failures, failures[:3]
    assert len(done) == 400 and all(done)
