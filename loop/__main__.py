"""``python -m loop``: the ``pipesim`` command, without installing it."""

import sys

from loop.cli import main

sys.exit(main())
