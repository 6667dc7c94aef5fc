"""python -m bench [--quick] [--only NAME ...] [--output FILE]"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from bench import FIGURES, OPT_IN, figure_module
from bench.common import Context, Row, make_root, remove_root, setup_environment
from bench.report import machine, markdown, table

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute); used by the tests")
    parser.add_argument("--only", action="append", choices=list(FIGURES), metavar="NAME",
                        help=f"run only this figure (repeatable): {', '.join(FIGURES)} "
                             f"({', '.join(sorted(OPT_IN))} only when named)")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the markdown report (default: BENCHMARKS.md for a full "
                             "run of every figure; nothing for --quick or --only)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    names = args.only or [name for name in FIGURES if name not in OPT_IN]
    output = args.output
    if output is None and not args.quick and not args.only:
        output = DEFAULT_OUTPUT
    command = "python -m bench" + (" --quick" if args.quick else "") + "".join(
        f" --only {n}" for n in args.only or [])
    root = make_root()
    setup_environment(root)
    ctx = Context(quick=args.quick, root=root)
    started = time.time()
    load_before = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    rows: list[Row] = []
    failed = []
    try:
        for name in names:
            module = figure_module(name)
            t0 = time.perf_counter()
            print(f"[{name}] ...", file=sys.stderr, flush=True)
            try:
                got = module.measure(ctx) if not hasattr(module, "measure_named") else module.measure_named(ctx, name)
            except Exception as exc:  # a broken figure must not hide the others
                traceback.print_exc()
                failed.append(name)
                labels = module.rows(ctx) if not hasattr(module, "rows_named") else module.rows_named(ctx, name)
                got = [Row(0, label, None, "", note=f"error: {type(exc).__name__}: {exc}"[:200])
                       for label in labels]
            rows += got
            print(f"[{name}] {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            remove_root(root)
    elapsed = time.time() - started
    print(table(rows))
    if output is not None:
        info = {**machine(), "load average (1, 5, 15 min) at the start": " ".join(load_before)}
        output.write_text(markdown(rows, info, command, elapsed, ctx))
        print(f"\nwrote {output}", file=sys.stderr)
    if failed:
        print(f"figures that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
