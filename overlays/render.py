"""Templates with ``@name@`` placeholders (Tcl's own ``$`` and braces stay untouched), and the
quoting that keeps a value one Tcl word whatever it holds.

>>> render_text("open_project @project@", {"project": "flipq_hls"})
'open_project flipq_hls'
>>> tcl_word("my folder/a.cpp")
'{my folder/a.cpp}'
"""

from __future__ import annotations

import re
from pathlib import Path

from flipq.overlays.errors import OverlayError, OverlayInputError

TEMPLATES = Path(__file__).resolve().parent / "templates"
_PLACEHOLDER = re.compile(r"@([a-z_][a-z0-9_]*)@")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.:/+=-]+")


def render_text(text: str, values: dict, name: str = "template") -> str:
    """Fill every ``@name@`` of ``text``; a placeholder without a value is an error."""
    missing = sorted({m for m in _PLACEHOLDER.findall(text) if m not in values})
    if missing:
        raise OverlayError(f"{name}: no value for placeholder(s) {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def render(template: str, values: dict) -> str:
    """Fill the placeholders of ``templates/<template>``."""
    return render_text((TEMPLATES / template).read_text(), values, f"template {template}")


def tcl_word(value: str, what: str = "value") -> str:
    """``value`` as one literal Tcl word: bare when it is plain, else in braces, which keep spaces,
    ``$`` and ``[`` literal. Braces, backslashes and line breaks inside cannot be braced safely
    and are refused, naming ``what``."""
    value = str(value)
    if _PLAIN_WORD.fullmatch(value):
        return value
    if re.search(r"[{}\\\n\r]", value) or not value:
        raise OverlayInputError(f"{what} = {value!r}: braces, backslashes, line breaks or an empty "
                                "string cannot be written into the Tcl; use a plainer name or path")
    return "{" + value + "}"


def tcl_here_path(relative: str | Path, what: str = "path") -> str:
    """A Tcl expression for ``relative`` (a path inside the overlay folder) resolved against the
    running script's folder ``$here``, so the folder can move: ``[file join $here src {a b.cpp}]``."""
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts:
        raise OverlayError(f"{what} {relative}: not a path inside the overlay folder")
    return "[file join $here " + " ".join(tcl_word(p, what) for p in parts) + "]"


__all__ = ["TEMPLATES", "render", "render_text", "tcl_here_path", "tcl_word"]
