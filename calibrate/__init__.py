"""Calibration: measure compute and links on the real machines, write the profile.

``calibrate.run_local_calibration(ranks, model, micro_batch_sizes, out, ...)`` calibrates
on this machine; ``python -m calibrate.worker`` is the per-rank program (torchrun on a
cluster). Importing this package does not import torch.
"""

__all__ = ["run_local_calibration"]


def __getattr__(name):
    if name == "run_local_calibration":
        from .local import run_local_calibration

        return run_local_calibration
    raise AttributeError(f"module 'calibrate' has no attribute {name!r}")
