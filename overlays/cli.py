"""``flipq overlay build|check``: the argparse wiring for :mod:`flipq.overlays.flow`.

The main CLI adds these with one line: ``add_overlay_commands(subparsers)``; each parsed
command carries ``func(args) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flipq.boards import known_boards


def add_overlay_commands(subparsers) -> argparse.ArgumentParser:
    overlay = subparsers.add_parser("overlay", help="build or check a PYNQ overlay")
    sub = overlay.add_subparsers(dest="overlay_command", required=True)

    b = sub.add_parser("build", help="hls folder -> Tcl, accel.json and (with Vivado) flipq.bit/.hwh")
    b.add_argument("hls_dir", type=Path, help="hls build folder (intmodel.json/.npz, hls_report.json)")
    b.add_argument("--board", default="pynq-z2", help=f"target board ({', '.join(known_boards())})")
    b.add_argument("--out", type=Path, default=None, help="overlay folder (default: <hls_dir>/../overlay)")
    b.add_argument("--dry-run", action="store_true",
                   help="write Tcl and accel.json, run no tool; exit 0 even without Vivado")
    b.add_argument("--max-batch", type=int, default=1024, help="samples per DMA transfer (sizes the DMA)")
    b.add_argument("--fclk-mhz", type=float, default=None, help="PL clock (default: the board's fclk0)")
    b.add_argument("--jobs", type=int, default=2, help="Vivado synthesis/implementation jobs")
    b.add_argument("--simulate", action="store_true",
                   help="also write a generated .hwh, a stand-in .bit and the g++-compiled wrapper, so "
                        "FLIPQ_PYNQ_SIM=1 runs the overlay through pynq on this machine")
    b.set_defaults(func=_build)

    c = sub.add_parser("check", help="check flipq.hwh against accel.json")
    c.add_argument("overlay_dir", type=Path)
    c.add_argument("--hwh", type=Path, default=None, help="a .hwh other than <overlay_dir>/flipq.hwh")
    c.set_defaults(func=_check)
    return overlay


def _build(args) -> int:
    from flipq.overlays.flow import OverlayError, build_overlay

    out = args.out or args.hls_dir.parent / "overlay"
    try:
        result = build_overlay(args.hls_dir, args.board, out, dry_run=args.dry_run,
                               max_batch=args.max_batch, fclk_mhz=args.fclk_mhz, jobs=args.jobs,
                               simulate=args.simulate)
    except (OverlayError, ValueError, FileNotFoundError) as e:
        print(f"flipq overlay build: {e}", file=sys.stderr)
        return 1
    for key, (need, have) in result.usage.items():
        if have:
            print(f"  {key:7s} {need:10.0f} / {have:<7d} ({100 * need / have:5.1f} %)")
    for line in result.ran:
        print(line)
    print(f"wrote {', '.join(p.name for p in result.files)} to {result.out_dir}")
    return result.returncode


def _check(args) -> int:
    from flipq.overlays.flow import OverlayError, check_overlay

    try:
        summary = check_overlay(args.overlay_dir, args.hwh)
    except (OverlayError, ValueError, FileNotFoundError) as e:
        print(f"flipq overlay check: {e}", file=sys.stderr)
        return 1
    print("overlay OK: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    return 0
