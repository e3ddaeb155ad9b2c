"""The loop, the top layer: validate, demo, compare and plot drive everything below.

It imports the simulator (``pipesim``), the testbed, the runtime and calibration; none
of them imports it. ``loop.cli`` is the ``pipesim`` command.
"""
