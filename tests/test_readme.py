"""The README and docs/ tell the truth about commands, files and configuration.

Every command they document must exist: ``make`` targets, ``python -m``
modules (and the flags and ``asr_core`` subcommands given to them),
``manage.py`` commands, scripts run with ``python``/``bash``, the project
files they name, the variables they set, and their links.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.fixtures.settings_env import settings_env_vars

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
PAGES = [REPO_ROOT / "README.md", *DOCS]
PROJECT_PACKAGES = ("callcenter", "asr_core", "tasks")
README_MAX_LINES = 300


def _readme() -> str:
    return (REPO_ROOT / "README.md").read_text()


def _pages() -> list[tuple[Path, str]]:
    return [(page, page.read_text()) for page in PAGES]


def _name(page: Path) -> str:
    return str(page.relative_to(REPO_ROOT))


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


def test_readme_is_short_and_names_the_two_commands_near_the_top():
    lines = _readme().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move chapters to docs/"
    top = "\n".join(lines[:40])
    assert "make demo" in top and "make test" in top


def test_every_make_target_the_pages_run_exists():
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9_-]*):", makefile, flags=re.MULTILINE))
    for page, text in _pages():
        for target in re.findall(r"\bmake ([a-z][a-z0-9_-]*)", text):
            assert target in targets, f"{_name(page)} runs `make {target}`, which the Makefile lacks"


def _python_m_commands(text: str) -> list[tuple[str, list[str]]]:
    """``python -m MODULE ARGS`` on one line (code or inline code), ARGS up to a comment or backtick."""
    found = []
    for module, rest in re.findall(r"python3? -m ([A-Za-z_][\w.]*)([^\n`#]*)", text):
        found.append((module, rest.split()))
    return found


def test_every_python_module_the_pages_run_exists():
    for page, text in _pages():
        for module, _args in _python_m_commands(text):
            assert importlib.util.find_spec(module) is not None, f"{_name(page)} runs `python -m {module}`, not found"


def _module_source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    path = Path(spec.origin)
    if path.name == "__init__.py":
        path = path.with_name("__main__.py")
    return path.read_text()


def test_every_flag_given_to_a_project_command_is_one_it_takes():
    for page, text in _pages():
        for module, args in _python_m_commands(text):
            if module.split(".")[0] not in PROJECT_PACKAGES or module == "asr_core":
                continue
            source = _module_source(module)
            for flag in (a.split("=")[0] for a in args if re.fullmatch(r"--[a-z][a-z0-9-]*(=\S*)?", a)):
                assert f'"{flag}"' in source, f"{_name(page)}: `python -m {module}` has no flag {flag}"


def test_every_asr_core_subcommand_the_pages_run_exists():
    from asr_core.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    for page, text in _pages():
        for module, args in _python_m_commands(text):
            if module == "asr_core" and args and re.fullmatch(r"[a-z][a-z-]*", args[0]):
                assert args[0] in sub.choices, f"{_name(page)} runs `python -m asr_core {args[0]}`, no such subcommand"


def test_every_management_command_the_pages_run_exists():
    from django.core.management import get_commands

    commands = set(get_commands())
    for page, text in _pages():
        for command in re.findall(r"manage\.py ([a-z_]+)", text):
            assert command in commands, f"{_name(page)} runs `manage.py {command}`, which does not exist"


def test_every_script_and_project_file_the_pages_name_exists():
    for page, text in _pages():
        scripts = re.findall(r"(?:python3?|bash) ((?:bench|scripts|asr_core|tests)/[\w/.-]+\.(?:py|sh))", text)
        files = re.findall(r"`((?:callcenter|asr_core|tasks|bench|scripts|tests|docs)/[\w/.-]*)`", text)
        for path in scripts + files:
            assert (REPO_ROOT / path).exists(), f"{_name(page)} names {path}, which does not exist"


def _variables_a_command_may_set() -> set[str]:
    makefile = (REPO_ROOT / "Makefile").read_text()
    make_vars = set(re.findall(r"^([A-Z][A-Z0-9_]*) *[?:]?=", makefile, flags=re.MULTILINE))
    make_vars |= set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", makefile))
    compose_vars = set()
    for compose in REPO_ROOT.glob("docker-compose*.yml"):
        compose_vars |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose.read_text()))
    return settings_env_vars() | make_vars | compose_vars


def test_every_variable_the_pages_set_is_read_by_something():
    known = _variables_a_command_may_set()
    for page, text in _pages():
        for name in re.findall(r"(?<![\w$])([A-Z][A-Z0-9_]{2,})=", text):
            if f"${name}" in text:  # a shell variable of the example itself (TOKEN=...; ... $TOKEN)
                continue
            assert name in known, f"{_name(page)} sets {name}, which neither the settings, the Makefile nor compose read"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_points_at_a_file(page: Path):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        assert (page.parent / target).exists(), f"{_name(page)} links {target}, which does not exist"


def test_the_layout_section_names_every_package_of_the_project():
    readme = _readme()
    layout = readme[readme.index("## Layout") :]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    for package in ("callcenter", "asr_core", "tasks"):
        assert f"{package}/" in layout
    for child in sorted((REPO_ROOT / "callcenter").iterdir()):
        if child.is_dir() and (child / "__init__.py").exists():
            assert f"  {child.name}/" in layout, f"README's layout lacks callcenter/{child.name}/"
        elif child.suffix == ".py" and child.name != "__init__.py":
            assert child.name in layout, f"README's layout lacks callcenter/{child.name}"
    for folder in ("ops", "tools"):
        for module in sorted((REPO_ROOT / "callcenter" / folder).glob("*.py")):
            if module.name != "__init__.py":
                assert module.name in layout, f"README's layout lacks callcenter/{folder}/{module.name}"
    for child in sorted((REPO_ROOT / "asr_core").iterdir()):
        if child.is_dir() and (child / "__init__.py").exists():
            assert f"{child.name}/" in layout, f"README's layout lacks asr_core/{child.name}/"
    for module in sorted((REPO_ROOT / "asr_core" / "small").glob("*.py")):
        if module.name != "__init__.py":
            assert module.stem in layout, f"README's layout lacks asr_core/small/{module.name}"
