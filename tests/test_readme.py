"""The README tells the truth about commands and configuration."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fixtures.settings_env import settings_env_vars

REPO_ROOT = Path(__file__).resolve().parents[1]


def _readme() -> str:
    return (REPO_ROOT / "README.md").read_text()


def test_configuration_table_lists_every_variable_the_settings_read():
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", _readme(), flags=re.MULTILINE))
    missing = settings_env_vars() - documented
    assert not missing, f"README's configuration table lacks {sorted(missing)}"
    assert not documented - settings_env_vars(), "README documents variables the settings do not read"


def test_quick_start_names_the_two_commands_and_ci_runs_the_test_one():
    readme = _readme()
    assert "make demo" in readme and "make test" in readme
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "set -euo pipefail" in ci
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.MULTILINE) and re.search(r"^test:", makefile, flags=re.MULTILINE)
