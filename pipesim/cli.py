"""The ``pipesim`` command: one verb per job.

Each verb lives in its own module, which provides ``register(subparsers)``; the
module is imported only to build the parser, and must not import torch at import
time (the runtime and calibration verbs import torch inside their handlers), so that
``pipesim simulate`` and ``pipesim grid`` work where torch is not installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb modules, in the order the help lists them
VERB_MODULES = [
    "pipesim.cmd_sim",        # simulate, grid
    "runtime.cli",            # run
    "calibrate.cli",          # calibrate
    "pipesim.testbed.cli",    # testbed, netem
    "runtime.cmd_validate",   # validate, demo
]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="pipesim",
        description="Predict pipeline-parallel training step time under any network, and check it against real runs.",
    )
    sub = ap.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # verb not built yet / not installed
            raise
        mod.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        return 0
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"pipesim {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
