"""Batch embedding: many scans → an :class:`EmbeddingStore`, resumable, sharded, with worker processes.

Reading and preprocessing run in reader processes (:class:`voxelfm.embed.readers.ReaderPool`)
while the main process runs the backbone, so I/O overlaps compute. Scans already embedded OK with
the same model id, spec fingerprint and mode, from an unchanged source file, are skipped; failures
(a dead reader worker included) are recorded with their reason and the run goes on. A store holds
one model's embeddings unless asked otherwise.

One pass can fill several stores (:func:`run_embeddings` with :class:`EmbedTarget` s: model × mode
× spec, the HU-histogram baseline included): each scan is read and preprocessed once per distinct
spec and that volume feeds every target that uses the spec.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxelfm.core.errors import ConfigError, DataError, StoreError, VoxelFMError, located
from voxelfm.core.fingerprint import source_fingerprint
from voxelfm.embed.extract import features_from_preprocessed, resolve_spec
from voxelfm.embed.store import EmbeddingStore
from voxelfm.preprocess.spec import PreprocessSpec

if TYPE_CHECKING:
    from voxelfm.models.backbones.spec import AnySpec

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
def _read_job(job: EmbedJob, spec: AnySpec) -> dict[str, Any]:
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
    """``(job, group) -> _read_job(job, specs[group])``, looked up at call time (tests replace ``_read_job``)."""

    def __init__(self, specs: Sequence[AnySpec]) -> None:
        self.specs = list(specs)

    def __call__(self, item: tuple[EmbedJob, int]) -> dict[str, Any]:
        job, group = item
        return {**_read_job(job, self.specs[group]), "group": group}


def _worker_died(item: tuple[EmbedJob, int], reason: str) -> dict[str, Any]:
    job, group = item
    return {"job": job, "group": group, "pre": None, "error": located(job.source, reason), "seconds": 0.0}


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


# -- targets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbedTarget:
    """One output of a pass over the scans: ``store`` receives the features of ``model`` in ``mode``
    from scans preprocessed with ``spec`` (default: the model's own).

    ``model`` is a backbone (the interface of :mod:`voxelfm.models.backbones`) or the non-learned
    :class:`voxelfm.embed.histogram.HistogramBaseline`.
    """

    model: Any
    store: EmbeddingStore | str | os.PathLike[str]
    mode: str = "3d"
    spec: Any = None


@dataclass
class _Target:
    """A target resolved for a run: its store (locked), spec, identity and what it still needs."""

    model: Any
    store: EmbeddingStore
    mode: str
    spec: AnySpec
    fingerprint: str
    model_id: str
    summary: EmbedSummary = field(default_factory=EmbedSummary)


def _resolve_target(target: EmbedTarget) -> _Target:
    from voxelfm.embed.extract import MODES

    if target.mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {target.mode!r}")
    if target.mode != "3d" and not getattr(target.model, "supports_slabs", False):
        raise ConfigError(f"backbone {getattr(target.model, 'name', '?')!r} takes one fixed-size input: use mode '3d'")
    store = target.store if isinstance(target.store, EmbeddingStore) else EmbeddingStore(target.store)
    spec = resolve_spec(target.model, target.spec)
    return _Target(target.model, store, target.mode, spec, spec.fingerprint(), str(target.model.model_id))


def _features(target: _Target, pre: Any, *, device: Any, dtype: Any, slab_thickness: int | None,
              slab_overlap: int | None) -> Any:
    from voxelfm.embed.histogram import HistogramBaseline

    if isinstance(target.model, HistogramBaseline):  # no network: features straight from the HU grid
        return target.model.features(pre)
    return features_from_preprocessed(target.model, pre, mode=target.mode, device=device, dtype=dtype,
                                      slab_thickness=slab_thickness, slab_overlap=slab_overlap)


# -- the run ------------------------------------------------------------------------------------
def run_embedding(
    model: Any, jobs: Sequence[EmbedJob], store: EmbeddingStore | str | os.PathLike[str], *,
    spec: PreprocessSpec | None = None, mode: str = "3d", workers: int = 0,
    device: Any = None, dtype: Any = None, slab_thickness: int | None = None,
    slab_overlap: int | None = None, on_progress: Callable[[str, str], None] | None = None,
    allow_mixed_models: bool = False,
) -> EmbedSummary:
    """Embed ``jobs`` into ``store``, skipping scans already done with this model/spec/mode from an
    unchanged source: :func:`run_embeddings` with one target.

    Holds the store's writer lock for the whole run; refuses a store with embeddings of another
    model unless ``allow_mixed_models``. Scans whose source changed since they were
    embedded are embedded again, and scans that failed before are retried (both are counted).
    A reader worker that dies fails the scan it was reading; the run goes on.
    ``on_progress(scan_id, status)`` is called once per job (status ``ok``/``failed``/``skipped``).
    """
    return run_embeddings([EmbedTarget(model, store, mode, spec)], jobs, workers=workers, device=device,
                          dtype=dtype, slab_thickness=slab_thickness, slab_overlap=slab_overlap,
                          on_progress=on_progress, allow_mixed_models=allow_mixed_models)[0]


def run_embeddings(
    targets: Sequence[EmbedTarget], jobs: Sequence[EmbedJob], *, workers: int = 0, device: Any = None,
    dtype: Any = None, slab_thickness: int | None = None, slab_overlap: int | None = None,
    on_progress: Callable[[str, str], None] | None = None, allow_mixed_models: bool = False,
) -> list[EmbedSummary]:
    """Fill several stores (model × mode × spec) in one pass over ``jobs``; one summary per target.

    Each scan is read and preprocessed once per distinct spec that some target still needs it for,
    and that preprocessed volume feeds every such target. Per target, everything
    :func:`run_embedding` promises holds: the writer lock of every store for the whole run, the
    one-model check, skips, re-embedding of changed sources, retries, and failures recorded with
    their reason (a scan that cannot be read fails in every target that needed it).
    ``device``, ``dtype`` and the slab settings apply to every backbone target.
    ``on_progress(scan_id, status)`` is called once per job: ``skipped`` when no target needed it,
    ``failed`` when any target failed, else ``ok``.
    """
    resolved = [_resolve_target(t) for t in targets]
    paths = [t.store.manifest_path.resolve() for t in resolved]
    repeated = sorted({str(p.parent) for p in paths if paths.count(p) > 1})
    if repeated:
        raise ConfigError(f"one pass cannot write the same store twice: {', '.join(repeated)}")
    with contextlib.ExitStack() as locks:
        for target in resolved:
            locks.enter_context(target.store.lock())
            check_store_identity(target.store, target.model_id, allow_mixed_models=allow_mixed_models)
        _run_locked(resolved, jobs, workers=workers, device=device, dtype=dtype, slab_thickness=slab_thickness,
                    slab_overlap=slab_overlap, on_progress=on_progress)
    return [t.summary for t in resolved]


def _plan(targets: list[_Target], jobs: Sequence[EmbedJob], on_progress: Callable[[str, str], None] | None,
          ) -> tuple[dict[tuple[str, int], list[_Target]], list[AnySpec], dict[str, str | None]]:
    """Which targets still need each scan, grouped by spec: ``{(scan_id, group): targets}``, the
    spec of each group, and the source fingerprint of every scan."""
    fingerprints = list(dict.fromkeys(t.fingerprint for t in targets))  # groups, in target order
    specs = [next(t.spec for t in targets if t.fingerprint == f) for f in fingerprints]  # the objects, to the readers
    state = [(t, t.store.done(t.model_id, t.fingerprint, t.mode), t.store.latest()) for t in targets]
    wanted: dict[tuple[str, int], list[_Target]] = {}
    sources: dict[str, str | None] = {}
    for job in jobs:
        sources[job.scan_id] = source_fingerprint(job.source)
        needed = False
        for target, done, latest in state:
            record = latest.get(job.scan_id)
            if job.scan_id in done and record is not None and _same_source(record, job, sources[job.scan_id]):
                target.summary.skipped += 1
                continue
            if job.scan_id in done:
                target.summary.changed.append(job.scan_id)
            elif record is not None and record.get("status") == "failed":
                target.summary.retried.append(job.scan_id)
            wanted.setdefault((job.scan_id, fingerprints.index(target.fingerprint)), []).append(target)
            needed = True
        if on_progress and not needed:
            on_progress(job.scan_id, "skipped")
    return wanted, specs, sources


def _run_locked(targets: list[_Target], jobs: Sequence[EmbedJob], *, workers: int, device: Any, dtype: Any,
                slab_thickness: int | None, slab_overlap: int | None,
                on_progress: Callable[[str, str], None] | None) -> None:
    from voxelfm.embed.readers import ReaderPool
    from voxelfm.embed.store import HELD_LOCK_FDS

    wanted, specs, sources = _plan(targets, jobs, on_progress)
    by_id = {job.scan_id: job for job in jobs}
    items = [(by_id[scan_id], group) for scan_id, group in wanted]
    open_reads = Counter(scan_id for scan_id, _ in wanted)  # reads left per scan before its progress call
    failed_ids: set[str] = set()
    start = time.perf_counter()
    pool = ReaderPool(_Reader(specs), workers, on_death=_worker_died, close_fds=sorted(HELD_LOCK_FDS))
    with pool:
        for item in pool.imap(items):
            job: EmbedJob = item["job"]
            for warning in getattr(item["pre"], "warnings", []):  # a constant volume, skipped slices, ...
                logging.getLogger(__name__).warning("%s: %s", job.scan_id, warning)
            for target in wanted[(job.scan_id, item["group"])]:
                if not _embed_one(target, job, item, sources[job.scan_id], device=device, dtype=dtype,
                                  slab_thickness=slab_thickness, slab_overlap=slab_overlap):
                    failed_ids.add(job.scan_id)
            open_reads[job.scan_id] -= 1
            if on_progress and open_reads[job.scan_id] == 0:
                on_progress(job.scan_id, "failed" if job.scan_id in failed_ids else "ok")
    seconds = time.perf_counter() - start
    for target in targets:
        target.summary.seconds = seconds
        target.summary.worker_deaths = pool.deaths


def _embed_one(target: _Target, job: EmbedJob, item: dict[str, Any], source_fp: str | None, *, device: Any,
               dtype: Any, slab_thickness: int | None, slab_overlap: int | None) -> bool:
    """Features of one read scan into one target's store, or its failure recorded; True when stored."""
    from voxelfm.embed.store import NonFiniteFeaturesError

    error, seconds, recorded = item["error"], item["seconds"], False
    if error is None:
        t0 = time.perf_counter()
        try:
            feats = _features(target, item["pre"], device=device, dtype=dtype, slab_thickness=slab_thickness,
                              slab_overlap=slab_overlap)
            target.store.write(job.scan_id, feats, source=job.source, seconds=seconds + time.perf_counter() - t0,
                               source_fingerprint=source_fp)
        except NonFiniteFeaturesError as exc:
            error, recorded = str(exc), True  # the store has recorded it as failed
        except VoxelFMError as exc:
            error = str(exc)
        except (RuntimeError, ValueError, MemoryError) as exc:  # e.g. out of memory on a huge scan
            error = located(job.source, f"{type(exc).__name__}: {exc}")
        seconds += time.perf_counter() - t0
    if error is None:
        target.summary.done += 1
        return True
    if not recorded:
        target.store.record_failure(job.scan_id, job.source, error, model_id=target.model_id,
                                    spec_fingerprint=target.fingerprint, mode=target.mode, seconds=seconds,
                                    source_fingerprint=source_fp)
    target.summary.failed += 1
    target.summary.failures.append((job.scan_id, error))
    return False
