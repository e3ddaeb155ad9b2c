"""``python -m pipesim``: the installed ``pipesim`` command.

The command lives in the top layer (``loop.cli``), which this torch-free core must not
import; the console script declared in pyproject.toml names it, so it is found here
through the package's entry points.
"""

import sys
from importlib.metadata import entry_points


def _main() -> int:
    found = [ep for ep in entry_points(group="console_scripts") if ep.name == "pipesim"]
    if not found:
        print("python -m pipesim: the pipesim command is not installed; run pip install -e . "
              "in the repository (or use 'python -m loop')", file=sys.stderr)
        return 2
    return int(found[0].load()() or 0)


sys.exit(_main())
