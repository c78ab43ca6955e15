"""``flipq overlay build|check``: the argparse wiring for :mod:`flipq.overlays.flow` and
:mod:`flipq.overlays.check`.

The main CLI adds these with one line: ``add_overlay_commands(subparsers)``; each parsed
command carries ``func(args) -> int`` (the exit status). Errors propagate to
:func:`flipq.cli.main`, which prints bad input (a ValueError, or a path that is missing, a file,
or not writable) as ``flipq: error: ...`` with exit status 2, and a build or check that fails
(a RuntimeError: tools missing, design too big, .hwh mismatch) the same way with status 1.
Option ranges fail inside argparse (exit 2 with the usage line).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flipq.boards import known_boards

def add_overlay_commands(subparsers) -> argparse.ArgumentParser:
    from flipq.quant.argtypes import positive_float, positive_int  # standard library only

    overlay = subparsers.add_parser("overlay", help="build or check a PYNQ overlay")
    sub = overlay.add_subparsers(dest="overlay_command", required=True)

    b = sub.add_parser("build", help="hls folder -> a portable overlay folder (sources, Tcl, accel.json) "
                                     "and, with Vitis HLS and Vivado (--kernel rtl: Vivado), flipq.bit/.hwh")
    b.add_argument("hls_dir", type=Path, metavar="DIR",
                   help="a build folder (its hls/ is used) or an hls folder (intmodel.json/.npz, hls_report.json)")
    b.add_argument("--board", default=None,
                   help=f"target board ({', '.join(known_boards())}); default and only choice: the board "
                        "the hls stage was checked against")
    b.add_argument("--out", type=Path, default=None, help="overlay folder (default: <hls_dir>/../overlay)")
    b.add_argument("--dry-run", action="store_true",
                   help="write the folder, run no tool; exit 0 even without Vitis HLS/Vivado")
    b.add_argument("--max-batch", type=positive_int, default=1024,
                   help="samples per DMA transfer (sizes the DMA; at most what its length register carries)")
    b.add_argument("--fclk-mhz", type=positive_float, default=None,
                   help="PL clock (default: the board's fclk0); rounded to the nearest the PS generates")
    b.add_argument("--jobs", type=positive_int, default=2, help="Vivado synthesis/implementation jobs (1..64)")
    b.add_argument("--board-repo", default=None, metavar="PATH",
                   help="folder of Vivado board files on the machine that runs the Tcl "
                        "(set_param board.repoPaths); default: Vivado's own")
    b.add_argument("--kernel", choices=["hls", "rtl"], default="hls",
                   help="the accelerator IP: hls (Vitis HLS synthesizes the hls4ml C++; default) or rtl (the "
                        "Verilator-checked RTL twin from `flipq hls --rtl`, packaged by Vivado; no HLS)")
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
    from flipq.overlays.flow import build_overlay

    hls_dir = args.hls_dir
    if not (hls_dir / "hls_report.json").is_file() and (hls_dir / "hls" / "hls_report.json").is_file():
        hls_dir = hls_dir / "hls"  # a build folder: the same overlay the build's overlay stage makes
    out = args.out or hls_dir.parent / "overlay"
    result = build_overlay(hls_dir, args.board, out, dry_run=args.dry_run,
                           max_batch=args.max_batch, fclk_mhz=args.fclk_mhz, jobs=args.jobs,
                           board_repo=args.board_repo, simulate=args.simulate, kernel=args.kernel)
    for note in result.notes:
        print(note)
    for key, (need, have) in result.usage.items():
        if have:
            print(f"  {key:7s} {need:10.0f} / {have:<7d} ({100 * need / have:5.1f} %)")
    for line in result.ran:
        print(line)
    print(f"wrote {', '.join(p.name for p in result.files)} to {result.out_dir}")
    return result.returncode


def _check(args) -> int:
    from flipq.overlays.check import check_overlay

    summary = check_overlay(args.overlay_dir, args.hwh)
    print("overlay OK: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    return 0
