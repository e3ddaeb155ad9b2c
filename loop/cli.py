"""The ``pipesim`` command: one verb per job, gathered here, in the top layer.

Each layer keeps the verbs of its own job in a module that provides
``register(subparsers)``, and this module imports them all (the arrows point down):

* ``pipesim.cmd_sim``: simulate, grid;  ``pipesim.cmd_recommend``: recommend (the torch-free core);
* ``runtime.cli``: run;  ``calibrate.cli``: calibrate;  ``testbed.cli``: testbed, netem;
* ``loop.verbs``: validate, demo, plot, compare;  ``loop.sweep``: sweep;  ``loop.explain``: explain.

A verb module must not import torch at import time (the runtime and calibration verbs
import it inside their handlers), so that ``pipesim simulate`` and ``pipesim grid``
work where torch is not installed.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import calibrate.cli
import runtime.cli
import testbed.cli
from loop import explain, sweep, verbs
from pipesim import cmd_recommend, cmd_sim

# verb modules, in the order the help lists them
VERB_MODULES = [cmd_sim, cmd_recommend, runtime.cli, calibrate.cli, testbed.cli, verbs, sweep, explain]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``pipesim simulate: error: argument --steps: ... (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="pipesim",
        description="Predict pipeline-parallel training step time under any network, and check it against real runs.",
    )
    sub = ap.add_subparsers(dest="verb", metavar="VERB")
    for mod in VERB_MODULES:
        mod.register(sub)
    return ap


def _os_error(e: OSError) -> str:
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def main(argv: list[str] | None = None) -> int:
    """Run one verb; bad input of any kind ends in one line on stderr and exit status 2."""
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    err = None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        return 0
    except ValueError as e:
        err = str(e)
    except OSError as e:  # a file or folder that cannot be read or written: missing, a folder, no permission
        err = _os_error(e)
    except RecursionError:  # last resort: e.g. a JSON document nested thousands deep
        err = "the input is nested too deeply to read"
    except OverflowError as e:  # last resort: a number too large for a float somewhere
        err = f"a number in the input is too large to handle ({e})"
    verb = " ".join(v for v in (args.verb, getattr(args, "netem_verb", None), getattr(args, "testbed_verb", None)) if v)
    print(f"pipesim {verb}: error: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
