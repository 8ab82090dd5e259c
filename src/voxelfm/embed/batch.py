"""Batch embedding: many scans → an :class:`EmbeddingStore`, resumable, sharded, with worker processes.

Reading and preprocessing run in reader processes (:class:`voxelfm.embed.readers.ReaderPool`)
while the main process runs the backbone, so I/O overlaps compute. Scans already embedded OK with
the same model id, spec fingerprint and mode, from an unchanged source file, are skipped; failures
(a dead reader worker included) are recorded with their reason and the run goes on. One run writes
a store (manifest) at a time, and a store holds one model's embeddings unless asked otherwise.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxelfm.core.errors import ConfigError, DataError, StoreError, VoxelFMError, located
from voxelfm.core.fingerprint import source_fingerprint
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
    """Counts of one run; ``failures`` holds ``(scan_id, reason)``; ``changed`` the ids embedded
    again because their source changed; ``retried`` the ids that had failed in an earlier run."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    worker_deaths: int = 0

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


# -- reading ------------------------------------------------------------------------------------
def _read_job(job: EmbedJob, spec: dict[str, Any]) -> dict[str, Any]:
    """Read and preprocess one scan; the reason it failed instead of raising."""
    from voxelfm.io import load_ct
    from voxelfm.models.backbones import prepare_volume

    start = time.perf_counter()
    try:
        pre = prepare_volume(load_ct(job.source), spec)  # either spec kind (VoxelFM or a comparator recipe)
        return {"job": job, "pre": pre, "error": None, "seconds": time.perf_counter() - start}
    except VoxelFMError as exc:
        return {"job": job, "pre": None, "error": str(exc), "seconds": time.perf_counter() - start}
    except Exception as exc:  # noqa: BLE001 - one bad scan must not stop a batch of thousands
        reason = located(job.source, f"{type(exc).__name__}: {exc}")
        return {"job": job, "pre": None, "error": reason, "seconds": time.perf_counter() - start}


class _Reader:
    """``job -> _read_job(job, spec)``, looked up at call time (tests replace ``_read_job``)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def __call__(self, job: EmbedJob) -> dict[str, Any]:
        return _read_job(job, self.spec)


def _worker_died(job: EmbedJob, reason: str) -> dict[str, Any]:
    return {"job": job, "pre": None, "error": located(job.source, reason), "seconds": 0.0}


# -- the store's identity and what is left to do --------------------------------------------------
def check_store_identity(store: EmbeddingStore, model_id: str, *, allow_mixed_models: bool = False) -> None:
    """Refuse to add embeddings of another model to a store that holds some already.

    (Another preprocessing spec or mode of the same model is a re-embedding: every scan is redone.)
    """
    others: dict[str | None, int] = {}
    for (other, _), n in store.identities().items():
        if other != model_id:
            others[other] = others.get(other, 0) + n
    if not others or allow_mixed_models:
        return
    other_model, n = max(others.items(), key=lambda kv: kv[1])
    raise StoreError(located(
        store.path, f"holds {n} embedding(s) of model {other_model} but this run uses model {model_id}; features "
        "of different models are not comparable, so use another --out, or pass --allow-mixed-models to mix them "
        "on purpose"))


def _same_source(record: dict[str, Any], job: EmbedJob, fingerprint: str | None) -> bool:
    if record.get("source") is not None and os.path.abspath(record["source"]) != os.path.abspath(job.source):
        return False
    stored = record.get("source_fingerprint")
    return stored is None or stored == fingerprint  # stores written before fingerprints: path only


# -- the run ------------------------------------------------------------------------------------
def run_embedding(
    model: Any, jobs: Sequence[EmbedJob], store: EmbeddingStore | str | os.PathLike[str], *,
    spec: PreprocessSpec | None = None, mode: str = "3d", workers: int = 0,
    device: Any = None, dtype: Any = None, slab_thickness: int | None = None,
    slab_overlap: int | None = None, on_progress: Callable[[str, str], None] | None = None,
    allow_mixed_models: bool = False,
) -> EmbedSummary:
    """Embed ``jobs`` into ``store``, skipping scans already done with this model/spec/mode from an
    unchanged source.

    Holds the store's writer lock for the whole run; refuses a store with embeddings of another
    model unless ``allow_mixed_models``. Scans whose source changed since they were
    embedded are embedded again, and scans that failed before are retried (both are counted).
    A reader worker that dies fails the scan it was reading; the run goes on.
    ``on_progress(scan_id, status)`` is called once per job (status ``ok``/``failed``/``skipped``).
    """
    store = store if isinstance(store, EmbeddingStore) else EmbeddingStore(store)
    spec = resolve_spec(model, spec)
    fingerprint = spec.fingerprint()
    model_id = str(model.model_id)
    with store.lock():
        check_store_identity(store, model_id, allow_mixed_models=allow_mixed_models)
        return _run_locked(model, jobs, store, spec, fingerprint, model_id, mode=mode, workers=workers,
                           device=device, dtype=dtype, slab_thickness=slab_thickness, slab_overlap=slab_overlap,
                           on_progress=on_progress)


def _run_locked(model: Any, jobs: Sequence[EmbedJob], store: EmbeddingStore, spec: PreprocessSpec,
                fingerprint: str, model_id: str, *, mode: str, workers: int, device: Any, dtype: Any,
                slab_thickness: int | None, slab_overlap: int | None,
                on_progress: Callable[[str, str], None] | None) -> EmbedSummary:
    from voxelfm.embed.readers import ReaderPool
    from voxelfm.embed.store import HELD_LOCK_FDS, NonFiniteFeaturesError

    done = store.done(model_id, fingerprint, mode)
    latest = store.latest()
    summary = EmbedSummary()
    todo = []
    sources: dict[str, str | None] = {}
    for job in jobs:
        sources[job.scan_id] = source_fingerprint(job.source)
        record = latest.get(job.scan_id)
        if job.scan_id in done and record is not None and _same_source(record, job, sources[job.scan_id]):
            summary.skipped += 1
            if on_progress:
                on_progress(job.scan_id, "skipped")
            continue
        if job.scan_id in done:
            summary.changed.append(job.scan_id)
        elif record is not None and record.get("status") == "failed":
            summary.retried.append(job.scan_id)
        todo.append(job)
    start = time.perf_counter()
    pool = ReaderPool(_Reader(spec.to_dict()), workers, on_death=_worker_died, close_fds=sorted(HELD_LOCK_FDS))
    with pool:
        for item in pool.imap(todo):
            job: EmbedJob = item["job"]
            error = item["error"]
            seconds = item["seconds"]
            recorded = False
            if error is None:
                t0 = time.perf_counter()
                try:
                    feats = features_from_preprocessed(model, item["pre"], mode=mode, device=device, dtype=dtype,
                                                       slab_thickness=slab_thickness, slab_overlap=slab_overlap)
                    store.write(job.scan_id, feats, source=job.source, seconds=seconds + time.perf_counter() - t0,
                                source_fingerprint=sources[job.scan_id])
                    for warning in getattr(item["pre"], "warnings", []):  # a constant volume, skipped slices, ...
                        logging.getLogger(__name__).warning("%s: %s", job.scan_id, warning)
                except NonFiniteFeaturesError as exc:
                    error, recorded = str(exc), True  # the store has recorded it as failed
                except VoxelFMError as exc:
                    error = str(exc)
                except (RuntimeError, ValueError, MemoryError) as exc:  # e.g. out of memory on a huge scan
                    error = located(job.source, f"{type(exc).__name__}: {exc}")
                seconds += time.perf_counter() - t0
            if error is not None:
                if not recorded:
                    store.record_failure(job.scan_id, job.source, error, model_id=model_id,
                                         spec_fingerprint=fingerprint, mode=mode, seconds=seconds,
                                         source_fingerprint=sources[job.scan_id])
                summary.failed += 1
                summary.failures.append((job.scan_id, error))
            else:
                summary.done += 1
            if on_progress:
                on_progress(job.scan_id, "failed" if error else "ok")
        summary.worker_deaths = pool.deaths
    summary.seconds = time.perf_counter() - start
    return summary
