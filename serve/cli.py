"""`kdserve serve` subcommands: registered on the main parser, stage imported only when run."""

from __future__ import annotations

import argparse

from kdserve.errors import NotImplementedYet


def _not_yet(args: argparse.Namespace) -> int:
    raise NotImplementedYet("kdserve serve is not implemented yet")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("serve", help="(not implemented yet)")
    parser.set_defaults(func=_not_yet)
