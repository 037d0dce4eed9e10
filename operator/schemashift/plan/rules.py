"""The lint rules: each one's name, severity, what it is harmless on, and its safe alternative.

Severity: `error` when the operation loses data, rewrites the table under an ACCESS EXCLUSIVE
lock, fails outright on a table with rows, or leaves a name that is not the one written;
`warning` when it takes a long-held lock that an alternative avoids, or breaks the running
application. Every rule name here is also what `--allow`, `spec.safety.allow` and a revision's
own `schemashift = {"allow": [...]}` accept.
"""

from __future__ import annotations

ERROR = "error"
WARNING = "warning"

RULES: dict[str, str] = {
    "add-not-null-column-without-default": ERROR,
    "add-column-volatile-default": ERROR,
    "add-column-rewrites-table": ERROR,
    "change-column-type": ERROR,
    "drop-table": ERROR,
    "drop-column": ERROR,
    "concurrently-outside-autocommit-block": ERROR,
    "identifier-too-long": ERROR,
    "create-index-not-concurrently": WARNING,
    "drop-index-not-concurrently": WARNING,
    "add-foreign-key-validated": WARNING,
    "add-unique-constraint": WARNING,
    "add-primary-key": WARNING,
    "add-check-constraint": WARNING,
    "add-exclusion-constraint": WARNING,
    "drop-constraint": WARNING,
    "set-not-null": WARNING,
    "rename-table": WARNING,
    "rename-column": WARNING,
    "unrenderable-revision": WARNING,
    "integrity-check-incomplete": WARNING,
}
INTEGRITY_CHECK_INCOMPLETE = "integrity-check-incomplete"
UNRENDERABLE = "unrenderable-revision"
# Harmless on a table without rows: the lock is brief, the rewrite or scan instant.
ROW_RULES = frozenset({
    "add-not-null-column-without-default", "add-column-volatile-default",
    "add-column-rewrites-table", "change-column-type", "create-index-not-concurrently",
    "drop-index-not-concurrently", "add-foreign-key-validated", "add-unique-constraint",
    "add-primary-key", "add-check-constraint", "add-exclusion-constraint", "set-not-null",
})
# Lose data or break running readers: harmless only where nothing holds data or reads it yet.
READER_RULES = frozenset({"drop-table", "drop-column", "rename-table", "rename-column",
                          "drop-constraint"})

# No lock-safe form makes these in one step on a table running code uses: they need an
# expand/contract release (the generator marks them in the file, `plan` lists them).
EXPAND_CONTRACT = frozenset({"drop-table", "drop-column", "change-column-type", "rename-table",
                             "rename-column"})

_AUTOCOMMIT = "`with op.get_context().autocommit_block():`"
_OWN_TRANSACTION = (f"in its own transaction ({_AUTOCOMMIT}, or a later revision) run "
                    "ALTER TABLE … VALIDATE CONSTRAINT, which does not block writes")

SAFE = {
    "add-not-null-column-without-default": (
        "add it nullable (or with a constant server_default, which PostgreSQL 11+ stores "
        "without a rewrite), backfill in batches, then set NOT NULL (see set-not-null)"),
    "add-column-volatile-default": (
        "add the column without a default (or with a constant one), set the default for new "
        "rows with ALTER COLUMN SET DEFAULT, and backfill existing rows in batches"),
    "add-column-rewrites-table": (
        "add a plain nullable column, backfill it in batches, then attach the sequence "
        "(ALTER COLUMN SET DEFAULT nextval(…), or ADD GENERATED … AS IDENTITY on the filled "
        "column); for a computed value use a virtual generated column (PostgreSQL 18+: "
        "sa.Computed(...) without persisted=True) or fill it in application code or a trigger"),
    "change-column-type": (
        "add a new column of the new type, write both, backfill in batches, switch readers, "
        "then drop the old column (growing a varchar or varchar→text needs no rewrite)"),
    "drop-table": (
        "first deploy code that no longer uses it, take a backup, and drop it in a later "
        "release (or rename it aside and drop after a grace period)"),
    "drop-column": (
        "first deploy code that no longer reads or writes it (SQLAlchemy: remove it from the "
        "model, or mark it deferred), then drop it in a later release"),
    "concurrently-outside-autocommit-block": (
        f"wrap it in {_AUTOCOMMIT} — CONCURRENTLY cannot run inside a transaction"),
    "identifier-too-long": (
        "use a name of at most 63 bytes (UTF-8): PostgreSQL silently truncates longer ones, so "
        "the database's name differs from the one in the models and revisions, and two long "
        "names can collide"),
    "create-index-not-concurrently": (
        f"use op.create_index(..., postgresql_concurrently=True) inside {_AUTOCOMMIT}"),
    "drop-index-not-concurrently": (
        f"use op.drop_index(..., postgresql_concurrently=True) inside {_AUTOCOMMIT} (DROP INDEX "
        "CONCURRENTLY waits for running queries instead of blocking them)"),
    "add-foreign-key-validated": (
        f"add it with postgresql_not_valid=True (NOT VALID), then {_OWN_TRANSACTION}"),
    "add-unique-constraint": (
        f"CREATE UNIQUE INDEX CONCURRENTLY ({_AUTOCOMMIT}), then ALTER TABLE … ADD CONSTRAINT "
        "… UNIQUE USING INDEX"),
    "add-primary-key": (
        f"CREATE UNIQUE INDEX CONCURRENTLY ({_AUTOCOMMIT}), make its columns NOT NULL the safe "
        "way (see set-not-null), then ALTER TABLE … ADD CONSTRAINT … PRIMARY KEY USING INDEX"),
    "add-check-constraint": (
        f"add it with postgresql_not_valid=True (NOT VALID), then {_OWN_TRANSACTION}"),
    "add-exclusion-constraint": (
        "there is no concurrent or NOT VALID form: add it while the table is new or small, or "
        "in a maintenance window with the writers stopped; review, then allow this rule in the "
        "revision (schemashift = {\"allow\": [\"add-exclusion-constraint\"]})"),
    "drop-constraint": (
        "first deploy code that no longer relies on it (ON CONFLICT targets, the uniqueness "
        "or references it guaranteed); its lock is brief, but its downgrade re-adds it the "
        "slow way; review, then allow this rule in the revision"),
    "set-not-null": (
        "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in its own transaction, "
        "then SET NOT NULL (PostgreSQL 12+ uses the valid check and skips the scan), then drop "
        "the check"),
    "rename-table": (
        "create the new name, keep the old one working (e.g. a view with the old name) until "
        "all running code uses the new name, then drop the old one"),
    "rename-column": (
        "add the new column, write both and backfill, switch readers, then drop the old "
        "column; or deploy code that tolerates both names first"),
    "unrenderable-revision": (
        "review this revision's SQL by hand (it reads rows or needs a live connection); allow "
        "this rule once reviewed"),
    "integrity-check-incomplete": "check the data by hand, then allow this rule",
}

__all__ = ["ERROR", "EXPAND_CONTRACT", "INTEGRITY_CHECK_INCOMPLETE", "READER_RULES", "ROW_RULES",
           "RULES", "SAFE", "UNRENDERABLE", "WARNING"]
