"""Entry point of ``python -m simulator`` and the ``txpipe-simulator`` script."""

import sys

from simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
