"""The docs name only what exists: generated references are current, and every command, option,
environment variable and condition reason the docs mention is real (and every reason is
documented). The console sessions themselves are executed by
tests/integration/test_docs_console.py.
"""

from __future__ import annotations

import importlib.util
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import click
import pytest

import schemashift.kube
from schemashift import reasons
from schemashift.cli import cli

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [path for path in [README, *sorted((ROOT / "docs").glob("*.md"))] if path.exists()]
# Where an environment variable counts as existing: everything but the docs themselves.
CODE_DIRS = ["operator", "examples", "charts", "images", "manifests", "tools", "tests", "bench",
             ".ci"]
CODE_FILES = ["Dockerfile", "pyproject.toml"]

_FENCE = re.compile(r"^\s*```")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
# `schemashift CMD` where a shell would run it: start of the code, after a prompt, an operator
# or environment assignments; or the exec form of a container command ["schemashift", "CMD"].
_COMMAND = re.compile(
    r"(?:^|[;&|(]|\$ )\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*schemashift\s+([a-z][\w-]*)([^;&|)]*)")
_EXEC_FORM = re.compile(r"""["']schemashift["']\s*,\s*["']([a-z][\w-]*)["']""")
_OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")
_ENV_VAR = re.compile(r"\bSCHEMASHIFT_[A-Z0-9_]+\b")
_REASON = re.compile(r"`([A-Z][A-Za-z0-9]+)`")


def load_gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_snippets(text: str) -> Iterator[str]:
    """Each line of every fenced block, and each inline code span outside them."""
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif in_fence:
            yield line.strip()
        else:
            yield from _INLINE_CODE.findall(line)


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(doc, command name, options written after it) for every `schemashift CMD` in the docs."""
    found = []
    for doc in DOCS:
        for snippet in code_snippets(doc.read_text()):
            for match in _COMMAND.finditer(snippet):
                arguments = re.split(r"\s#", match[2])[0]  # a shell comment is not an option
                name = match[1]
                sub = re.match(r"\s+([a-z][\w-]*)", arguments)
                if isinstance(cli.commands.get(name), click.Group) and sub:  # `backups prune`
                    name, arguments = f"{name} {sub[1]}", arguments[sub.end():]
                found.append((doc.name, name, _OPTION.findall(arguments)))
            found += [(doc.name, name, []) for name in _EXEC_FORM.findall(snippet)]
    return found


def test_generated_references_are_current() -> None:
    gen_docs = load_gen_docs()
    stale = [str(path.relative_to(ROOT)) for path in gen_docs.stale()]
    assert not stale, f"stale generated docs {stale}: run `python tools/gen_docs.py`"


def test_the_staleness_check_sees_a_difference(tmp_path: Path) -> None:
    gen_docs = load_gen_docs()
    current = tmp_path / "current.md"
    current.write_text("same\n")
    assert gen_docs.stale({current: "same\n"}) == []
    assert gen_docs.stale({current: "changed\n", tmp_path / "missing.md": "x"}) == [
        current, tmp_path / "missing.md"]


def test_the_cli_reference_lists_every_command_and_environment_variable() -> None:
    text = load_gen_docs().render_cli()
    for name, command in cli.commands.items():
        assert f"`{name}`" in text
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                assert f"`{param.envvar}`" in text


def test_every_documented_command_and_option_exists() -> None:
    found = documented_commands()
    assert {"detect-schema-changes", "apply"} <= {name for _, name, _ in found}, \
        "the command finder found none of the workflow's commands: is its pattern broken?"
    problems = []
    for doc, name, options in found:
        command: click.Command | None = cli
        for word in name.split():
            command = command.commands.get(word) if isinstance(command, click.Group) else None
        if command is None:
            problems.append(f"{doc}: `schemashift {name}`: no such command")
            continue
        ctx = click.Context(command, info_name=name, **cli.context_settings)
        known = {opt for param in command.get_params(ctx)
                 for opt in (*param.opts, *param.secondary_opts)}
        problems += [f"{doc}: `schemashift {name} {option}`: no such option"
                     for option in options if option not in known]
    assert not problems, "\n".join(sorted(set(problems)))


def _code_text() -> str:
    paths = [ROOT / name for name in CODE_FILES]
    for directory in CODE_DIRS:
        paths += [p for p in (ROOT / directory).rglob("*")
                  if p.is_file() and p.suffix != ".md" and "__pycache__" not in p.parts
                  and p.stat().st_size < 1_000_000]
    return "\n".join(p.read_text(errors="ignore") for p in paths if p.exists())


def test_every_documented_environment_variable_exists_in_the_code() -> None:
    code = set(_ENV_VAR.findall(_code_text()))
    missing = sorted({f"{doc.name}: {name}" for doc in DOCS
                      for name in _ENV_VAR.findall(doc.read_text()) if name not in code})
    assert not missing, "environment variables the docs name but no code reads:\n" + \
        "\n".join(missing)


def _string_constants(module: ModuleType) -> set[str]:
    return {value for name, value in vars(module).items()
            if name.isupper() and isinstance(value, str)}


def _kube_constants() -> set[str]:
    found: set[str] = set()
    for info in pkgutil.iter_modules(schemashift.kube.__path__, "schemashift.kube."):
        found |= _string_constants(importlib.import_module(info.name))
    return found


def troubleshooting_reasons() -> set[str]:
    """The reasons in the first column of the table under README's Troubleshooting heading."""
    if not README.exists():
        pytest.fail("README.md does not exist yet")
    section: list[str] = []
    level = 0
    for line in README.read_text().splitlines():
        heading = re.match(r"(#+)\s", line)
        if heading and level and len(heading[1]) <= level:
            break
        if level:
            section.append(line)
        elif heading and "troubleshoot" in line.lower():
            level = len(heading[1])
    first_cells = [row.split("|")[1] for row in section
                   if row.startswith("|") and not re.match(r"\|\s*:?-", row)]
    found = {reason for cell in first_cells for reason in _REASON.findall(cell)}
    if not found:
        pytest.fail("README.md has no troubleshooting table: a heading containing "
                    "'Troubleshooting', then a table whose first column holds the reasons "
                    "in backticks, e.g. | `LintBlocked` | ... |")
    return found


def test_every_reason_in_the_troubleshooting_table_exists() -> None:
    known = _string_constants(reasons) | _kube_constants()
    unknown = sorted(troubleshooting_reasons() - known)
    assert not unknown, f"README troubleshooting names reasons the code never sets: {unknown}"


def test_every_reason_is_in_the_troubleshooting_table() -> None:
    missing = sorted(_string_constants(reasons) - troubleshooting_reasons())
    assert not missing, f"reasons in reasons.py missing from README troubleshooting: {missing}"
