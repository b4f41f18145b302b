"""``python -m sparkfold``: the same as the ``sparkfold`` command."""

import sys

from sparkfold.cli import main

if __name__ == "__main__":
    sys.exit(main())
