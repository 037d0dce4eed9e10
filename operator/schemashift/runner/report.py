"""The runner's outputs in local mode and the Job's termination message."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from schemashift import progress
from schemashift.events import (
    Event,
    Finished,
    LockRetried,
    PhaseEntered,
    PlanMade,
    StageChanged,
)
from schemashift.progress import Reporter, RunResult

_FINAL_PHASES = ("Succeeded", "Failed", "RolledBack")


class HumanReporter:
    """Local mode without --json: one short line per event; the failure itself on stderr."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def emit(self, event: Event) -> None:
        line = self._line(event)
        if line is None:
            return
        failed = isinstance(event, Finished) and event.result.exitCode != 0
        stream = self.err if failed else self.out
        stream.write(line + "\n")
        stream.flush()

    def _line(self, event: Event) -> str | None:
        match event:
            case PhaseEntered(phase=phase) if phase in _FINAL_PHASES:
                return None  # the result line that follows says it
            case PhaseEntered(phase=phase, message=message):
                return f"[{phase}] {message}"
            case PlanMade(plan=plan):
                return _plan_lines(plan)
            case StageChanged(stage=stage):
                tries = f" after {stage.attempts} attempts" if stage.attempts > 1 else ""
                detail = f": {stage.message}" if stage.message else ""
                return f"  stage {stage.name} → {stage.revision}: {stage.state}{tries}{detail}"
            case LockRetried(attempt=attempt, wait_seconds=wait, message=message):
                return f"  lock timeout (attempt {attempt}), retrying in {wait}s: {message}"
            case Finished(result=result):
                prefix = "" if result.exitCode == 0 else "error: "
                return f"{prefix}{result.outcome} ({result.reason}): {result.message}"
        details = " ".join(f"{k}={v}" for k, v in event.to_wire().items())
        return f"  {event.event_name()}: {details}"


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
