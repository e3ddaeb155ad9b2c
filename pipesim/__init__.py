"""pipesim: predict pipeline-parallel training step time under any network.

The simulator half (this package) never imports torch.
"""

__version__ = "0.1.0"
