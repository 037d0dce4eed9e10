"""The console sessions in the docs are what the commands really print.

Every ```console block of README.md and docs/*.md is executed, in document order, as one session
against a real PostgreSQL (and SeaweedFS S3 when a command names an s3:// URL). A line starting
with ``$ `` is a command (a trailing backslash continues it on the next line); the lines after
it, up to the next command or the end of the block, are what it prints (stdout and stderr
together, as a terminal shows them).

The session's environment is the doc's own set-up: the ```sh block under the heading "Set-up",
run with bash from the repository root after these substitutions (and nothing else):

- ``postgresql://app:PASSWORD@127.0.0.1:5432/NAME`` (or ``@localhost:5432``) -> a fresh database
  NAME on the test server, reached as the role ``app`` with its real password and port;
- ``/tmp/NAME`` -> a directory of the same name under the test's tmp_path (mapped back in the
  output);
- ``s3://BUCKET`` -> a fresh bucket BUCKET on the test S3 server, whose endpoint and keys are in
  the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).

Blocks that cannot run here (a Kubernetes cluster, an editor) are fenced ```console-k8s or
```text instead and are not executed. Output is compared line by line after NORMALISATION
(applied to both sides); everything else must match exactly.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures.postgres import APP_PASSWORD, APP_ROLE, PgServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_TIMEOUT_SECONDS = 300

# What varies from run to run, replaced by a placeholder on both sides; in this order.
NORMALISATION: list[tuple[str, re.Pattern[str], str]] = [
    # Migration file names (YYYYMMDDHHMMSS), ISO 8601 times, backup keys (20261125T174147.123Z).
    ("timestamp", re.compile(
        r"(?<!\d)\d{4}-?\d{2}-?\d{2}[T ]?\d{2}:?\d{2}:?\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
        r"(?!\d)"), "<time>"),
    ("port", re.compile(r"(?:(?<=127\.0\.0\.1:)|(?<=localhost:))\d+"), "<port>"),
    ("byte count", re.compile(r"(?<![\w.])\d+(?= bytes\b)|(?<=\bbytes=)\d+"), "<n>"),
    ("transfer rate", re.compile(r"(?<=\bmbps=)[\d.]+"), "<n>"),
    # Revision ids (and their 8-character prefixes), plan hashes, sha256: hex with a digit.
    # Ids that the doc's own commands or set-up name are fixed inputs and stay as they are.
    ("hex id", re.compile(r"(?<![0-9A-Za-z])(?=[a-f]*\d)[0-9a-f]{8,64}(?![0-9A-Za-z])"),
     "<hex>"),
]

_FENCE = re.compile(r"^(\s*)```\s*([\w-]*)")
_DOC_URL = re.compile(r"postgresql://app:PASSWORD@(127\.0\.0\.1|localhost):5432/(\w+)")
_TMP_PATH = re.compile(r"/tmp/[\w.-]+")
_BUCKET = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])")


@dataclass
class Step:
    command: str
    expected: list[str]
    line: int  # of the command in the doc, 1-based


@dataclass
class Session:
    setup: str = ""
    steps: list[Step] = field(default_factory=list)

    def inputs(self) -> str:
        return "\n".join([self.setup, *(step.command for step in self.steps)])


def _blocks(text: str) -> Iterator[tuple[str, str, int, list[str]]]:
    """(heading, fence info, first line number, lines) of each fenced block."""
    heading, lines = "", text.splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            if lines[index].startswith("#"):
                heading = lines[index].lstrip("#").strip()
            index += 1
            continue
        indent, info, start = match.group(1), match.group(2), index + 1
        index += 1
        body = []
        while index < len(lines) and not lines[index].strip().startswith("```"):
            body.append(lines[index].removeprefix(indent))
            index += 1
        index += 1
        yield heading, info, start + 1, body


def parse_session(text: str) -> Session:
    session = Session()
    for heading, info, first, body in _blocks(text):
        if info == "sh" and heading.lower() in ("set-up", "setup"):
            session.setup += "\n".join(body) + "\n"
        elif info == "console":
            session.steps += _steps(body, first)
    return session


def _steps(body: list[str], first: int) -> list[Step]:
    steps: list[Step] = []
    continuing = False
    for offset, line in enumerate(body):
        if continuing:
            steps[-1].command += "\n" + line
        elif line.startswith("$ "):
            steps.append(Step(command=line[2:], expected=[], line=first + offset))
        elif steps:
            steps[-1].expected.append(line)
        else:
            raise AssertionError(f"line {first + offset}: console block output before any `$ `")
        continuing = (continuing or line.startswith("$ ")) and line.endswith("\\")
    return steps


def _placeholder(text: str, fixed: set[str]) -> Callable[[re.Match[str]], str]:
    return lambda match: match[0] if match[0] in fixed else text


def normalise(lines: list[str], fixed: set[str]) -> list[str]:
    """Each line with the varying parts replaced (except the fixed inputs); a progress line
    repeated (how many depends on the machine's speed) counts once; trailing blanks off."""
    result: list[str] = []
    for line in lines:
        for _, pattern, placeholder in NORMALISATION:
            line = pattern.sub(_placeholder(placeholder, fixed), line)
        if not (result and line == result[-1] and "state=InProgress" in line):
            result.append(line.rstrip())
    while result and not result[-1]:
        result.pop()
    return result


def _substitute(text: str, mapping: dict[str, str], pattern: re.Pattern[str]) -> str:
    return pattern.sub(lambda m: mapping.get(m[0], m[0]), text)


@dataclass
class Environment:
    """The real values standing in for the doc's placeholders, both ways."""

    forward: dict[str, str] = field(default_factory=dict)  # doc text -> real text
    env: dict[str, str] = field(default_factory=dict)

    def command(self, text: str) -> str:
        text = _DOC_URL.sub(lambda m: self.forward[m[0]], text)
        return _substitute(text, self.forward, _TMP_PATH)

    def output(self, text: str) -> str:
        # Longest first: a real tmp path may contain another one's prefix.
        for doc, real in sorted(self.forward.items(), key=lambda item: -len(item[1])):
            if doc.startswith("/tmp/"):
                text = text.replace(real, doc)
        return text


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SCHEMASHIFT_", "AWS_", "PG")) and k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Python buffers stdout in a pipe: unbuffered keeps stdout and stderr in the order written.
    env.update(PYTHONUNBUFFERED="1", AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, NO_COLOR="1",
               # the backup's format follows the CPUs (runner/dump_dir.py): the same everywhere
               SCHEMASHIFT_CPU_LIMIT="2")
    return env


def _run_setup(setup: str, env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """Run the set-up with bash -e; return the environment it leaves (its exports)."""
    env_file = tmp_path / "setup.env"
    script = f"set -euo pipefail\n{setup}\nenv -0 > {shlex.quote(str(env_file))}\n"
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT_SECONDS, check=False)
    assert done.returncode == 0, f"the doc's set-up failed ({done.returncode}):\n" \
                                 f"{done.stdout}{done.stderr}"
    pairs = (item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
    return dict(pairs)


@contextmanager
def _prepare(session: Session, pg_server: PgServer, tmp_path: Path,
             request: pytest.FixtureRequest) -> Iterator[Environment]:
    inputs = session.inputs()
    environment = Environment(env=_base_env())
    # pg_dump/pg_restore of the server's major version, as a user's machine would have them.
    environment.env["PATH"] = f"{pg_server.bin_dir}{os.pathsep}{environment.env['PATH']}"
    databases = sorted({match[2] for match in _DOC_URL.finditer(inputs)})
    for name in databases:
        pg_server.drop_database(name)
        pg_server.create_database(name)
    for match in _DOC_URL.finditer(inputs):
        environment.forward[match[0]] = \
            f"postgresql://{APP_ROLE}:{APP_PASSWORD}@{match[1]}:{pg_server.port}/{match[2]}"
    for doc_path in sorted(set(_TMP_PATH.findall(inputs))):
        environment.forward[doc_path] = str(tmp_path / "doc" / Path(doc_path).name)
    (tmp_path / "doc").mkdir(parents=True)
    buckets = sorted(set(_BUCKET.findall(inputs)))
    s3_server = request.getfixturevalue("s3_server") if buckets else None
    created: list[str] = []
    try:
        if s3_server is not None:
            environment.env.update(s3_server.env())
            for bucket in buckets:
                created.append(s3_server.create_bucket(bucket))
        if session.setup:
            environment.env = _run_setup(environment.command(session.setup), environment.env,
                                         tmp_path)
        yield environment
    finally:
        for name in databases:
            pg_server.drop_database(name)
        for bucket in created:
            s3_server.empty_and_delete_bucket(bucket)  # type: ignore[union-attr]


def _run(step: Step, environment: Environment) -> list[str]:
    done = subprocess.run(["bash", "-c", environment.command(step.command)], cwd=ROOT,
                          env=environment.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, timeout=COMMAND_TIMEOUT_SECONDS,
                          check=False)
    return environment.output(done.stdout).splitlines()


def _documented_sessions() -> list[Path]:
    return [path for path in DOCS if path.exists() and parse_session(path.read_text()).steps]


def session_drift(name: str, text: str, pg_server: PgServer, tmp_path: Path,
                  request: pytest.FixtureRequest) -> list[str]:
    """Run the doc's session; one diff (documented vs printed) per command whose output drifted."""
    session = parse_session(text)
    fixed = set(NORMALISATION[-1][1].findall(session.inputs()))
    drift: list[str] = []
    with _prepare(session, pg_server, tmp_path, request) as environment:
        for step in session.steps:
            expected = normalise(step.expected, fixed)
            actual = normalise(_run(step, environment), fixed)
            if expected != actual:
                diff = difflib.unified_diff(expected, actual, "documented", "printed", lineterm="")
                drift.append(f"{name}:{step.line}: $ {step.command}\n" + "\n".join(diff))
    return drift


@pytest.mark.parametrize("doc", _documented_sessions(), ids=lambda path: path.name)
def test_console_sessions_print_what_the_doc_shows(
    doc: Path, pg_server: PgServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    drift = session_drift(str(doc.relative_to(ROOT)), doc.read_text(), pg_server, tmp_path,
                          request)
    assert not drift, "the docs drifted from what the commands print:\n\n" + "\n\n".join(drift)


def test_the_workflow_doc_has_a_session_and_a_setup() -> None:
    # Guards the harness itself: a renamed heading or fence must not silently run nothing.
    session = parse_session((ROOT / "docs" / "workflow.md").read_text())
    assert session.setup.strip() and len(session.steps) >= 5


def test_normalisation_keeps_what_does_not_vary() -> None:
    fixed = {"6407aebfbb5e"}
    documented = ["migrated from 6407aebfbb5e to f95b6ac0b87a in 1 stage(s)",
                  "Created migration file: /tmp/d/versions/20261125174147_f95b6ac0_add_x.py",
                  "  backup: state=Verified bytes=1234 mbps=0.5 entries=9"]
    printed = ["migrated from 6407aebfbb5e to 0a1b2c3d4e5f in 1 stage(s)",
               "Created migration file: /tmp/d/versions/20270101000000_0a1b2c3d_add_x.py",
               "  backup: state=Verified bytes=99 mbps=12.25 entries=9"]
    assert normalise(documented, fixed) == normalise(printed, fixed)
    progress = "  backup: state=InProgress url=s3://b/k.dump bytes=0 mbps=0.0"
    assert normalise([progress, "done"], fixed) == normalise([progress, progress, "done"], fixed)
    drifted = [(0, "migrated from 0a1b2c3d4e5f to 0a1b2c3d4e5f in 1 stage(s)"),
               (0, "migrated from 6407aebfbb5e to 0a1b2c3d4e5f in 2 stage(s)"),
               (1, "Created migration file: /tmp/d/versions/20270101000000_0a1b2c3d_add_y.py"),
               (2, "  backup: state=Verified bytes=99 mbps=12.25 entries=8")]
    for index, line in drifted:
        assert normalise([line], fixed) != normalise([documented[index]], fixed), line


SELF_TEST_DOC = """\
## Set-up

```sh
export PYTHONPATH=examples/hms
export SCHEMASHIFT_DATABASE_URL=postgresql://app:PASSWORD@127.0.0.1:5432/docs_selftest
alembic -c examples/hms/alembic.ini upgrade 6407aebfbb5e
```

```console
$ schemashift backup --backup-url s3://docs-selftest/hms/
{backup}
$ schemashift backup --backup-url s3://docs-selftest/hms/
{drifted}
```
"""
# Pasted from a real run, as a doc author would (long values spliced in to keep lines short).
_URL = "s3://docs-selftest/hms/docs_selftest/20261125T180712.345Z-6407aebfbb5e.dumpdir"
_SHA = "0f3e8c1f1c2a9d7e6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180706f5e4d3c2b1a0"
BACKUP_OUTPUT = f"""\
  backup: state=InProgress url={_URL} bytes=0 mbps=0.0
  backup: state=Uploaded url={_URL} bytes=4033 mbps=0.1 parts=3
  backup: state=Verified url={_URL} bytes=4033 mbps=0.1 sha256={_SHA} entries=11 parts=3
Backup verified: {_URL} (4033 bytes, sha256 {_SHA})"""


def test_the_harness_runs_a_backup_on_s3_and_reports_only_real_drift(
    pg_server: PgServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    drifted = BACKUP_OUTPUT.replace("entries=11", "entries=12")
    doc = SELF_TEST_DOC.format(backup=BACKUP_OUTPUT, drifted=drifted)
    drift = session_drift("self-test", doc, pg_server, tmp_path, request)
    assert len(drift) == 1, "\n\n".join(drift)
    assert drift[0].startswith("self-test:15: $ schemashift backup")
    assert "-  backup: state=Verified" in drift[0] and "entries=12" in drift[0]
