"""``python -m lossjax.data [NAME]``: the same as ``lossjax data info [NAME]``."""

import sys

from lossjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "info", *sys.argv[1:2]]))
