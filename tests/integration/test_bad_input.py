"""Bad input to every command (detect, check, create-model-migration, sync-models-to-db, apply,
plan, backup, restore, run-job): a clear message, the documented exit code, nothing written or
changed, and no fragment of a secret shown."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.fixtures.histories import write_history
from tests.fixtures.models import execute, invoke, run, snapshot, write_models
from tests.fixtures.postgres import APP_PASSWORD, PgServer
from tests.fixtures.runner_cli import cli_env, revision, run_apply, tables
from tests.fixtures.s3 import S3Server
from tests.integration.test_runner_apply import HISTORY

pytestmark = pytest.mark.integration

MODELS = "t = sa.Table('t', metadata, sa.Column('id', sa.Integer, primary_key=True))\n"
COMMANDS = [
    ("detect-schema-changes",),
    ("check",),
    ("sync-models-to-db",),
    ("create-model-migration", "-m", "x"),
]


def tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts} if path.exists() else {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    return tmp_path / "migrations"


def attempt(command: tuple[str, ...], url: str, ref: str, migrations: Path) -> tuple[int, str]:
    result = invoke(*command, "--database-url", url, "--metadata", ref,
                    "--migrations", str(migrations))
    return result.code, result.text


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_models_module:Base", "cannot import model module 'no_such_models_module'"),
        ("{module}:Nope", "has no attribute 'Nope'"),
        ("{module}:NOT_METADATA", "is a int, not a SQLAlchemy MetaData or declarative Base"),
        ("just_a_module", "is not of the form MODULE:ATTR"),
    ],
    ids=["unknown-module", "unknown-attribute", "not-metadata", "no-attribute"],
)
def test_bad_metadata_reference(
    tmp_path: Path, database_url: str, migrations: Path, command: tuple[str, ...], ref: str,
    message: str,
) -> None:
    module = write_models(tmp_path / "models", MODELS + "NOT_METADATA = 3\n").split(":")[0]
    before = snapshot(database_url)
    code, output = attempt(command, database_url, ref.format(module=module), migrations)
    assert code == 2, output
    assert message in output and "Traceback" not in output
    assert snapshot(database_url) == before and not migrations.exists()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_unreachable_database_exits_3_and_shows_the_host_never_the_password(
    tmp_path: Path, migrations: Path, command: tuple[str, ...]
) -> None:
    ref = write_models(tmp_path, MODELS)
    port = free_port()
    url = f"postgresql://app:{APP_PASSWORD}@127.0.0.1:{port}/hms"
    result = run(*command, "--database-url", url, "--metadata", ref,
                 "--migrations", str(migrations), pythonpath=tmp_path)
    assert result.code == 3, result
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}/hms" in result.err
    assert APP_PASSWORD not in result.text
    assert not migrations.exists()


def test_wrong_password_is_not_echoed(tmp_path: Path, database_url: str) -> None:
    ref = write_models(tmp_path, MODELS)
    wrong = "Wr0ng-Passw0rd-x"
    result = invoke("detect", "--database-url", database_url.replace(APP_PASSWORD, wrong),
                    "--metadata", ref)
    assert result.code == 3, result
    assert "password authentication failed" in result.err
    assert wrong not in result.text and APP_PASSWORD not in result.text


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("url", ["sqlite:///hms.db", f"mysql://app:{APP_PASSWORD}@db/hms"])
def test_database_that_is_not_postgresql(
    tmp_path: Path, migrations: Path, command: tuple[str, ...], url: str
) -> None:
    ref = write_models(tmp_path, MODELS)
    code, output = attempt(command, url, ref, migrations)
    assert code == 2, output
    assert "not PostgreSQL" in output and APP_PASSWORD not in output
    assert not migrations.exists() and not (tmp_path / "hms.db").exists()


def broken_without_env(migrations: Path) -> None:
    (migrations / "versions").mkdir(parents=True)
    (migrations / "README").write_text("someone's directory\n")


def broken_revision(migrations: Path) -> None:
    (migrations / "versions").mkdir(parents=True)
    (migrations / "env.py").write_text("")
    (migrations / "versions" / "a1_x.py").write_text(
        "revision = 'a1'\ndown_revision = 'missing'\nbranch_labels = None\ndepends_on = None\n"
        "def upgrade(): pass\ndef downgrade(): pass\n")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [(broken_without_env, "has no env.py"),
     (broken_revision, "is not a usable Alembic script directory")],
    ids=["no-env-py", "dangling-down-revision"],
)
def test_broken_script_directory(
    tmp_path: Path, database_url: str, migrations: Path, breakage: object, message: str
) -> None:
    breakage(migrations)  # type: ignore[operator]
    files, before = tree(migrations), snapshot(database_url)
    ref = write_models(tmp_path, MODELS)
    code, output = attempt(("create-model-migration", "-m", "x"), database_url, ref, migrations)
    assert code == 2, output
    assert message in output and "Traceback" not in output
    assert (tree(migrations), snapshot(database_url)) == (files, before)


def test_multiple_heads_are_refused(tmp_path: Path, database_url: str, migrations: Path) -> None:
    ref = write_models(tmp_path / "v1", MODELS)
    assert attempt(("create-model-migration", "-m", "one", "--apply"), database_url, ref,
                   migrations)[0] == 0
    first = next((migrations / "versions").glob("*.py"))
    source = first.read_text()
    revision = source.split("revision: str = '")[1].split("'")[0]
    for branch in ("b1", "b2"):
        (migrations / "versions" / f"{branch}.py").write_text(
            f"revision = '{branch}'\ndown_revision = '{revision}'\nbranch_labels = None\n"
            "depends_on = None\ndef upgrade(): pass\ndef downgrade(): pass\n")
    files, before = tree(migrations), snapshot(database_url)
    v2 = write_models(tmp_path / "v2", MODELS + "u = sa.Table('u', metadata, "
                                                "sa.Column('id', sa.Integer, primary_key=True))\n")
    code, output = attempt(("create-model-migration", "-m", "two"), database_url, v2, migrations)
    assert code == 2, output
    assert "the migration history has 2 heads: b1, b2" in output and "alembic merge" in output
    assert (tree(migrations), snapshot(database_url)) == (files, before)


@pytest.mark.parametrize("message", ["", "   "])
def test_empty_message_is_refused(
    tmp_path: Path, database_url: str, migrations: Path, message: str
) -> None:
    ref = write_models(tmp_path, MODELS)
    code, output = attempt(("create-model-migration", "-m", message), database_url, ref,
                           migrations)
    assert code == 2, output
    assert "the migration message is empty" in output
    assert not migrations.exists() and snapshot(database_url)["tables"] == {}


def test_never_stamped_database_with_a_history_is_refused(
    tmp_path: Path, database_url: str, migrations: Path, pg_server: object
) -> None:
    ref = write_models(tmp_path / "v1", MODELS)
    assert attempt(("create-model-migration", "-m", "one", "--apply"), database_url, ref,
                   migrations)[0] == 0
    execute(database_url, "DROP TABLE alembic_version")
    files, before = tree(migrations), snapshot(database_url)
    v2 = write_models(tmp_path / "v2", MODELS + "u = sa.Table('u', metadata, "
                                                "sa.Column('id', sa.Integer, primary_key=True))\n")
    code, output = attempt(("create-model-migration", "-m", "two"), database_url, v2, migrations)
    assert code == 2, output
    assert "the database was never stamped by Alembic" in output and "alembic stamp" in output
    assert (tree(migrations), snapshot(database_url)) == (files, before)
    detect = invoke("detect", "--database-url", database_url, "--metadata", v2)
    assert detect.code == 0 and "no alembic_version table" in detect.out, detect


def test_tables_without_any_history_are_refused(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    execute(database_url, "CREATE TABLE t (id int PRIMARY KEY)")
    before = snapshot(database_url)
    v2 = write_models(tmp_path, MODELS + "u = sa.Table('u', metadata, "
                                         "sa.Column('id', sa.Integer, primary_key=True))\n")
    code, output = attempt(("create-model-migration", "-m", "two"), database_url, v2, migrations)
    assert code == 2, output
    assert "the database already has tables but the migration history is empty" in output
    assert not migrations.exists() and snapshot(database_url) == before


def test_missing_options_are_named(tmp_path: Path, database_url: str) -> None:
    ref = write_models(tmp_path, MODELS)
    no_url = invoke("detect", "--metadata", ref)
    assert no_url.code == 2 and "no database URL given" in no_url.err, no_url
    no_models = invoke("detect", "--database-url", database_url)
    assert no_models.code == 2 and "no model metadata given" in no_models.err, no_models
    no_dir = invoke("create-model-migration", "-m", "x", "--database-url", database_url,
                    "--metadata", ref)
    assert no_dir.code == 2 and "no migrations directory given" in no_dir.err, no_dir
    assert shutil.which("schemashift")


# -- every bad value a clear error: the runner's commands, as subprocesses -----------------------
#
# Each case: the exit code, what was wrong and what to do, nothing changed in the database or the
# bucket, no traceback, and no fragment of a secret (the database password, the S3 secret key,
# the case's own secret-looking input) anywhere in the output or the Job's termination log.

TOKEN = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
BAD_PASSWORD = "Pa@ssw0rd:2024!"
ENCODE = "URL-encode special characters in the password"


@dataclass(frozen=True)
class Bad:
    id: str
    args: tuple[str, ...] = ()
    command: str = "apply"
    url: str = "{good}"
    env: tuple[tuple[str, str], ...] = ()
    code: int = 2
    says: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()


def url_case(id: str, url: str, says: tuple[str, ...], secrets: tuple[str, ...] = (),
             command: str = "apply") -> Bad:
    return Bad(f"{command}-{id}", command=command, url=url, says=says, secrets=secrets)


UNENCODED = ("must be URL-encoded", ENCODE, "@ → %40", ": → %3A")
UNENCODED_SECRETS = ("ssw0rd", "2024!", "Pa@ss", "@ssw")
NOT_A_URL = ("is not a postgresql:// URL", "postgresql://user:")
TOKEN_SECRETS = (TOKEN, TOKEN[:10], TOKEN[-10:], "4eC39HqLy")
PORT_RANGE = ("has a port out of range", "use a port from 1 to 65535")
URL_CASES = [
    url_case("unencoded-password", f"postgresql://app:{BAD_PASSWORD}@{{hostport}}/{{db}}",
             UNENCODED, UNENCODED_SECRETS),
    url_case("slash-and-at-in-password", "postgresql://app:pa/ss@w0rd@{hostport}/{db}",
             UNENCODED, ("w0rd", "pa/ss")),
    url_case("slash-in-user", "postgresql://ap/p:{pw}@{hostport}/{db}", UNENCODED),
    url_case("port-not-a-number", "postgresql://app:{pw}@127.0.0.1:54x2/{db}",
             ("has a port that is not a number", "host:5432")),
    url_case("two-ports", "postgresql://app:{pw}@127.0.0.1:5432:5433/{db}",
             ("has a port that is not a number", "one host only")),
    url_case("port-99999", "postgresql://app:{pw}@127.0.0.1:99999/{db}", PORT_RANGE),
    url_case("port-0", "postgresql://app:{pw}@127.0.0.1:0/{db}", PORT_RANGE),
    url_case("port-negative", "postgresql://app:{pw}@127.0.0.1:-1/{db}", PORT_RANGE),
    url_case("mysql", "mysql://app:{pw}@{hostport}/{db}",
             ("is a mysql:// URL: not PostgreSQL", "PostgreSQL databases only")),
    url_case("unknown-scheme", "pgsqlx://app:{pw}@{hostport}/{db}",
             ("does not start with postgresql://: not PostgreSQL",), ("pgsqlx",)),
    url_case("whitespace-only", "   ", ("the database URL is empty",)),
    url_case("trailing-newline", "{good}\n",
             ("trailing whitespace or control characters", "newline at the end of a Secret")),
    url_case("tab-inside", "postgresql://app:pa\tss@{hostport}/{db}",
             ("control characters",), ("pa\tss",)),
    url_case("api-key", TOKEN, NOT_A_URL, TOKEN_SECRETS),
    url_case("api-key-with-colon", "AKIAZX9Q:wJalrXUtnFEMI/K7MDENG@vault", NOT_A_URL,
             ("wJalrXUtn", "AKIAZX9Q", "K7MDENG")),
    url_case("host-not-valid", "postgresql://app:{pw}@db!host/{db}",
             ("has a host name that is not valid",), ("db!host",)),
    url_case("sslmode", "{good}?sslmode=bogus",
             ("has an sslmode that is not valid", "verify-full"), ("bogus",)),
    url_case("unknown-parameter", "{good}?sslmod=require",
             ("unknown connection parameter", "did you mean sslmode?"), ("sslmod=",)),
    url_case("connect-timeout", "{good}?connect_timeout=soon",
             ("connect_timeout that is not a whole number",), ("soon",)),
    Bad("apply-empty-url", url="", says=("no database URL given", "--database-url")),
    *(url_case(f"{name}", url, says, secrets, command=command)
      for command in ("plan", "backup", "restore", "detect-schema-changes", "check")
      for name, url, says, secrets in [
          ("unencoded-password", f"postgresql://app:{BAD_PASSWORD}@{{hostport}}/{{db}}",
           UNENCODED, UNENCODED_SECRETS),
          ("api-key", TOKEN, NOT_A_URL, TOKEN_SECRETS),
          ("port-99999", "postgresql://app:{pw}@127.0.0.1:99999/{db}", PORT_RANGE, ()),
      ]),
]

DURATION = "write a number and a unit, as Kubernetes does"
OPTION_CASES = [
    Bad("lock-timeout-bare-number", ("--lock-timeout", "5"),
        says=("lock timeout '5' is not a duration", "add a unit: 5s")),
    Bad("lock-timeout-bad-unit", ("--lock-timeout", "1.5x"),
        says=("lock timeout '1.5x' is not a duration", DURATION)),
    Bad("lock-timeout-negative", ("--lock-timeout", "-5s"),
        says=("lock timeout must not be negative", DURATION)),
    Bad("lock-timeout-too-long", ("--lock-timeout", "99999999999h"),
        says=("is too long to be a duration",)),
    Bad("lock-wait-bare-number", ("--lock-wait", "5"), says=("lock wait '5' is not a duration",)),
    Bad("statement-timeout-word", ("--statement-timeout", "abc"),
        says=("statement timeout 'abc' is not a duration", DURATION)),
    Bad("allow-typo", ("--allow", "drop-colum"),
        says=("'drop-colum' is not a lint rule: did you mean 'drop-column'?",
              "the rules are: ")),
    Bad("lint-mode", ("--lint", "blok"), says=("Invalid value for '--lint'", "'block'")),
    Bad("lock-retries-negative", ("--lock-retries", "-1"),
        says=("lock retries must be a whole number from 0 to 100", "--lock-retries")),
    Bad("lock-retries-too-many", ("--lock-retries", "100000"),
        says=("lock retries must be a whole number from 0 to 100",)),
    Bad("lock-retries-word", ("--lock-retries", "abc"),
        says=("Invalid value for '--lock-retries'", "not a valid integer")),
    Bad("backup-url-not-s3", ("--backup-url", "http://bucket/x/"),
        says=("is not an s3:// URL", "use s3://bucket/prefix/")),
    Bad("backup-url-no-bucket", ("--backup-url", "s3:///x/"), says=("is not an s3:// URL",)),
    Bad("bucket-uppercase", ("--backup-url", "s3://Bad_Bucket/x/"),
        says=("is not a valid bucket name", "S3's naming rules")),
    Bad("bucket-too-short", ("--backup-url", "s3://ab/x/"),
        says=("2 characters, not 3-63",)),
    Bad("endpoint-not-a-url", ("--backup-url", "s3://{bucket}/x/"),
        env=(("AWS_ENDPOINT_URL", "not-a-url"),),
        says=("(AWS_ENDPOINT_URL) is not usable", "does not start with http://")),
    Bad("endpoint-port", ("--backup-url", "s3://{bucket}/x/"),
        env=(("AWS_ENDPOINT_URL", "http://127.0.0.1:99999"),),
        says=("its port is not a number from 1 to 65535",)),
    Bad("endpoint-with-credentials", ("--backup-url", "s3://{bucket}/x/"),
        env=(("AWS_ENDPOINT_URL", "http://minio:S3cr3tKey99@127.0.0.1:99999"),),
        says=("its port is not a number from 1 to 65535",), secrets=("S3cr3tKey99",)),
    Bad("stall-timeout-zero", ("--backup-url", "s3://{bucket}/x/"),
        env=(("SCHEMASHIFT_S3_STALL_TIMEOUT", "0s"),), says=("must be greater than zero",)),
    Bad("stall-timeout-bare-number", ("--backup-url", "s3://{bucket}/x/"),
        env=(("SCHEMASHIFT_S3_STALL_TIMEOUT", "5"),), says=("'5' is not a duration",)),
    Bad("missing-migrations-dir", ("--migrations", "/nonexistent/migrations"),
        says=("migrations directory /nonexistent/migrations does not exist",
              "create-model-migration")),
    Bad("unknown-target", ("--target", "nosuchrev"),
        says=("unknown target revision 'nosuchrev'", "schemashift plan")),
    Bad("plan-unknown-target", ("--target", "nosuchrev"), command="plan",
        says=("unknown target revision 'nosuchrev'",)),
    Bad("restore-policy-without-backup", ("--rollback-policy", "restore"),
        says=("needs a backup, but no backup URL was given", "--backup-url")),
    Bad("production-without-backup", ("--env", "production"),
        says=("production runs need a backup", "--backup-url", "--backup-method restorePoint")),
    Bad("plan-hash-not-approved", ("--expect-plan-hash", "deadbeef"),
        says=("not the approved deadbeef", "schemashift plan")),
    Bad("backup-bad-bucket", ("--backup-url", "s3://Bad_Bucket/x/"), command="backup",
        says=("is not a valid bucket name",)),
    Bad("restore-no-such-object", ("s3://{bucket}/x/nothing.dump",), command="restore",
        says=("no object s3://", "list the backups under the prefix")),
    Bad("restore-no-such-bucket", ("s3://no-such-bucket-zz/x/nothing.dump",),
        command="restore", code=3, says=("bucket 'no-such-bucket-zz' does not exist",)),
    Bad("job-url-is-an-api-key", command="run-job", url=TOKEN, says=NOT_A_URL,
        secrets=TOKEN_SECRETS),
    Bad("job-url-unencoded-password", command="run-job",
        url=f"postgresql://app:{BAD_PASSWORD}@{{hostport}}/{{db}}", says=UNENCODED,
        secrets=UNENCODED_SECRETS),
    Bad("job-lock-timeout-bare-number", command="run-job",
        env=(("SCHEMASHIFT_LOCK_TIMEOUT", "5"),), says=("lock timeout '5' is not a duration",)),
    Bad("job-allow-typo", command="run-job", env=(("SCHEMASHIFT_ALLOW", "drop-colum"),),
        says=("did you mean 'drop-column'?",)),
    Bad("job-lint-mode", command="run-job", env=(("SCHEMASHIFT_LINT", "blok"),),
        says=("Invalid value for '--lint'",)),
]


def command_line(case: Bad, url: str, migrations: Path, models: str, bucket: str,
                 termination: Path) -> list[str]:
    args = [a.format(bucket=bucket) for a in case.args]
    base: dict[str, list[str]] = {
        "apply": ["--migrations", str(migrations)],
        "plan": ["--migrations", str(migrations)],
        "backup": [] if "--backup-url" in args else ["--backup-url", f"s3://{bucket}/x/"],
        "restore": [] if args else [f"s3://{bucket}/x/nothing.dump"],
        "detect-schema-changes": ["--metadata", models],
        "check": ["--metadata", models],
        "run-job": ["--termination-log", str(termination)],
    }
    own_url = [] if case.command == "run-job" else ["--database-url", url]
    return [sys.executable, "-m", "schemashift.cli", case.command, *own_url,
            *base[case.command], *args]


def readable(output: str) -> str:
    """The output with each JSON event's message as a person reads it (not \\u-escaped)."""
    messages = [str(json.loads(line).get("message")) for line in output.splitlines()
                if line.startswith("{")]
    return "\n".join([output, *messages])


def objects(s3_server: S3Server, bucket: str) -> list[str]:
    listing = s3_server.client().list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


@pytest.mark.parametrize("case", URL_CASES + OPTION_CASES, ids=lambda c: c.id)
def test_bad_input_is_a_clear_error_that_changes_nothing(
    case: Bad, tmp_path: Path, database_url: str, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = write_history(tmp_path, HISTORY)
    models = write_models(tmp_path / "models", MODELS)
    hostport, db_name = database_url.split("@", 1)[1].split("/", 1)
    url = case.url.format(good=database_url, hostport=hostport, db=db_name, pw=APP_PASSWORD)
    termination = tmp_path / "termination-log"
    env = {**s3_server.env(), "PYTHONPATH": str(tmp_path / "models"), **dict(case.env)}
    if case.command == "run-job":
        env |= {"SCHEMASHIFT_DATABASE_URL": url, "SCHEMASHIFT_MIGRATIONS": str(migrations)}
    done = subprocess.run(
        command_line(case, url, migrations, models, s3_bucket, termination),
        capture_output=True, text=True, timeout=120, env=cli_env(extra=env))
    output = readable(done.stdout + done.stderr)
    seen = output + (termination.read_text() if termination.exists() else "")

    assert done.returncode == case.code, output
    for text in case.says:
        assert text in output, f"{text!r} not in:\n{output}"
    assert "Traceback" not in seen and "unexpected" not in seen and "report it" not in seen
    for secret in (APP_PASSWORD, s3_server.secret_key, *case.secrets):
        assert secret not in seen, f"{secret!r} shown:\n{seen}"
    assert revision(database_url) is None and tables(database_url) == set()
    assert objects(s3_server, s3_bucket) == []
    if case.command == "run-job":
        result = json.loads(termination.read_text()) if termination.exists() else None
        assert result is None or result["exitCode"] == case.code, result


def test_a_url_encoded_password_with_every_special_character_works(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """The counterpart: the characters the errors ask to encode work once encoded."""
    password = "Pa@ss:w/rd?#%! x"
    role = f"odd{os.getpid()}"
    with pg_server.admin() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    name = pg_server.create_database(owner=role)
    try:
        url = (f"postgresql://{role}:{quote(password, safe='')}@{pg_server.host}:"
               f"{pg_server.port}/{name}")
        migrations = write_history(tmp_path, HISTORY)
        run = run_apply(url, migrations)
        assert run.exit_code == 0, run
        assert run.result["targetRevision"] == "c3"
        assert password not in run.stdout + run.stderr
        assert quote(password, safe="") not in run.stdout + run.stderr
    finally:
        pg_server.drop_database(name)
        with pg_server.admin() as conn:
            conn.execute(f"DROP ROLE {role}")
