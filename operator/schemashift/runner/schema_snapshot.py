"""The schema as the catalogs say it, to tell whether a rollback really put it back.

A snapshot maps (kind, qualified name) to the object's attributes, e.g.
("column", "public.t.c") -> (("type", "character varying(50)"), ("nullability", "nullable"), …).
Nothing in it depends on OIDs or physical order, so a database restored from a dump of the
same schema gives an equal snapshot. Alembic's version table is left out: a downgrade to base
keeps it (empty), and its content is the revision, which the report reads separately.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemashift.runner import copy_catalog

VERSION_TABLE = "alembic_version"
MAX_LISTED = 25

Key = tuple[str, str]
Attributes = tuple[tuple[str, str], ...]
Snapshot = Mapping[Key, tuple[str, Attributes]]  # key -> (parent table or "", attributes)
# (kind, name, parent, attribute, was, now) -> the two texts print the same thing
Same = Callable[[str, str, str, str, str, str], bool]

# schemashift's catalog of targeted copies (runner/copy_catalog.py) is bookkeeping, like the
# version table: created by the run before this snapshot, it may be gone after a restore.
_USER_SCHEMA = ("{n}.nspname <> 'information_schema' AND {n}.nspname NOT LIKE 'pg\\_%' "
                f"AND {{n}}.nspname <> '{copy_catalog.SCHEMA}'")
_NOT_EXTENSION_MEMBER = ("NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = "
                         "'{catalog}'::regclass AND e.objid = {oid} AND e.deptype = 'e')")


def _where(n: str, catalog: str, oid: str) -> str:
    return (_USER_SCHEMA.format(n=n) + " AND "
            + _NOT_EXTENSION_MEMBER.format(catalog=catalog, oid=oid))


_RELATION_KINDS = """CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
    WHEN 'f' THEN 'foreign table' ELSE 'table' END"""
_TABLE = "n.nspname || '.' || c.relname"

# A serial's or identity column's sequence goes with its table.
_OWNING_TABLE = """(SELECT tn.nspname || '.' || tc.relname FROM pg_depend d
    JOIN pg_class tc ON tc.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1)"""

# Each query: kind, qualified name, parent table ('' for none), then (attribute, value) pairs
# flattened as name1, value1, name2, value2, …
_QUERIES = [
    f"""SELECT 'schema', n.nspname, '' FROM pg_namespace n
        WHERE {_where('n', 'pg_namespace', 'n.oid')}""",
    """SELECT 'extension', x.extname, '', 'version', x.extversion,
              'schema', x.extnamespace::regnamespace::text FROM pg_extension x""",
    f"""SELECT {_RELATION_KINDS}, {_TABLE}, '',
              'definition', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
              'persistence', c.relpersistence::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_where('n', 'pg_class', 'c.oid')}""",
    f"""SELECT 'column', {_TABLE} || '.' || a.attname, {_TABLE},
              'type', format_type(a.atttypid, a.atttypmod),
              'nullability', CASE WHEN a.attnotnull THEN 'not null' ELSE 'nullable' END,
              'default', coalesce(pg_get_expr(d.adbin, d.adrelid), 'none'),
              'identity', a.attidentity::text, 'generated', a.attgenerated::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND {_where('n', 'pg_class', 'c.oid')}""",
    f"""SELECT 'constraint', {_TABLE} || '.' || k.conname, {_TABLE},
              'definition', pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_where('n', 'pg_class', 'c.oid')}""",
    f"""SELECT 'index', n.nspname || '.' || i.relname, {_TABLE},
              'definition', pg_get_indexdef(x.indexrelid),
              'validity', CASE WHEN x.indisvalid THEN 'valid' ELSE 'invalid' END
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_where('n', 'pg_class', 'c.oid')}""",
    f"""SELECT 'trigger', {_TABLE} || '.' || t.tgname, {_TABLE},
              'definition', pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {_where('n', 'pg_class', 'c.oid')}""",
    f"""SELECT 'sequence', {_TABLE}, coalesce({_OWNING_TABLE}, ''),
              'type', format_type(s.seqtypid, NULL),
              'increment', s.seqincrement::text, 'minimum', s.seqmin::text,
              'maximum', s.seqmax::text, 'start', s.seqstart::text,
              'cycle', s.seqcycle::text
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_where('n', 'pg_class', 'c.oid')}""",
    f"""SELECT CASE t.typtype WHEN 'e' THEN 'enum type' WHEN 'd' THEN 'domain'
                   WHEN 'r' THEN 'range type' ELSE 'type' END,
              n.nspname || '.' || t.typname, '',
              'values', (SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
                         FROM pg_enum e WHERE e.enumtypid = t.oid),
              'base type', CASE WHEN t.typtype = 'd'
                                THEN format_type(t.typbasetype, t.typtypmod) END,
              'nullability', CASE WHEN t.typnotnull THEN 'not null' ELSE 'nullable' END
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE (t.typtype IN ('e', 'd', 'r')
               OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid)
                   = 'c'))
          AND {_where('n', 'pg_type', 't.oid')}""",
    f"""SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate'
                   ELSE 'function' END,
              n.nspname || '.' || p.proname || '('
                  || pg_get_function_identity_arguments(p.oid) || ')', '',
              'result', pg_get_function_result(p.oid), 'body', md5(coalesce(p.prosrc, ''))
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {_where('n', 'pg_proc', 'p.oid')}""",
]


def take(connection: Connection) -> dict[Key, tuple[str, Attributes]]:
    """The schema now, read in one transaction (rolled back: it takes no lock past reading)."""
    snapshot: dict[Key, tuple[str, Attributes]] = {}
    try:
        for query in _QUERIES:
            for row in connection.execute(sa.text(query)):
                kind, name, parent, *flat = (None if v is None else str(v) for v in row)
                assert kind is not None and name is not None
                if _is_version_table(name if parent in (None, "") else parent, kind):
                    continue
                pairs = tuple((str(flat[i]), flat[i + 1] or "none")
                              for i in range(0, len(flat), 2))
                snapshot[(kind, name)] = (parent or "", pairs)
    finally:
        connection.rollback()
    return snapshot


def _is_version_table(qualified: str | None, kind: str) -> bool:
    if qualified is None or kind not in (
            "table", "column", "constraint", "index", "trigger", "sequence"):
        return False
    return qualified.split(".", 1)[-1].split(".", 1)[0] == VERSION_TABLE


def differences(before: Snapshot, after: Snapshot, same: Same | None = None) -> list[str]:
    """What differs, worded from `after`'s side: "table public.x still exists",
    "table public.y is missing", "column public.t.c type varchar(200), was varchar(50)".
    Columns, constraints, indexes and triggers of a table that is itself new or missing are
    not listed again."""
    added = after.keys() - before.keys()
    missing = before.keys() - after.keys()
    whole = {name for kind, name in added | missing if kind in _TABLE_KINDS}
    lines: list[str] = []
    for key in sorted(added | missing | (before.keys() & after.keys())):
        kind, name = key
        source = after if key in after else before
        if source[key][0] in whole:
            continue
        if key in added:
            lines.append(f"{kind} {name} still exists")
        elif key in missing:
            lines.append(f"{kind} {name} is missing")
        else:
            lines += _changed(kind, name, before[key], after[key], same)
    return lines


_TABLE_KINDS = {"table", "view", "materialized view", "foreign table"}


def _changed(kind: str, name: str, was: tuple[str, Attributes], now: tuple[str, Attributes],
             same: Same | None) -> list[str]:
    old = dict(was[1])
    return [f"{kind} {name} {attribute} {value}, was {old.get(attribute, 'none')}"
            for attribute, value in now[1] if old.get(attribute) != value
            and not (same and same(kind, name, now[0], attribute, old.get(attribute, "none"),
                                   value))]


def summary(lines: list[str]) -> str:
    if len(lines) <= MAX_LISTED:
        return "; ".join(lines)
    return "; ".join(lines[:MAX_LISTED]) + f"; and {len(lines) - MAX_LISTED} more"
