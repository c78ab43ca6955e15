"""flipq: flip-based mixed-precision quantization, from Brevitas training to a bit-serial
PYNQ-Z2 accelerator.

Subpackages: ``flipq.quant`` (training, export), ``flipq.hls`` (QONNX lowering, hls4ml),
``flipq.overlays`` (PYNQ overlay flow), ``flipq.host`` (numpy-only driver and emulator),
``flipq.boards`` (board data). This module imports nothing heavy, so ``import flipq.host``
works on a board with numpy alone.
"""

__version__ = "0.1.0"

from flipq.host.bitplan import BitPlan, BitPlanError, LayerBits  # noqa: E402  (stdlib only)

__all__ = ["BitPlan", "BitPlanError", "LayerBits", "__version__"]
