"""The stage framework (voxelfm.core.stages): checked outputs, skip on re-run, re-run on damage or
config change. ``voxelfm demo`` is its user; these tests use a config of their own."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from voxelfm.core.stages import CheckResult, Pipeline, Stage, StageContext, StageError, read_timings


@dataclass(frozen=True)
class Config:
    """Two parts: ``n_scans`` (read by the writer) and ``offset`` (by the summer)."""

    n_scans: int = 5
    offset: int = 0

    def fingerprint(self, part: str) -> str:
        return hashlib.sha256(json.dumps(getattr(self, part)).encode()).hexdigest()[:16]


Ctx = StageContext[Config]


class WriteNumbers(Stage):
    name = "numbers"
    title = "write numbers"
    config_parts = ("n_scans",)

    def __init__(self) -> None:
        self.calls = 0

    def outputs(self, ctx: Ctx) -> list[Path]:
        return [ctx.path("numbers.json")]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        self.calls += 1
        n = ctx.config.n_scans
        ctx.path("numbers.json").write_text(json.dumps(list(range(n))))
        return {"n": n}

    def check(self, ctx: Ctx) -> CheckResult:
        res = CheckResult()
        try:
            data = json.loads(ctx.path("numbers.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            res.problems.append(f"numbers.json unreadable: {exc}")
            return res
        res.require(len(data) == ctx.config.n_scans, "numbers.json has the wrong length")
        return res


class SumNumbers(Stage):
    name = "sum"
    title = "sum them"
    inputs = ("numbers",)
    config_parts = ("offset",)

    def __init__(self, broken: bool = False) -> None:
        self.calls = 0
        self.broken = broken

    def outputs(self, ctx: Ctx) -> list[Path]:
        return [ctx.path("sum.txt")]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        self.calls += 1
        total = sum(json.loads(ctx.path("numbers.json").read_text()))
        ctx.path("sum.txt").write_text("oops" if self.broken else str(total))
        return {"total": total}

    def check(self, ctx: Ctx) -> CheckResult:
        res = CheckResult()
        text = ctx.path("sum.txt").read_text() if ctx.path("sum.txt").exists() else ""
        res.require(text.isdigit(), "sum.txt is not a number")
        return res


def _ctx(tmp_path: Path, n: int = 5) -> Ctx:
    return Ctx(out=tmp_path / "out", config=Config(n_scans=n))


def test_rerun_skips_finished_stages_and_records_timings(tmp_path: Path) -> None:
    a, b = WriteNumbers(), SumNumbers()
    pipe = Pipeline([a, b])
    ctx = _ctx(tmp_path)
    first = pipe.run(ctx)
    assert [r.status for r in first] == ["ran", "ran"] and (a.calls, b.calls) == (1, 1)
    assert ctx.path("sum.txt").read_text() == "10"
    second = pipe.run(ctx)
    assert [r.status for r in second] == ["skipped", "skipped"] and (a.calls, b.calls) == (1, 1)
    timings = read_timings(ctx, pipe.stages)
    assert set(timings) == {"numbers", "sum"} and all(t >= 0 for t in timings.values())


def test_damaged_output_reruns_that_stage(tmp_path: Path) -> None:
    a, b = WriteNumbers(), SumNumbers()
    pipe = Pipeline([a, b])
    ctx = _ctx(tmp_path)
    pipe.run(ctx)
    ctx.path("sum.txt").write_text("")  # present but not valid
    records = pipe.run(ctx)
    assert [r.status for r in records] == ["skipped", "ran"] and (a.calls, b.calls) == (1, 2)


def test_config_change_reruns_stage_and_downstream(tmp_path: Path) -> None:
    a, b = WriteNumbers(), SumNumbers()
    pipe = Pipeline([a, b])
    pipe.run(_ctx(tmp_path, n=5))
    records = pipe.run(_ctx(tmp_path, n=6))  # n_scans changed -> numbers and (through it) sum re-run
    assert [r.status for r in records] == ["ran", "ran"]
    assert (tmp_path / "out" / "sum.txt").read_text() == "15"


def test_invalid_outputs_fail_loudly_and_leave_no_marker(tmp_path: Path) -> None:
    pipe = Pipeline([WriteNumbers(), SumNumbers(broken=True)])
    ctx = _ctx(tmp_path)
    with pytest.raises(StageError, match="sum.txt is not a number"):
        pipe.run(ctx)
    assert Pipeline.read_marker(pipe, ctx, "numbers") is not None
    assert Pipeline.read_marker(pipe, ctx, "sum") is None


def test_pipeline_validates_stage_order() -> None:
    with pytest.raises(Exception, match="do not run before"):
        Pipeline([SumNumbers(), WriteNumbers()])


class PartialWriter(Stage):
    """Writes part.txt, then fails the first time (a crash mid-stage)."""

    name = "partial"
    title = "partial"
    config_parts = ("n_scans",)

    def __init__(self) -> None:
        self.calls = 0
        self.seen_partial: list[bool] = []

    def outputs(self, ctx: Ctx) -> list[Path]:
        return [ctx.path("partial")]

    def run(self, ctx: Ctx) -> dict[str, Any]:
        self.calls += 1
        folder = ctx.path("partial")
        self.seen_partial.append((folder / "part.txt").exists())
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part.txt").write_text(str(ctx.config.n_scans))
        if self.calls == 1:
            raise StageError("simulated crash")
        (folder / "done.txt").write_text("ok")
        return {}

    def check(self, ctx: Ctx) -> CheckResult:
        res = CheckResult()
        res.require(ctx.path("partial", "done.txt").is_file(), "not finished")
        return res


def test_interrupted_stage_resumes_from_partial_outputs_of_the_same_config(tmp_path: Path) -> None:
    stage = PartialWriter()
    ctx = _ctx(tmp_path)
    with pytest.raises(StageError, match="simulated crash"):
        Pipeline([stage]).run(ctx)
    Pipeline([stage]).run(ctx)
    assert stage.seen_partial == [False, True]  # the partial work was kept for the component to resume


def test_outputs_of_another_config_or_a_forced_stage_are_cleared(tmp_path: Path) -> None:
    stage = PartialWriter()
    with pytest.raises(StageError):
        Pipeline([stage]).run(_ctx(tmp_path, n=5))
    Pipeline([stage]).run(_ctx(tmp_path, n=6))  # another config: never resume from n=5 outputs
    assert stage.seen_partial == [False, False]
    (tmp_path / "out" / "partial" / "stray.txt").write_text("x")
    Pipeline([stage]).run(_ctx(tmp_path, n=6), force=["partial"])
    assert stage.seen_partial == [False, False, False]
    assert not (tmp_path / "out" / "partial" / "stray.txt").exists()


def test_stage_after_a_rerun_stage_reruns(tmp_path: Path) -> None:
    a, b = WriteNumbers(), SumNumbers()
    pipe = Pipeline([a, b])
    ctx = _ctx(tmp_path)
    pipe.run(ctx)
    ctx.path("numbers.json").write_text("[1, 2")  # damaged upstream output, same config
    records = pipe.run(ctx)
    assert [r.status for r in records] == ["ran", "ran"] and (a.calls, b.calls) == (2, 2)


def test_check_reads_json_objects_and_records_what_is_wrong(tmp_path: Path) -> None:
    good, bad, listed = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "list.json"
    good.write_text('{"a": 1}')
    bad.write_text('{"a": ')
    listed.write_text("[1, 2]")
    res = CheckResult()
    assert res.read_json(good) == {"a": 1} and res.ok
    assert res.read_json(bad) is None and res.read_json(listed) is None
    assert res.read_json(tmp_path / "absent.json") is None
    assert [p.split(":")[0] for p in res.problems] == [str(bad), str(listed), str(tmp_path / "absent.json")]
    assert "not a JSON object" in res.problems[1] and not res.ok
