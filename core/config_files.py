"""Reading a configuration file (routing, policies): JSON, or YAML for .yaml/.yml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdserve.core.errors import KdserveError


def load_json_or_yaml(path: str | Path, error: type[KdserveError], kind: str, key: str) -> dict[str, Any]:
    """The object in a ``kind`` file (e.g. "routing"), whose top level holds ``key``; any problem
    is one ``error`` naming the file. YAML is read with ``safe_load`` only (never arbitrary objects)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read the {kind} file ({exc})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise error(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise error(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise error(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected an object with '{key}', got {type(data).__name__}")
    return data
