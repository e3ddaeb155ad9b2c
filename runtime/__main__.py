"""Per-rank entry point: ``python -m runtime ...`` (what torchrun and ``pipesim run --local`` start)."""

import argparse
import sys

from runtime.cli import add_rank_args, config_from_args


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime",
                                 description="One rank of a pipeline-parallel run (env: RANK, WORLD_SIZE, "
                                             "MASTER_ADDR, MASTER_PORT, as torchrun sets them).")
    add_rank_args(ap)
    ns = ap.parse_args(argv)
    try:
        cfg = config_from_args(ns)
    except ValueError as e:
        print(f"python -m runtime: error: {e}", file=sys.stderr)
        return 2
    from runtime.engine import run_rank

    run_rank(cfg)
    return 0


if __name__ == "__main__":
    rc = main()
    # Leave without interpreter finalization: once results are written, tearing down gloo's
    # threads during finalization sometimes aborts ("terminate called without an active
    # exception"), which would turn a finished run into a failed one.
    sys.stdout.flush()
    sys.stderr.flush()
    import os

    os._exit(rc)
