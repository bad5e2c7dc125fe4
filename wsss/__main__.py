"""``python -m wsss``: the ``wsss`` command."""

import sys

from wsss.cli import main

if __name__ == "__main__":
    sys.exit(main())
