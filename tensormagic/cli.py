"""The command line: ``python -m tensormagic`` / ``tensormagic``."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_SOURCE, run_demo

    print("Tracking this code with tensormagic.track():\n")
    print("    " + DEMO_SOURCE.strip().replace("\n", "\n    ") + "\n")
    print(run_demo())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensormagic", description="See what PyTorch code does to its tensors.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("demo", help="track the autograd example and print the report")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
