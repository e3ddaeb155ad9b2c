"""The ``pipesim`` command: one verb per job, gathered here, in the top layer.

Each layer keeps the verbs of its own job in a module that provides
``register(subparsers)``, and this module imports them all (the arrows point down):

* ``pipesim.cmd_sim``: simulate, grid (the torch-free core);
* ``runtime.cli``: run;  ``calibrate.cli``: calibrate;  ``testbed.cli``: testbed, netem;
* ``loop.verbs``: validate, demo, plot, compare;  ``loop.sweep``: sweep;  ``loop.explain``: explain.

A verb module must not import torch at import time (the runtime and calibration verbs
import it inside their handlers), so that ``pipesim simulate`` and ``pipesim grid``
work where torch is not installed.
"""

from __future__ import annotations

import argparse
import sys

import calibrate.cli
import runtime.cli
import testbed.cli
from loop import explain, sweep, verbs
from pipesim import cmd_sim

# verb modules, in the order the help lists them
VERB_MODULES = [cmd_sim, runtime.cli, calibrate.cli, testbed.cli, verbs, sweep, explain]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="pipesim",
        description="Predict pipeline-parallel training step time under any network, and check it against real runs.",
    )
    sub = ap.add_subparsers(dest="verb", metavar="VERB")
    for mod in VERB_MODULES:
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
