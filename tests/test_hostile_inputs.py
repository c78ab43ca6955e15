"""Files from someone else are data, never code (issue 21): a hostile or tampered model,
checkpoint or build folder cannot run anything, and every odd input gets one line naming the
file, field or node, with exit status 2 (bad input) or 1 (a failed run), never a traceback.

Each case is the probe's, rerun the way a user meets it: through the contract that reads the
file, or through ``flipq.cli.main`` where the command line is what answers. Nothing here
compiles a model: every refusal comes before any C++ is generated.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flipq import cli
from flipq.host import Accelerator
from flipq.host.accelmeta import AccelMeta, AccelMetaError
from flipq.host.bitplan import BitPlan, LayerBits
from flipq.host.intmodel import IntModel
from flipq.host.names import UnsafeNameError, check_layer_name

# Each would end a C++ // comment, close a /* */ one, substitute in Tcl, quote out of a string
# or climb out of a folder if a name reached a generator unchecked.
BAD_NAMES = ["fc1\nstatic int x = system(\"id\");", 'fc"1', "fc1*/", "fc$1", "fc[1]", "fc\\1", "fc{1}",
             "fc1;", "fc#1", "fc`1`", "fc 1", "../fc1", "a/../../b", "", "1fc", "x" * 129, None, 3]
GOOD_NAMES = ["conv1", "Conv_0", "onnx::Conv_12", "/features/conv/Conv", "MatMul_0", "fc-2.a"]


def _run(argv, capsys) -> tuple[int, str]:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip()


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def hls_folder(tiny_chain, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "hls"
    tiny_chain.intmodel.save(folder)
    return folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "hls"
    shutil.copytree(folder, dst)
    return dst


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    data = edit(data) or data
    path.write_text(json.dumps(data))


def _onnx_variant(tiny_chain, tmp_path, edit, name="variant.onnx") -> Path:
    import onnx

    proto = onnx.load(str(tiny_chain.onnx_path))
    edit(proto)
    path = tmp_path / name
    onnx.save(proto, str(path))
    return path


# -- 1. code execution: names ------------------------------------------------------------------
@pytest.mark.parametrize("name", GOOD_NAMES)
def test_real_onnx_and_flipq_names_pass(name):
    assert check_layer_name(name, "plan.toml", "layers") == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_every_contract_refuses_a_name_generators_could_not_embed(name, tiny_chain):
    """The contracts every generator reads (BitPlan: C++ parameters, bridges; IntModel: the
    kernels' config and comments; accel.json: the Tcl and the host) refuse the name by repr."""
    with pytest.raises(UnsafeNameError, match=r"field 'layers' holds the layer name .* which is not a layer name"):
        BitPlan.from_dict({"layers": {name: {"weight_bits": 4, "act_bits": 4}}}, source="plan.toml")
    with pytest.raises(UnsafeNameError):
        BitPlan((LayerBits(name, 4, 4),))
    model = copy.deepcopy(tiny_chain.intmodel)
    model.layers[0].name = name
    with pytest.raises(UnsafeNameError):
        IntModel(model.input_shape, model.input_quant, model.layers, model.output_exp)


def test_hostile_onnx_metadata_name_is_refused_before_any_cxx(tiny_chain, tmp_path, capsys):
    marker = tmp_path / "PWNED"

    def poison(proto):
        for entry in proto.metadata_props:
            if entry.key == "flipq.bitplan":
                name = tiny_chain.plan.names[0]
                entry.value = entry.value.replace(
                    f"[layers.{name}]", f'[layers."{name}\\nstatic int x = system(\\"touch {marker}\\");"]')

    path = _onnx_variant(tiny_chain, tmp_path, poison)
    code, err = _run(["verify", str(path), "--rows", "2", "--no-rtl"], capsys)
    line = _one_line(err)
    assert code == 2 and "metadata 'flipq.bitplan': field 'layers' holds the layer name" in line
    assert "\\nstatic int x" in line and not marker.exists()


def test_hostile_names_in_build_files_are_refused(hls_folder, tmp_path):
    hls = _copy(hls_folder, tmp_path)
    _edit_json(hls / "intmodel.json", lambda d: d["layers"][0].update(name="conv1\n#include </etc/passwd>"))
    with pytest.raises(UnsafeNameError, match=r"intmodel.json: field 'layers\[0\].name' holds the layer name"):
        IntModel.load(hls)
    plan = tmp_path / "plan.toml"
    plan.write_text('[layers."fc1 $x"]\nweight_bits = 4\nact_bits = 4\n')
    with pytest.raises(UnsafeNameError, match=r"plan.toml: field 'layers' holds the layer name 'fc1 \$x'"):
        BitPlan.load(plan)


def _accel_dict(model) -> dict:
    from flipq.boards import load_board
    from flipq.overlays.metadata import accel_meta_for

    return accel_meta_for(model, load_board("pynq-z2"), max_batch=16).to_dict()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["plan"]["layers"].update({"x]; exec": {}}), r"field 'plan.layers' holds the layer name 'x\]; exec'"),
    (lambda d: d["ip"].update(name="flipq accel"), r"field 'ip.name' holds the layer name 'flipq accel'"),
    (lambda d: d["ip"]["control"].update(n_samples=d["ip"]["planes_offset"]),
     r"fields 'ip.control.n_samples' and 'ip.planes_offset' share the register offset 0x10"),
    (lambda d: d["ip"].update(planes_offset=0x1000), r"field 'ip.planes_offset' = 0x1000 is outside the IP's register map"),
    (lambda d: d["ip"]["control"].update(n_samples=0x40), r"field 'ip.control.n_samples' = 0x40 is outside"),
])
def test_accel_json_names_and_register_map(tiny_chain, edit, message):
    d = _accel_dict(tiny_chain.intmodel)
    if d.get("plan") is None:
        d["plan"] = {"layers": {}}
    edit(d)
    with pytest.raises(AccelMetaError, match=message):
        AccelMeta.from_dict(d, "accel.json")


# -- 1b. checkpoints ------------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_checkpoint_runs_nothing_and_flipqs_own_loads(tiny_chain, tmp_path):
    import torch

    from flipq.quant.train import load_checkpoint, save_checkpoint

    marker = tmp_path / "PWNED"
    evil = tmp_path / "checkpoint.pt"
    torch.save({"model": _Evil(marker), "epoch": 0}, evil)
    with pytest.raises(ValueError, match=r"checkpoint.pt: refused, the checkpoint holds more than tensors and "
                                         r"plain data \(.*posix.system.*\); flipq loads only what it writes"):
        load_checkpoint(evil)
    assert not marker.exists()
    ours = tmp_path / "ours.pt"
    save_checkpoint(ours, {"model": tiny_chain.model.state_dict(), "epoch": 3, "history": {"loss": [0.5]},
                           "torch_rng": torch.get_rng_state(), "config": {"lr": 0.01}})
    assert load_checkpoint(ours)["epoch"] == 3


# -- 1c. native code: csim.json --------------------------------------------------------------------
def _csim_meta(model, **changes) -> dict:
    return {"abi": 2, "input_shape": list(model.input_shape), "output_shape": list(model.output_shape()),
            "max_planes": 8, "model_hash": model.digest(), "layers": [], **changes}


def _library_with_constructor(path: Path, marker: Path) -> None:
    src = path.with_suffix(".c")
    src.write_text(f'#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                   f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(path), str(src)], check=True, capture_output=True)


@pytest.mark.parametrize("library, message", [
    ("/usr/lib/x86_64-linux-gnu/libc.so.6", r"field 'library' = '/usr/lib.*' must be a relative path inside"),
    ("../../evil.so", r"field 'library' = '../../evil.so' resolves outside"),
    ("link.so", r"field 'library' = 'link.so' resolves outside"),
])
def test_csim_library_is_confined_to_the_build_folder(hls_folder, tmp_path, tiny_chain, library, message, capsys):
    hls = _copy(hls_folder, tmp_path)
    marker = tmp_path / "PWNED"
    outside = tmp_path / "evil.so"
    _library_with_constructor(outside, marker)
    (hls / "link.so").symlink_to(outside)
    (hls / "csim.json").write_text(json.dumps({"library": library, "meta": _csim_meta(tiny_chain.intmodel)}))
    code, err = _run(["run", "--overlay", str(hls), "--input", str(_inputs(tmp_path, tiny_chain))], capsys)
    assert code == 2 and "csim.json" in _one_line(err)
    with pytest.raises(ValueError, match=message):
        Accelerator.load(hls, backend="csim")
    assert not marker.exists()


def _inputs(tmp_path, tiny_chain) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, tiny_chain.x[:2])
    return path


@pytest.mark.parametrize("meta_edit, message", [
    (lambda m: [], r"field 'meta' = list, expected an object"),
    (lambda m: dict(m, max_planes="x"), r"field 'meta.max_planes' = 'x' is not an int in 1..8"),
    (lambda m: dict(m, max_planes=2), r"field 'meta.max_planes' = 2 is below the integer model's"),
    (lambda m: dict(m, input_shape=[8, 8, 2]), r"field 'meta.input_shape' = \[8, 8, 2\] disagrees"),
    (lambda m: dict(m, model_hash="f" * 64), r"the C-sim library was built for model ffffffffffffffff"),
    (lambda m: dict(m, layers=[{"name": "fc1\n}"}]), r"field 'meta.layers\[0\].name' holds the layer name"),
])
def test_csim_json_is_checked_before_its_library_loads(hls_folder, tmp_path, tiny_chain, meta_edit, message):
    hls = _copy(hls_folder, tmp_path)
    marker = tmp_path / "PWNED"
    _library_with_constructor(hls / "lib.so", marker)
    (hls / "csim.json").write_text(json.dumps({"library": "lib.so", "meta": meta_edit(_csim_meta(tiny_chain.intmodel))}))
    with pytest.raises(ValueError, match=message):
        Accelerator.load(hls, backend="csim")
    assert not marker.exists()


def test_a_library_without_flipqs_symbols_is_one_line(hls_folder, tmp_path, tiny_chain):
    from flipq.host.csim import CsimError

    hls = _copy(hls_folder, tmp_path)
    _library_with_constructor(hls / "lib.so", tmp_path / "ran")
    (hls / "csim.json").write_text(json.dumps({"library": "lib.so", "meta": _csim_meta(tiny_chain.intmodel)}))
    with pytest.raises(CsimError, match=r"lib.so: not a flipq C-sim library \(no flipq_abi_version\)"):
        Accelerator.load(hls, backend="csim")


# -- 1d. paths copied out of the folder -------------------------------------------------------------
@pytest.mark.parametrize("source, message", [
    ("/etc/passwd", "must be a relative path inside"),
    ("../../outside.cpp", "resolves outside"),
])
def test_hls_report_sources_stay_in_the_folder(tmp_path, source, message):
    from flipq.overlays.errors import OverlayInputError
    from flipq.overlays.sources import listed_sources

    hls = tmp_path / "hls"
    (hls / "prj" / "firmware").mkdir(parents=True)
    (hls / "prj" / "firmware" / "myproject.cpp").write_text("")
    assert listed_sources(hls, ["prj/firmware/myproject.cpp"], "hls_report.json") == \
        [(hls / "prj" / "firmware" / "myproject.cpp").resolve()]
    with pytest.raises(OverlayInputError, match=rf"hls_report.json: field 'sources\[0\]' = .* {message}"):
        listed_sources(hls, [source], "hls_report.json")


def _pareto(out: Path, points: list, layers=("conv1",)) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "pareto.json").write_text(json.dumps({"pareto": points, "layers": list(layers), "arch": "digits-cnn",
                                                 "config": {"board": "pynq-z2", "io_type": "io_stream",
                                                            "group_size": 0}}))


@pytest.mark.parametrize("key, message", [
    ("/etc/model", r"cache_key' = '/etc/model' is not a cache key"),
    ("../../x", r"cache_key' = '../../x' is not a cache key"),
])
def test_pick_copies_only_from_its_own_cache(tmp_path, key, message, capsys):
    _pareto(tmp_path / "s", [{"cache_key": key, "genome": [4, 4, 0], "simd": {}, "pe": {}}])
    code, err = _run(["search", "--out", str(tmp_path / "s"), "--pick", "0"], capsys)
    assert code == 2 and _one_line(err).startswith("flipq: error:")
    assert message.replace("\\", "") in err.replace("\\", "")


def test_pick_on_an_empty_front_says_so(tmp_path, capsys):
    _pareto(tmp_path / "s", [])
    code, err = _run(["search", "--out", str(tmp_path / "s"), "--pick", "0"], capsys)
    assert code == 2 and "the front in" in _one_line(err) and "is empty" in err


# -- 2. silently wrong ---------------------------------------------------------------------------
def test_intmodel_without_digest_is_refused_and_restamped(hls_folder, tmp_path):
    hls = _copy(hls_folder, tmp_path)
    _edit_json(hls / "intmodel.json", lambda d: d.pop("digest") and None)
    with pytest.raises(ValueError, match=r"intmodel.json: field 'digest' is missing.*--restamp"):
        IntModel.load(hls)
    r = subprocess.run([sys.executable, "-m", "flipq.host.intmodel", "--restamp", str(hls)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert IntModel.load(hls).digest() in r.stdout


def test_plan_naming_a_layer_the_model_lacks_is_an_error(tiny_chain, tmp_path):
    from flipq.hls.stage import _lower
    from flipq.pipeline import BuildConfig

    shutil.copy(tiny_chain.onnx_path, tmp_path / "model.onnx")
    names = tiny_chain.plan.names
    renamed = BitPlan(tuple(LayerBits("convX" if lb.name == names[0] else lb.name, lb.weight_bits, lb.act_bits)
                            for lb in tiny_chain.plan))
    renamed.save(tmp_path / "plan.toml")
    with pytest.raises(ValueError, match=rf"plan.toml: plan names layer 'convX', which the model does not have"):
        _lower(BuildConfig(out=str(tmp_path)), None)


def test_weight_bits_as_a_string_is_one_line(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text('[layers.fc1]\nweight_bits = "4"\nact_bits = 4\n')
    with pytest.raises(ValueError, match=r"layer 'fc1': weight_bits='4' is outside 2..8"):
        BitPlan.load(plan)


@pytest.mark.parametrize("make, message", [
    (lambda p: np.save(p, np.zeros((2, 1, 8, 8), np.complex64)), "dtype complex64 is not real numbers"),
    (lambda p: p.write_bytes(b""), "an empty file"),
    (lambda p: np.savez(p, x=np.zeros(3)), "a .npz archive"),
    (lambda p: p.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "
                             b"'shape': (1000000000, 1, 8, 8), }" + b" " * 49 + b"\n"),
     r"shape \(1000000000, 1, 8, 8\) \(256,000,000,000 bytes\) but the file holds"),
])
def test_verify_input_that_is_not_a_real_array(tiny_chain, tmp_path, make, message, capsys):
    bad = tmp_path / "x.npy"
    make(bad)
    if not bad.exists():  # np.savez appends .npz
        bad = tmp_path / "x.npy.npz"
    code, err = _run(["verify", str(tiny_chain.onnx_path), "--input", str(bad), "--no-rtl"], capsys)
    assert code == 2 and message.replace("\\", "") in _one_line(err).replace("\\", "")


def _build_folder(tmp_path, config: object) -> Path:
    out = tmp_path / "build"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_negative_check_rows_and_a_list_as_config_are_refused(tmp_path, capsys):
    out = _build_folder(tmp_path, {"check_rows": -5})
    code, err = _run(["emulate", "--out", str(out)], capsys)
    assert code == 2 and "config.json: field 'check_rows' = -5 must be an int >= 0" in _one_line(err)
    (out / "config.json").write_text("[1, 2]")
    code, err = _run(["report", "--out", str(out)], capsys)
    assert code == 2 and "config.json: corrupt build config (a JSON list, expected an object)" in _one_line(err)


def test_report_after_hls_with_other_check_rows_names_the_file(tmp_path, capsys):
    out = _build_folder(tmp_path, {"check_rows": 500})
    np.savez(out / "data.npz", x_test=np.zeros((450, 1, 8, 8), np.float32), y_test=np.zeros(450, np.int64))
    (out / "outputs").mkdir()
    np.save(out / "outputs" / "csim.npy", np.zeros((16, 10)))
    np.save(out / "outputs" / "emulator.npy", np.zeros((450, 10)))
    code, err = _run(["report", "--out", str(out)], capsys)
    assert code == 2 and "outputs/csim.npy holds 16 rows, the check split 450" in _one_line(err)


# -- 3. model files: one line naming the file and node ---------------------------------------------
def _set_opset(version):
    def edit(proto):
        for op in proto.opset_import:
            if op.domain in ("", "ai.onnx"):
                op.version = version
    return edit


def _drop_kernel_shape(proto):
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    for a in list(conv.attribute):
        if a.name == "kernel_shape":
            conv.attribute.remove(a)


def _absurd_input(proto):
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[-1].dim_value = dims[-2].dim_value = 100_000


@pytest.mark.parametrize("edit, message", [
    (_drop_kernel_shape, r"node '.*' \(Conv\) has no kernel_shape attribute"),
    (lambda p: p.graph.output.append(copy.deepcopy(p.graph.output[0])), r"the graph has 2 outputs"),
    (_set_opset(6), r"opset_import ai.onnx version 6 is outside 7\.\."),
    (_set_opset(99), r"opset_import ai.onnx version 99 is outside 7\.\."),
    (_absurd_input, r"input '.*' has 10,000,000,000 values per sample"),
])
def test_odd_models_are_one_line(tiny_chain, tmp_path, edit, message, capsys):
    from flipq.hls.prepare import load_qonnx

    path = _onnx_variant(tiny_chain, tmp_path, edit)
    with pytest.raises(ValueError, match=rf"variant.onnx: {message}"):
        load_qonnx(path)
    code, err = _run(["verify", str(path), "--rows", "2", "--no-rtl"], capsys)
    assert code == 2 and "variant.onnx" in _one_line(err)


def test_a_dynamic_batch_dimension_is_accepted(tiny_chain, tmp_path):
    from flipq.hls.lower import lower_qonnx
    from flipq.hls.prepare import load_qonnx, prepare_qonnx
    from flipq.quant.export import plan_from_onnx

    def dynamic(proto):
        for vi in (proto.graph.input[0], proto.graph.output[0]):
            vi.type.tensor_type.shape.dim[0].dim_param = "N"

    raw = load_qonnx(_onnx_variant(tiny_chain, tmp_path, dynamic))
    assert raw.get_tensor_shape(raw.graph.input[0].name)[0] == 1
    lowered = lower_qonnx(prepare_qonnx(raw), plan_from_onnx(raw))
    assert lowered.digest() == tiny_chain.intmodel.digest()


def test_bench_batch_beyond_memory_is_refused_before_allocating(hls_folder, capsys):
    code, err = _run(["bench", "--overlay", str(hls_folder), "--backend", "emulator", "--batch", "1000000000"], capsys)
    assert code == 2 and "--batch 1000000000:" in _one_line(err) and "bytes of inputs" in err


def test_unreachable_ray_address_fails_fast_naming_it():
    from flipq.quant.searchengine import RayUnreachableError, check_ray_address

    t0 = time.perf_counter()
    with pytest.raises(RayUnreachableError, match=r"--ray-address 127.0.0.1:1: no Ray cluster answers there"):
        check_ray_address("127.0.0.1:1")
    assert time.perf_counter() - t0 < 30
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        check_ray_address("nowhere")


# -- 4. concurrency ------------------------------------------------------------------------------
def test_a_second_hls_in_the_same_folder_is_refused_naming_the_holder(tmp_path, capsys):
    from flipq.host.files import folder_lock

    out = _build_folder(tmp_path, {})
    with folder_lock(out, "flipq hls"):
        code, err = _run(["hls", "--out", str(out)], capsys)
    assert code == 2 and f"another `flipq hls` (pid {os.getpid()}) is working in this folder" in _one_line(err)
    with folder_lock(out, "flipq hls"):  # released: the next one gets it
        pass


def test_sigterm_removes_temporary_folders_as_ctrl_c_does(tmp_path):
    script = f"""
import sys, tempfile, time
from flipq import cli
def work(args):
    with tempfile.TemporaryDirectory(dir={str(tmp_path)!r}) as tmp:
        print(tmp, flush=True)
        time.sleep(60)
cli._dispatch = work
sys.exit(cli.main(["emulate", "--out", {str(tmp_path / 'b')!r}]))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.is_dir()
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err
    assert not tmp.exists()


@pytest.mark.parametrize("x", [np.ones((2, 3), dtype=np.complex128), np.array([[1, 2, np.nan]]),
                               np.array([["a", "b", "c"]]), np.ones((2, 3), dtype=bool)])
def test_verify_inputs_are_finite_real_numbers(x):
    """verify_file(x=...) from Python: a complex array would pass a finiteness check and lose its
    imaginary part; strings, booleans and NaN are refused too, naming the dtype."""
    from types import SimpleNamespace

    from flipq.hls.verify import VerifyInputError, _check_inputs

    model = SimpleNamespace(input_shape=(3,), input_layout="NC", user_input_shape=lambda: (3,))
    with pytest.raises(VerifyInputError, match=r"finite real numbers \(dtype "):
        _check_inputs(x, model)
    _check_inputs(np.zeros((2, 3), dtype=np.float32), model)  # real values pass
