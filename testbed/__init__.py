"""Network emulation: a local multi-host testbed (namespaces + delay line + htb) and tc netem for clusters.

Torch-free: stdlib (and numpy where handy) only.
"""

from .core import Testbed, available, link_table

__all__ = ["Testbed", "available", "link_table"]
