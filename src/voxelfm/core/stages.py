"""A resumable stage framework: ordered stages, checked outputs, re-runs only where needed.

``voxelfm demo`` is built on it; it knows nothing about the demo. A stage's config is any object
with ``fingerprint(part) -> str`` (a stable hash of one named part of it).

A stage declares its name, the stages whose outputs it reads (``inputs``), the paths it writes
(``outputs``), a ``run`` that produces them and a ``check`` that verifies they are complete and
valid (readable, the right number of entries, the right model, ...), not merely present.

When a stage finishes, the pipeline writes ``OUT/.stages/<name>.json`` with a fingerprint of the
part of the config the stage used and of its inputs' fingerprints, and the wall time it took.
A re-run skips a stage only when that marker matches *and* ``check`` passes again, so a stage whose
files were damaged or whose config changed is re-run, and so is everything downstream of it.

Outputs made with another config are deleted before a stage re-runs (components resume from what
they find, and must not resume from a different cohort or backbone). Outputs of an interrupted run
with the *same* config are kept, so the components' own resume logic (phantom generation,
pretraining checkpoints, the embedding store) picks up where it stopped. A ``<name>.started.json``
marker records the config a stage was started with to tell the two apart.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from rich.console import Console

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.errors import ConfigError, VoxelFMError, located
from voxelfm.core.readers import read_json


class StageError(VoxelFMError):
    """A stage failed or produced outputs that do not pass their check."""


class StageConfig(Protocol):
    """What the framework needs of a config: a stable hash of each part a stage declares it uses."""

    def fingerprint(self, part: str) -> str: ...


C = TypeVar("C", bound=StageConfig)


@dataclass
class StageContext(Generic[C]):
    """What every stage sees: where to write, the config, the device and the console."""

    out: Path
    config: C
    device: str = "cpu"
    console: Console = field(default_factory=lambda: Console(stderr=True))

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


@dataclass
class CheckResult:
    """Outcome of a stage check: ``ok`` and, when not, what is wrong."""

    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def require(self, condition: bool, problem: str) -> bool:
        if not condition:
            self.problems.append(problem)
        return condition

    def __bool__(self) -> bool:
        return self.ok

    def read_json(self, path: Path) -> dict[str, Any] | None:
        """The JSON object in ``path``, or None with the problem recorded (missing, malformed, not an
        object; :func:`voxelfm.core.readers.read_json`'s one line)."""
        try:
            return read_json(path, what="stage output")
        except VoxelFMError as exc:
            self.problems.append(str(exc))
            return None


@dataclass
class StageRecord:
    """What the pipeline remembers about one stage of one run."""

    name: str
    status: str  # "ran" | "skipped"
    seconds: float  # wall time of the run that produced the outputs
    fingerprint: str
    finished: str
    summary: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float | None = None  # CPU time of this process and its finished children

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "fingerprint": self.fingerprint,
            "finished": self.finished,
            "summary": self.summary,
        }


def cpu_time() -> float | None:
    """User + system CPU seconds of this process and its waited-for children (None off Unix)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Stage(ABC):
    """One step of a pipeline. Subclasses set ``name``, ``title``, ``inputs`` and ``config_parts``."""

    name: str = ""
    title: str = ""
    inputs: tuple[str, ...] = ()  # names of stages whose outputs this one reads
    config_parts: tuple[str, ...] = ()  # config parts this stage's outputs depend on

    @abstractmethod
    def outputs(self, ctx: StageContext[Any]) -> list[Path]:
        """Paths this stage writes (files or directories)."""

    @abstractmethod
    def run(self, ctx: StageContext[Any]) -> dict[str, Any]:
        """Produce the outputs; return a small JSON-able summary for the stage marker."""

    @abstractmethod
    def check(self, ctx: StageContext[Any]) -> CheckResult:
        """Verify the outputs are complete and valid (not just present)."""

    def own_fingerprint(self, ctx: StageContext[Any]) -> str:
        parts = {p: ctx.config.fingerprint(p) for p in self.config_parts}
        text = json.dumps({"stage": self.name, "parts": parts}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class Pipeline:
    """Runs stages in order, skipping those whose marker and check say they are done."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        names = [s.name for s in stages]
        if len(set(names)) != len(names) or not all(names):
            raise ConfigError(f"stage names must be unique and non-empty: {names}")
        for i, stage in enumerate(stages):
            unknown = [d for d in stage.inputs if d not in names[:i]]
            if unknown:
                raise ConfigError(f"stage {stage.name!r} reads {unknown}, which do not run before it")
        self.stages = list(stages)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"no stage named {name!r}; stages: {', '.join(s.name for s in self.stages)}")

    @staticmethod
    def marker_path(ctx: StageContext[Any], name: str) -> Path:
        return ctx.path(".stages", f"{name}.json")

    def fingerprint(self, ctx: StageContext[Any], stage: Stage, upstream: dict[str, str]) -> str:
        text = json.dumps(
            {"own": stage.own_fingerprint(ctx), "inputs": {d: upstream[d] for d in stage.inputs}},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @staticmethod
    def started_path(ctx: StageContext[Any], name: str) -> Path:
        return ctx.path(".stages", f"{name}.started.json")

    def read_marker(self, ctx: StageContext[Any], name: str, *, started: bool = False) -> dict[str, Any] | None:
        path = self.started_path(ctx, name) if started else self.marker_path(ctx, name)
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def stale_outputs(self, ctx: StageContext[Any], stage: Stage, fingerprint: str, forced: bool) -> bool:
        """Whether existing outputs were made with another config (or the user forced a re-run)."""
        if forced:
            return True
        for marker in (self.read_marker(ctx, stage.name), self.read_marker(ctx, stage.name, started=True)):
            if marker is not None and marker.get("fingerprint") != fingerprint:
                return True
        return False

    @staticmethod
    def clear_outputs(ctx: StageContext[Any], stage: Stage) -> None:
        """Delete a stage's outputs (only ever inside the output directory)."""
        root = ctx.out.resolve()
        for path in stage.outputs(ctx):
            target = path.resolve()
            if root not in target.parents:
                raise StageError(f"stage {stage.name!r} output {target} lies outside {root}; not deleting it")
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    def is_done(self, ctx: StageContext[Any], stage: Stage, fingerprint: str) -> tuple[bool, str]:
        """Whether ``stage`` can be skipped, and why not when it cannot."""
        marker = self.read_marker(ctx, stage.name)
        if marker is None:
            return False, "not run yet"
        if marker.get("fingerprint") != fingerprint:
            return False, "its config or inputs changed"
        result = stage.check(ctx)
        if not result.ok:
            return False, "outputs failed their check: " + "; ".join(result.problems[:3])
        return True, ""

    def run(self, ctx: StageContext[Any], *, force: Sequence[str] = ()) -> list[StageRecord]:
        """Run (or skip) every stage in order; ``force`` re-runs the named stages and what follows."""
        ctx.out.mkdir(parents=True, exist_ok=True)
        for name in force:
            self.stage(name)  # validates the names early
        upstream: dict[str, str] = {}
        records: list[StageRecord] = []
        forcing = False
        ran: set[str] = set()
        total = len(self.stages)
        for i, stage in enumerate(self.stages, start=1):
            fingerprint = self.fingerprint(ctx, stage, upstream)
            upstream[stage.name] = fingerprint
            forcing = forcing or stage.name in force
            header = f"[{i}/{total}] {stage.title or stage.name}"
            remade = [d for d in stage.inputs if d in ran]
            if forcing:
                done, why = False, "forced"
            elif remade:
                # Its inputs were just re-made: outputs computed from the old ones are stale.
                done, why = False, f"{', '.join(remade)} re-ran"
            else:
                done, why = self.is_done(ctx, stage, fingerprint)
            if done:
                marker = self.read_marker(ctx, stage.name) or {}
                ctx.console.print(f"[dim]{header}: done earlier ({marker.get('seconds', 0):.1f} s), skipped[/]")
                records.append(
                    StageRecord(stage.name, "skipped", float(marker.get("seconds", 0.0)), fingerprint,
                                str(marker.get("finished", "")), dict(marker.get("summary", {})),
                                marker.get("cpu_seconds"))
                )
                continue
            ctx.console.rule(f"[bold]{header}[/]" + (f" [dim]({why})[/]" if why != "not run yet" else ""))
            ran.add(stage.name)
            if self.stale_outputs(ctx, stage, fingerprint, forcing or bool(remade)):
                self.clear_outputs(ctx, stage)
            self.marker_path(ctx, stage.name).unlink(missing_ok=True)
            atomic_write_text(self.started_path(ctx, stage.name), json.dumps({"fingerprint": fingerprint}))
            start, cpu_start = time.perf_counter(), cpu_time()
            try:
                summary = stage.run(ctx) or {}
            except VoxelFMError as exc:
                raise StageError(f"stage {stage.name!r} failed: {exc}") from exc
            seconds = time.perf_counter() - start
            cpu_end = cpu_time()
            cpu = None if cpu_start is None or cpu_end is None else round(cpu_end - cpu_start, 2)
            result = stage.check(ctx)
            if not result.ok:
                raise StageError(
                    located(ctx.out, f"stage {stage.name!r} finished but its outputs are invalid: "
                            + "; ".join(result.problems))
                )
            record = StageRecord(stage.name, "ran", seconds, fingerprint,
                                 datetime.now(UTC).isoformat(timespec="seconds"), _jsonable(summary), cpu)
            atomic_write_text(self.marker_path(ctx, stage.name), json.dumps(record.to_dict(), indent=2))
            self.started_path(ctx, stage.name).unlink(missing_ok=True)
            cpu_text = f", {cpu:.0f} CPU-s" if cpu is not None else ""
            ctx.console.print(f"[green]✓[/] {stage.name} finished in {seconds:.1f} s{cpu_text}")
            records.append(record)
        return records


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for stage outputs: numpy/torch scalars as Python numbers, else ``str``."""
    return obj.item() if hasattr(obj, "item") else str(obj)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON so a marker never fails to write on a stray numpy value."""
    return json.loads(json.dumps(data, default=json_default))


def read_timings(ctx: StageContext[Any], stages: Sequence[Stage], key: str = "seconds") -> dict[str, float]:
    """Wall time (``key="seconds"``) or CPU time (``"cpu_seconds"``) of the run that produced each
    finished stage's outputs (from the markers)."""
    timings: dict[str, float] = {}
    for stage in stages:
        path = Pipeline.marker_path(ctx, stage.name)
        try:
            timings[stage.name] = float(json.loads(path.read_text())[key])
        except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError):
            continue
    return timings


def read_summary(ctx: StageContext[Any], name: str) -> dict[str, Any]:
    """The summary a finished stage recorded in its marker (empty when there is none)."""
    try:
        return dict(json.loads(Pipeline.marker_path(ctx, name).read_text()).get("summary") or {})
    except (OSError, ValueError, AttributeError, json.JSONDecodeError):
        return {}


__all__ = ["CheckResult", "Pipeline", "Stage", "StageConfig", "StageContext", "StageError", "StageRecord", "cpu_time",
           "read_summary", "read_timings"]
