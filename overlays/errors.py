"""What the overlay flow raises: bad input is a ValueError (the CLI exits 2), a failed or
impossible build a RuntimeError (exit 1). Every message is one line first, naming the file,
field or value and what to do."""

from __future__ import annotations


class OverlayInputError(ValueError):
    """A bad argument, file or field: an hls folder, report, option or board that cannot be used."""


class OverlayError(RuntimeError):
    """The overlay cannot be built or checked as asked; the message says why, with the numbers."""


class ResourceError(OverlayError):
    """The design does not fit the board."""


class ToolNotFoundError(OverlayError):
    """Vitis HLS (2020.2 or newer) or Vivado is not on PATH."""


class OverlayCheckError(OverlayError):
    """The .hwh and accel.json disagree; ``problems`` lists each mismatch by field."""

    def __init__(self, problems: list[str], where):
        super().__init__(f"{where}: the .hwh does not match accel.json:\n  - " + "\n  - ".join(problems))
        self.problems = problems


__all__ = ["OverlayCheckError", "OverlayError", "OverlayInputError", "ResourceError", "ToolNotFoundError"]
