"""``python -m serve --bundles DIR ...`` is ``kdserve serve --bundles DIR ...``."""

import sys

from kdserve.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
