"""The runner's outputs in local mode and the Job's termination message."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from schemashift import progress
from schemashift.progress import Reporter, RunResult

_FINAL_PHASES = ("Succeeded", "Failed", "RolledBack")


class HumanReporter:
    """Local mode without --json: one short line per event; the failure itself on stderr."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def emit(self, event: str, **fields: Any) -> None:
        line = self._line(event, fields)
        if line is None:
            return
        failed = event == "result" and fields.get("exitCode") not in (0, None)
        stream = self.err if failed else self.out
        stream.write(line + "\n")
        stream.flush()

    def _line(self, event: str, fields: dict[str, Any]) -> str | None:
        if event == "phase":
            if fields.get("phase") in _FINAL_PHASES:
                return None  # the result line that follows says it
            return f"[{fields.get('phase')}] {fields.get('message', '')}"
        if event == "plan":
            return _plan_lines(fields.get("plan") or {})
        if event == "stage":
            attempts = fields.get("attempts") or 0
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            detail = f": {fields['message']}" if fields.get("message") else ""
            return f"  stage {fields.get('name')} → {fields.get('revision')}: " \
                   f"{fields.get('state')}{tries}{detail}"
        if event == "lock_retry":
            return f"  lock timeout (attempt {fields.get('attempt')}), retrying in " \
                   f"{fields.get('wait_seconds')}s: {fields.get('message')}"
        if event == "result":
            prefix = "" if fields.get("exitCode") == 0 else "error: "
            return f"{prefix}{fields.get('outcome')} ({fields.get('reason')}): " \
                   f"{fields.get('message')}"
        details = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"  {event}: {details}"


def _plan_lines(data: dict[str, Any]) -> str:
    revisions = data.get("revisions") or []
    lines = [f"  plan: {len(revisions)} revision(s), {len(data.get('stages') or [])} stage(s), "
             f"hash {str(data.get('hash', ''))[:12]}"]
    for finding in data.get("lint") or []:
        lines.append(f"  lint {finding.get('severity')} [{finding.get('rule')}] "
                     f"{finding.get('revision')}: {finding.get('message')}")
    for finding in data.get("integrity") or []:
        lines.append(f"  integrity [{finding.get('check')}] {finding.get('message')}")
    return "\n".join(lines)


def local_reporter(as_json: bool) -> Reporter:
    return progress.JsonLinesReporter() if as_json else HumanReporter()


def write_termination_message(result: RunResult, path: Path | str) -> None:
    """The pod's termination message: the operator's authority on how the run ended."""
    target = Path(path)
    try:
        target.write_text(result.termination_message())
    except OSError as exc:
        print(f"schemashift: could not write the termination message to {target}: "
              f"{exc.strerror or exc}", file=sys.stderr)
