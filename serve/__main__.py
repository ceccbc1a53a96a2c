"""``python -m kdserve.serve --bundles DIR ...`` is ``kdserve serve --bundles DIR ...``.

Built from ``kdserve.serve.cli`` alone, so this entry point never imports the CLI above it.
"""

import argparse
import sys

from kdserve.core.errors import KdserveError
from kdserve.serve.cli import register


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdserve.serve")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", *argv])
    try:
        return int(args.func(args))
    except KdserveError as exc:
        print(f"kdserve: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
