"""flipq.host runs on the board: Python 3.10, numpy and pynq only, and imports no build stage,
at module level or lazily inside a function."""

import ast
import subprocess
import sys
from pathlib import Path

import flipq

ROOT = Path(flipq.__file__).parent
BOARD_SIDE = sorted((ROOT / "host").glob("*.py")) + [ROOT / "__init__.py"]
HEAVY = ("torch", "brevitas", "hls4ml", "qonnx", "onnx", "onnxruntime", "sklearn", "scipy", "tqdm",
         "matplotlib")
BUILD_STAGES = ("flipq.quant", "flipq.hls", "flipq.overlays", "flipq.pipeline", "flipq.cli", "flipq.boards")
# tomllib/tomli: BitPlan.load reads TOML on the build machine; the board reads accel.json's JSON.
ALLOWED_LAZY = {"tomllib", "tomli"}


def _imports(path: Path):
    """Every module an import statement in ``path`` names, wherever the statement sits."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # `from flipq import quant` names flipq.quant
                yield node.lineno, f"{node.module}.{alias.name}"


def _forbidden(name: str) -> bool:
    top = name.split(".")[0]
    return top in HEAVY or any(name == s or name.startswith(s + ".") for s in BUILD_STAGES)


def test_no_board_side_file_imports_the_build_even_lazily():
    found = [f"{path.relative_to(ROOT)}:{line}: {name}" for path in BOARD_SIDE
             for line, name in _imports(path) if _forbidden(name) and name.split(".")[0] not in ALLOWED_LAZY]
    assert not found, found


def test_the_guard_sees_lazy_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from flipq.overlays import pynq_sim\n    import torch\n")
    assert [n for _, n in _imports(probe) if _forbidden(n)] == ["flipq.overlays", "flipq.overlays.pynq_sim",
                                                                 "torch"]


def test_host_imports_with_numpy_alone():
    blocker = f"""
import sys, importlib.abc
BLOCK = {HEAVY + BUILD_STAGES + ('tomllib',)!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + '.') for b in BLOCK):
            raise ImportError('board-side code imported ' + name)
sys.meta_path.insert(0, Block())
import pkgutil
import flipq.host
for m in pkgutil.iter_modules(flipq.host.__path__):
    __import__('flipq.host.' + m.name)
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


def test_board_side_parses_as_python_3_10():
    for path in BOARD_SIDE:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
