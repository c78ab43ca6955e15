"""Layer names from files: the one pattern every contract checks where a name enters.

A layer name travels from a file someone else wrote (an ONNX model's ``flipq.bitplan``
metadata, ``plan.toml``, ``intmodel.json``, ``csim.json``, ``accel.json``) into generated C++
(comments, identifiers' neighbours), Tcl, JSON and error messages. A name with a newline ends a
C++ ``//`` comment and the next line compiles; a ``$``, ``[`` or ``"`` is Tcl substitution.
So every contract that reads a name refuses one outside :data:`LAYER_NAME` before anything
else sees it. Standard library only: the board reads these files too.

The pattern admits what real models carry: flipq's own names (``conv1``), QONNX's after
cleanup (``Conv_0``), torch's node names (``/features/conv/Conv``) and tensor-like names
(``onnx::Conv_12``); never whitespace, quotes, a backslash, ``*``, ``$``, brackets or braces,
``;``, ``#``, a backtick, or ``..`` (so a name used as a path part cannot climb out).

>>> check_layer_name("onnx::Conv_12", "plan.toml", "layers")
'onnx::Conv_12'
>>> try:
...     check_layer_name('fc1\\nstatic int x = system("id");', "model.onnx", "flipq.bitplan")
... except UnsafeNameError as e:
...     print(e)                                                  # doctest: +ELLIPSIS
model.onnx: field 'flipq.bitplan' holds the layer name 'fc1\\nstatic int x = system("id");', ...
"""

from __future__ import annotations

import re

LAYER_NAME = re.compile(r"[A-Za-z_/][A-Za-z0-9_.:/-]{0,127}")
_RULE = "letters, digits and _ . : / - (128 at most, not starting with a digit, '.' or '-', no '..')"


class UnsafeNameError(ValueError):
    """A layer name outside :data:`LAYER_NAME`; the message names the file, field and name."""


def is_layer_name(name) -> bool:
    return isinstance(name, str) and LAYER_NAME.fullmatch(name) is not None and ".." not in name


def check_layer_name(name, source: str, field: str) -> str:
    """Return ``name`` if it matches :data:`LAYER_NAME`, else raise :class:`UnsafeNameError`
    naming ``source`` (the file) and ``field``; the name is shown as ``repr`` so a newline or
    quote in it cannot break the one-line error."""
    if not is_layer_name(name):
        raise UnsafeNameError(f"{source}: field '{field}' holds the layer name {name!r}, which is not a "
                              f"layer name ({_RULE}); rename the layer")
    return name


def check_layer_names(names, source: str, field: str) -> list[str]:
    return [check_layer_name(n, source, field) for n in names]


__all__ = ["LAYER_NAME", "UnsafeNameError", "check_layer_name", "check_layer_names", "is_layer_name"]
