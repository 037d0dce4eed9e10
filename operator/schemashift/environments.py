"""The environments a project runs in (each its own safety policy), declared once.

A leaf module (no imports of ours, nothing heavy): the CLI, the project, the option table, the
SchemaMigration spec and the CRD (tools/gen_crd.py) all take the names and the default from here.
"""

from __future__ import annotations

from typing import Literal, get_args

Environment = Literal["development", "staging", "production"]
ENVIRONMENTS: tuple[str, ...] = get_args(Environment)
DEFAULT: Environment = "development"
