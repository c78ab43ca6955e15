"""The runtime's guarantees beyond the numbers: every backend checks the model it was built
for, edited metadata is refused, concurrent callers are serialized, and memory stays bounded
on any batch size."""

import json
import threading
import tracemalloc

import numpy as np
import pytest

from flipq.host import Accelerator
from flipq.host.accelmeta import AccelMetaError
from flipq.host.intmodel import IntModel


@pytest.fixture(scope="module")
def hls_folder(tiny_chain, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtime")
    tiny_chain.intmodel.save(folder / "hls")
    return folder


def test_an_edited_intmodel_is_refused(hls_folder, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(hls_folder, copy)
    path = copy / "hls" / "intmodel.json"
    meta = json.loads(path.read_text())
    meta["output_exp"] += 3  # would rescale every output while verify (emulator vs itself) passes
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"intmodel.json: the integer model was changed after `flipq hls` wrote it"):
        Accelerator.load(copy, backend="emulator")


def test_malformed_intmodel_names_the_file(hls_folder, tmp_path):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(hls_folder, copy)
    path = copy / "hls" / "intmodel.json"
    meta = json.loads(path.read_text())
    del meta["input_quant"]
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"intmodel.json: malformed integer model \(KeyError"):
        IntModel.load(copy / "hls")


def _accel_meta(model):
    from flipq.boards import load_board
    from flipq.overlays.metadata import accel_meta_for

    return accel_meta_for(model, load_board("pynq-z2"), max_batch=16)


@pytest.mark.parametrize("field, edit, message", [
    ("max_planes", lambda d: d.update(max_planes=2), "field 'max_planes' = 2 disagrees"),
    ("input.shape", lambda d: d["input"].update(shape=[8, 8, 2]), "field 'input.shape' = \\[8, 8, 2\\] disagrees"),
    ("output.exp", lambda d: d["output"].update(exp=d["output"]["exp"] + 1), "field 'output.exp'"),
    ("model_hash", lambda d: d.update(model_hash="0" * 64), "model_hash 0000000000000000... does not match"),
])
def test_edited_accel_json_is_refused_at_load(tiny_chain, field, edit, message):
    from flipq.host.accelmeta import AccelMeta

    d = _accel_meta(tiny_chain.intmodel).to_dict()
    edit(d)
    with pytest.raises(AccelMetaError, match=message):
        AccelMeta.from_dict(d, "accel.json").check_against(tiny_chain.intmodel, "accel.json")


def test_csim_library_built_for_another_model_is_refused(tmp_path, tiny_chain):
    folder = tmp_path / "hls"
    tiny_chain.intmodel.save(folder)
    lib = folder / "lib.so"
    lib.write_bytes(b"not loaded: the hash check comes first")
    m = tiny_chain.intmodel
    meta = {"model_hash": "f" * 64, "input_shape": list(m.input_shape), "output_shape": list(m.output_shape()),
            "max_planes": 8, "layers": []}
    (folder / "csim.json").write_text(json.dumps({"library": "lib.so", "meta": meta}))
    with pytest.raises(ValueError, match=r"lib.so: the C-sim library was built for model ffffffffffffffff\.\.\."):
        Accelerator.load(folder, backend="csim")


def test_predict_chunks_in_bounded_memory(hls_folder, tiny_chain):
    """100k rows: the emulator's intermediates are bounded by its chunk, not by the batch."""
    acc = Accelerator.load(hls_folder, backend="emulator")
    acc._reference.chunk_rows = acc.backend.emulator.chunk_rows = 2048
    x = np.resize(tiny_chain.x.astype(np.float32), (100_000,) + tiny_chain.x.shape[1:])
    small = acc.predict(x[:3000])
    tracemalloc.start()
    try:
        y = acc.predict(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(y[:3000], small)
    per_row = acc.backend.emulator.bytes_per_row()
    # the output array, plus a fixed number of chunks' worth of working memory (not 100k rows of it)
    bound = y.nbytes * 2 + 8 * 2048 * per_row
    assert peak < bound, (peak, bound)
    assert 100_000 * per_row > 4 * bound  # the unchunked run would have needed far more


def test_emulator_chunking_is_exact(tiny_chain):
    from flipq.host.emulator import Emulator

    q = Emulator(tiny_chain.intmodel).quantize_input(tiny_chain.x)
    whole = Emulator(tiny_chain.intmodel).run(q)
    tiny = Emulator(tiny_chain.intmodel, chunk_bytes=1)  # one row per chunk
    assert tiny.chunk_rows == 1
    assert np.array_equal(tiny.run(q), whole)


def test_concurrent_callers_are_serialized(hls_folder, tiny_chain):
    acc = Accelerator.load(hls_folder, backend="emulator")
    want = acc.predict(tiny_chain.x)
    errors, results = [], []

    def worker():
        try:
            for _ in range(20):
                results.append(np.array_equal(acc.predict(tiny_chain.x), want))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 80 and all(results)
