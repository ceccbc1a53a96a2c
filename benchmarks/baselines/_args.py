"""Command line shared by the baseline apps: a folder and a port, from argv or the environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence


def parse(
    description: str,
    folder_help: str,
    argv: Sequence[str] | None = None,
    extra: dict[str, tuple[type, object, str]] | None = None,
) -> argparse.Namespace:
    """``FOLDER [--port P] [--host H]``; FOLDER defaults to $BUNDLE (or $CHECKPOINT), the port to $PORT or 8000."""
    parser = argparse.ArgumentParser(description=description)
    default = os.environ.get("BUNDLE") or os.environ.get("CHECKPOINT")
    parser.add_argument("folder", nargs="?" if default else None, default=default, help=folder_help)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    for name, (kind, value, text) in (extra or {}).items():
        parser.add_argument(f"--{name}", type=kind, default=value, help=text)
    args = parser.parse_args(argv)
    if not os.path.isdir(args.folder):
        parser.error(f"folder not found: {args.folder}")
    return args
