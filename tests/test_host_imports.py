"""flipq.host runs on the board: Python 3.10, numpy and pynq only."""

import ast
import subprocess
import sys
from pathlib import Path

import flipq

ROOT = Path(flipq.__file__).parent
BOARD_SIDE = sorted((ROOT / "host").glob("*.py")) + [ROOT / "__init__.py"]
FORBIDDEN = ("torch", "brevitas", "hls4ml", "qonnx", "onnx", "onnxruntime", "sklearn", "scipy",
             "tomllib", "tqdm", "matplotlib", "flipq.quant", "flipq.hls")


def test_host_imports_with_numpy_alone():
    blocker = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in {FORBIDDEN!r} or name.split('.')[0] in {FORBIDDEN!r} or any(name.startswith(f + '.') for f in {FORBIDDEN!r}):
            raise ImportError('board-side code imported ' + name)
sys.meta_path.insert(0, Block())
import flipq.host, flipq.host.emulator, flipq.host.intmodel, flipq.host.bitplan, flipq.host.groups
import pkgutil
for m in pkgutil.iter_modules(flipq.host.__path__):
    if m.name != 'pynq_sim':  # the simulated device is an x86 test aid
        __import__('flipq.host.' + m.name)
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


def test_board_side_parses_as_python_3_10():
    for path in BOARD_SIDE:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
