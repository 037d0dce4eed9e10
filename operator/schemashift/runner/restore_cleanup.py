"""What `restore --clean` drops before the backup is restored: every user object, whatever the
run that followed the backup created (a foreign key onto an older table, a new enum type,
schema, extension …), so the result is the backup itself.

`pg_restore --clean` drops only what the archive contains, in the archive's order: a foreign
key added later onto one of its tables makes it fail (`cannot drop constraint … other objects
depend on it`). Here everything is dropped with CASCADE instead, by one DO block that reads the
catalogs inside the restore's own transaction, so a failure anywhere undoes the drops too.
Extension members stay (their extension owns them); extensions go when the restoring role owns
them (the archive recreates its own), and schemas go unless an extension that stays lives there.
"""

from __future__ import annotations

_USER_SCHEMA = "{n}.nspname <> 'information_schema' AND {n}.nspname NOT LIKE 'pg\\_%'"
_NOT_MEMBER = ("NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = "
               "'pg_catalog.{catalog}'::pg_catalog.regclass AND e.objid = {oid} "
               "AND e.deptype = 'e')")

# Extensions the restoring role may drop: the archive recreates its own (CREATE EXTENSION IF
# NOT EXISTS), so one created after the backup goes. Others (a DBA's) stay as they are.
_OURS = ("pg_catalog.pg_has_role(x.extowner, 'USAGE') AND x.extname <> 'plpgsql'")

# Statements in dependency order, all computed before the first runs (a DROP … CASCADE may
# remove later ones: IF EXISTS makes those no-ops).
_STATEMENTS = f"""
SELECT 1, format('DROP EXTENSION IF EXISTS %I CASCADE', x.extname)
  FROM pg_catalog.pg_extension x WHERE {_OURS}
UNION ALL
SELECT 2, format('DROP %s IF EXISTS %I.%I CASCADE',
                 CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                      WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                 n.nspname, c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER_SCHEMA.format(n='n')}
   AND {_NOT_MEMBER.format(catalog='pg_class', oid='c.oid')}
UNION ALL
SELECT 3, format('DROP SEQUENCE IF EXISTS %I.%I CASCADE', n.nspname, c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'S' AND {_USER_SCHEMA.format(n='n')}
   AND {_NOT_MEMBER.format(catalog='pg_class', oid='c.oid')}
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend i WHERE i.classid =
                   'pg_catalog.pg_class'::pg_catalog.regclass AND i.objid = c.oid
                   AND i.deptype = 'i')
UNION ALL
SELECT 3, format('DROP %s IF EXISTS %I.%I CASCADE',
                 CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname)
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE (t.typtype IN ('e', 'd', 'r')
        OR (t.typtype = 'c' AND (SELECT relkind FROM pg_catalog.pg_class
                                 WHERE oid = t.typrelid) = 'c'))
   AND {_USER_SCHEMA.format(n='n')} AND {_NOT_MEMBER.format(catalog='pg_type', oid='t.oid')}
UNION ALL
SELECT 4, format('DROP ROUTINE IF EXISTS %I.%I(%s) CASCADE', n.nspname, p.proname,
                 pg_catalog.pg_get_function_identity_arguments(p.oid))
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE {_USER_SCHEMA.format(n='n')} AND {_NOT_MEMBER.format(catalog='pg_proc', oid='p.oid')}
UNION ALL
SELECT 5, format('DROP SCHEMA IF EXISTS %I CASCADE', n.nspname)
  FROM pg_catalog.pg_namespace n
 WHERE {_USER_SCHEMA.format(n='n')} AND n.nspname <> 'public'
   AND {_NOT_MEMBER.format(catalog='pg_namespace', oid='n.oid')}
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension x WHERE x.extnamespace = n.oid
                   AND NOT ({_OURS}))
"""

_BLOCK = """DO $schemashift_clean$
DECLARE
  statements text[];
  statement text;
BEGIN
  SELECT coalesce(array_agg(s ORDER BY step, s), '{{}}') INTO statements
    FROM ({query}) AS drops(step, s);
  FOREACH statement IN ARRAY statements LOOP
    EXECUTE statement;
  END LOOP;
  PERFORM pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata;
END
$schemashift_clean$;
"""


def cleanup_sql() -> str:
    """One DO block dropping every user object."""
    return "SET client_min_messages = warning;\n" + _BLOCK.format(query=_STATEMENTS.strip())
