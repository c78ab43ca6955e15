"""flipq.host: the board side (numpy, and pynq on the board, only).

``Accelerator`` runs an integer model on the board, the C simulation or the emulator.
"""

from flipq.host.accelerator import Accelerator, AcceleratorInputError
from flipq.host.bitplan import BitPlan, BitPlanError, LayerBits
from flipq.host.emulator import Emulator
from flipq.host.intmodel import IntModel

__all__ = ["Accelerator", "AcceleratorInputError", "BitPlan", "BitPlanError", "Emulator", "IntModel",
           "LayerBits"]
