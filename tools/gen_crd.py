#!/usr/bin/env python3
"""Write the run options' fields of the CRD from their one declaration, then the chart's copy.

Source: ``schemashift.runner.options_table.SPEC_OPTIONS`` (each row's type, default,
description, bounds and the duration grammar of ``schemashift.durations``). Each row's field in
``manifests/crd/schemamigrations.yaml`` is rewritten from ``Option.crd_schema()``; a row without
one (its field's text stays the CRD's own) gets only its ``default`` from the table. The rest of
the CRD, comments and layout included, is left as written, and a field whose content already
matches is not rewritten. Then ``tools/sync_chart.py``'s CRD copy is regenerated.

Usage::

    python tools/gen_crd.py           # rewrite the CRD's option fields and the chart's copy
    python tools/gen_crd.py --check   # exit 1 and name each file that differs
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_FILE = ROOT / "manifests" / "crd" / "schemamigrations.yaml"
SCHEMA_KEY = "openAPIV3Schema"

sys.path.insert(0, str(ROOT / "operator"))  # a fresh clone without `pip install -e .` works too
sys.path.insert(0, str(ROOT / "tools"))

import sync_chart  # noqa: E402

from schemashift import durations  # noqa: E402
from schemashift.runner import options_table  # noqa: E402


class Dumper(sync_chart.Dumper):
    """The CRD file's own style: sequences indented under their key, scalar lists in flow."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _list_presenter(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.SequenceNode:
    flow = all(isinstance(item, str | int | float | bool) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


Dumper.add_representer(list, _list_presenter)


def field_path(option: options_table.Option) -> list[str]:
    """Keys from openAPIV3Schema down to the option's field: spec.safety.lockTimeout →
    properties, spec, properties, safety, properties, lockTimeout."""
    keys = ["spec", *(option.cr or "").split(".")]
    return [part for key in keys for part in ("properties", key)]


def wanted(option: options_table.Option, current: dict[str, Any]) -> dict[str, Any]:
    generated = option.crd_schema()
    if generated is not None:
        return generated
    default = option.crd_default()
    return current if default is None else {**current, "default": default}


def _content(lines: Sequence[str], index: int) -> int | None:
    """The indentation of line `index`, or None for a blank or comment line."""
    text = lines[index]
    stripped = text.lstrip(" ")
    return None if not stripped.strip() or stripped.startswith("#") else len(text) - len(stripped)


def _block_end(lines: Sequence[str], start: int, indent: int) -> int:
    """One past the last content line of the mapping entry at `start`."""
    end = start + 1
    for index in range(start + 1, len(lines)):
        found = _content(lines, index)
        if found is not None:
            if found <= indent:
                break
            end = index + 1
    return end


def locate(lines: Sequence[str], keys: Iterable[str]) -> tuple[int, int, int]:
    """(first line, end, indentation) of the block-style entry at `keys` under openAPIV3Schema."""
    starts = [i for i, line in enumerate(lines) if line.strip() == f"{SCHEMA_KEY}:"]
    if len(starts) != 1:
        raise SystemExit(f"{sync_chart.rel(CRD_FILE)}: expected one '{SCHEMA_KEY}:' line")
    start, indent = starts[0], _content(lines, starts[0]) or 0
    for key in keys:
        end = _block_end(lines, start, indent)
        children = [(i, found) for i in range(start + 1, end)
                    if (found := _content(lines, i)) is not None]
        child_indent = min(found for _, found in children)
        matches = [i for i, found in children
                   if found == child_indent and lines[i].strip().startswith(f"{key}:")]
        if not matches:
            raise SystemExit(f"{sync_chart.rel(CRD_FILE)}: no '{key}:' at line {start + 1}'s "
                             "level (the option's field must exist, in block style)")
        start, indent = matches[0], child_indent
    return start, _block_end(lines, start, indent), indent


def node(schema: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    for key in keys:
        schema = schema[key]
    return schema


def block_text(key: str, schema: dict[str, Any], indent: int) -> list[str]:
    text = yaml.dump({key: schema}, Dumper=Dumper, sort_keys=False, width=4096,
                     allow_unicode=True)
    return [" " * indent + line for line in text.splitlines(True)]


def generate(text: str) -> str:
    """The CRD text with each option's field as the table declares it."""
    lines = text.splitlines(True)
    for option in (*options_table.SPEC_OPTIONS, options_table.ENVIRONMENT):
        (version,) = yaml.safe_load("".join(lines))["spec"]["versions"]
        keys = field_path(option)
        current = node(version["schema"][SCHEMA_KEY], keys)
        schema = wanted(option, current)
        if schema != current:
            start, end, indent = locate(lines, keys)
            lines[start:end] = block_text(keys[-1], schema, indent)
    return "".join(lines)


HOOK = sync_chart.ROOT / "charts" / "schemashift-hook"
HOOK_DURATIONS = HOOK / "templates" / "_durations.tpl"
HOOK_SCHEMA = HOOK / "values.schema.json"
_HOOK_DURATION_TEMPLATE = """\
{{{{- /* Generated by tools/gen_crd.py from operator/schemashift/durations.py: do not edit.
The seconds of a duration in the grammar of the runner, `schemashift wait` and the CRD (Go's),
rounded up. */ -}}}}
{{{{- define "schemashift-hook.durationSeconds" -}}}}
{{{{- $text := toString . -}}}}
{{{{- if not (regexMatch {pattern} $text) -}}}}
{{{{- fail (printf "waiter.timeout %q is not a duration: {hint}" $text) -}}}}
{{{{- end -}}}}
{{{{- $factors := dict {factors} -}}}}
{{{{- $total := 0.0 -}}}}
{{{{- range regexFindAll {part} $text -1 -}}}}
{{{{- $unit := regexFind {unit} . -}}}}
{{{{- $total = addf $total (mulf (float64 (trimSuffix $unit .)) (get $factors $unit)) -}}}}
{{{{- end -}}}}
{{{{- ceil $total | int -}}}}
{{{{- end -}}}}
"""


def hook_duration_template() -> str:
    factors = " ".join(f"{json.dumps(unit, ensure_ascii=False)} {seconds!r}"
                       for unit, seconds in durations.unit_seconds().items())
    quoted = {k: json.dumps(v, ensure_ascii=False) for k, v in {
        "pattern": durations.PATTERN, "part": durations.PART,
        "unit": f"({'|'.join(durations.UNITS)})$"}.items()}
    return _HOOK_DURATION_TEMPLATE.format(factors=factors, hint=durations.HINT, **quoted)


def hook_schema() -> str:
    schema = json.loads(HOOK_SCHEMA.read_text())
    timeout = schema["properties"]["waiter"]["properties"]["timeout"]
    timeout["pattern"] = durations.PATTERN.replace("^(", "^(|", 1)  # empty: the default
    timeout["description"] = (f"How long the waiter waits, a duration ({durations.EXAMPLES}); "
                              "empty: deadlineSeconds + 5m.")
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def outputs() -> dict[Path, str]:
    """Every file this writes, as it would write it (the chart's copy from the new CRD)."""
    crd = generate(CRD_FILE.read_text())
    chart_copy = sync_chart.CHART / "templates" / "crds" / CRD_FILE.name
    return {CRD_FILE: crd, chart_copy: sync_chart.crd_template(CRD_FILE, yaml.safe_load(crd)),
            HOOK_DURATIONS: hook_duration_template(), HOOK_SCHEMA: hook_schema()}


def stale() -> list[str]:
    return sync_chart.stale(outputs())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 naming each file that differs")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for problem in problems:
            print(f"stale: {problem}")
        if problems:
            print("run: python tools/gen_crd.py (then python tools/gen_docs.py)")
        return 1 if problems else 0
    files = outputs()
    sync_chart.write(files)
    for path in sorted(files):
        print(f"generated {sync_chart.rel(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
