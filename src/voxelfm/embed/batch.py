"""Batch embedding: many scans → an :class:`EmbeddingStore`, resumable, sharded, with worker processes.

Reading and preprocessing run in ``torch.utils.data.DataLoader`` worker processes while the main
process runs the backbone, so I/O overlaps compute. Scans already embedded OK with the same
model id, spec fingerprint and mode are skipped; failures are recorded with their reason and the
run goes on.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxelfm.core.errors import ConfigError, DataError, VoxelFMError, located
from voxelfm.embed.extract import features_from_preprocessed, resolve_spec
from voxelfm.embed.store import EmbeddingStore
from voxelfm.preprocess.spec import PreprocessSpec

_ID_COLUMNS = ("scan_id", "series_uid", "uid")


@dataclass(frozen=True)
class EmbedJob:
    scan_id: str
    source: str


@dataclass
class EmbedSummary:
    """Counts of one run; ``failures`` holds ``(scan_id, reason)``."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def scans_per_minute(self) -> float:
        return 60.0 * self.done / self.seconds if self.seconds > 0 else 0.0


# -- inputs -------------------------------------------------------------------------------------
def read_manifest_csv(path: str | os.PathLike[str]) -> list[EmbedJob]:
    """``scan_id,path`` rows (also the phantom's ``labels.csv``); relative paths are relative to the CSV."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            id_col = next((c for c in _ID_COLUMNS if c in columns), None)
            if id_col is None or "path" not in columns:
                raise DataError(located(path, f"a manifest needs columns 'scan_id' and 'path' (found {', '.join(columns) or 'none'})"))
            jobs = []
            for line, row in enumerate(reader, start=2):
                scan_id, source = (row.get(id_col) or "").strip(), (row.get("path") or "").strip()
                if not scan_id or not source:
                    raise DataError(located(path, f"line {line}: empty {id_col} or path"))
                src = Path(source)
                jobs.append(EmbedJob(scan_id, os.path.abspath(src if src.is_absolute() else path.parent / src)))
    except OSError as exc:
        raise DataError(located(path, f"cannot read manifest ({exc.strerror})")) from exc
    return jobs


def collect_jobs(inputs: Sequence[str | os.PathLike[str]]) -> list[EmbedJob]:
    """Jobs from folders/files (``voxelfm.io.discover_sources``) and CSV manifests; ids must be unique."""
    from voxelfm.io import discover_sources

    jobs: list[EmbedJob] = []
    for item in inputs:
        path = Path(item)
        if path.is_file() and path.suffix.lower() == ".csv":
            jobs += read_manifest_csv(path)
        else:
            jobs += [EmbedJob(scan_id, os.path.abspath(src)) for scan_id, src in discover_sources([path])]
    seen: dict[str, str] = {}
    duplicates = []
    for job in jobs:
        if job.scan_id in seen and seen[job.scan_id] != job.source:
            duplicates.append(f"{job.scan_id} ({seen[job.scan_id]} and {job.source})")
        seen.setdefault(job.scan_id, job.source)
    if duplicates:
        raise DataError(f"duplicate scan ids in the inputs: {'; '.join(duplicates[:5])}")
    unique = {job.scan_id: job for job in jobs}
    return sorted(unique.values(), key=lambda j: j.scan_id)


def parse_shard(text: str | None, env: dict[str, str] | None = None) -> tuple[int, int] | None:
    """``"i/n"`` → ``(i, n)``; without it, torchrun's ``RANK``/``WORLD_SIZE``; ``None`` when unsharded."""
    if text:
        try:
            index, count = (int(v) for v in text.split("/"))
        except ValueError as exc:
            raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from exc
        if not 0 <= index < count:
            raise ConfigError(f"--shard {text}: need 0 <= i < n")
        return (index, count)
    env = dict(os.environ) if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        return (int(env.get("RANK", "0") or 0), world)
    return None


def shard_jobs(jobs: Sequence[EmbedJob], shard: tuple[int, int] | None) -> list[EmbedJob]:
    """Every n-th job (by sorted scan id) starting at i: disjoint shards that cover all jobs."""
    ordered = sorted(jobs, key=lambda j: j.scan_id)
    return ordered if shard is None else ordered[shard[0]::shard[1]]


# -- workers ------------------------------------------------------------------------------------
class _PreprocessDataset:
    """Map-style dataset: job i → preprocessed volume or the reason it failed (never raises)."""

    def __init__(self, jobs: Sequence[EmbedJob], spec: dict[str, Any]) -> None:
        self.jobs = list(jobs)
        self.spec = spec

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from voxelfm.io import load_ct
        from voxelfm.preprocess import preprocess

        job = self.jobs[index]
        start = time.perf_counter()
        try:
            pre = preprocess(load_ct(job.source), PreprocessSpec.from_dict(self.spec))
            return {"job": job, "pre": pre, "error": None, "seconds": time.perf_counter() - start}
        except VoxelFMError as exc:
            return {"job": job, "pre": None, "error": str(exc), "seconds": time.perf_counter() - start}
        except Exception as exc:  # noqa: BLE001 - one bad scan must not stop a batch of thousands
            reason = located(job.source, f"{type(exc).__name__}: {exc}")
            return {"job": job, "pre": None, "error": reason, "seconds": time.perf_counter() - start}


def _identity(item: Any) -> Any:
    return item


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # workers do I/O and numpy; leave the cores to the backbone


def _loader(jobs: Sequence[EmbedJob], spec: PreprocessSpec, workers: int) -> Any:
    import torch

    dataset = _PreprocessDataset(jobs, spec.to_dict())
    if workers <= 0:
        return (dataset[i] for i in range(len(dataset)))
    # fork where available: no re-import of the caller's __main__ (spawn would need a main guard
    # in every user script); workers run single-threaded, so no OpenMP pool is shared with the parent.
    context = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity,
        worker_init_fn=_worker_init, prefetch_factor=2, multiprocessing_context=context,
    )


# -- the run ------------------------------------------------------------------------------------
def run_embedding(
    model: Any, jobs: Sequence[EmbedJob], store: EmbeddingStore | str | os.PathLike[str], *,
    spec: PreprocessSpec | None = None, mode: str = "3d", workers: int = 0,
    device: Any = None, dtype: Any = None, slab_thickness: int | None = None,
    slab_overlap: int | None = None, on_progress: Callable[[str, str], None] | None = None,
) -> EmbedSummary:
    """Embed ``jobs`` into ``store``, skipping scans already done with this model/spec/mode.

    ``on_progress(scan_id, status)`` is called once per job (status ``ok``/``failed``/``skipped``).
    """
    store = store if isinstance(store, EmbeddingStore) else EmbeddingStore(store)
    spec = resolve_spec(model, spec)
    fingerprint = spec.fingerprint()
    model_id = str(model.model_id)
    done = store.done(model_id, fingerprint, mode)
    summary = EmbedSummary()
    todo = []
    for job in jobs:
        if job.scan_id in done:
            summary.skipped += 1
            if on_progress:
                on_progress(job.scan_id, "skipped")
        else:
            todo.append(job)
    start = time.perf_counter()
    for item in _loader(todo, spec, workers):
        job: EmbedJob = item["job"]
        error = item["error"]
        seconds = item["seconds"]
        if error is None:
            t0 = time.perf_counter()
            try:
                feats = features_from_preprocessed(model, item["pre"], mode=mode, device=device, dtype=dtype,
                                                   slab_thickness=slab_thickness, slab_overlap=slab_overlap)
                store.write(job.scan_id, feats, source=job.source, seconds=seconds + time.perf_counter() - t0)
            except VoxelFMError as exc:
                error = str(exc)
            except (RuntimeError, ValueError, MemoryError) as exc:  # e.g. out of memory on a huge scan
                error = located(job.source, f"{type(exc).__name__}: {exc}")
            seconds += time.perf_counter() - t0
        if error is not None:
            store.record_failure(job.scan_id, job.source, error, model_id=model_id,
                                 spec_fingerprint=fingerprint, mode=mode, seconds=seconds)
            summary.failed += 1
            summary.failures.append((job.scan_id, error))
        else:
            summary.done += 1
        if on_progress:
            on_progress(job.scan_id, "failed" if error else "ok")
    summary.seconds = time.perf_counter() - start
    return summary
