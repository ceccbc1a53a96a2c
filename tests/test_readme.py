"""The README's commands are what CI runs: they cannot drift apart."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", (REPO / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    test_commands = [c for c in _readme_commands() if "pytest" in c]
    assert test_commands, "README shows no test command"
    assert test_commands[0].strip() in ci


def test_readme_main_command_installs_and_runs_the_pipeline() -> None:
    main = _readme_commands()[0]
    assert "pip install" in main and "kdserve pipeline --preset quick" in main
