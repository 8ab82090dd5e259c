"""``EmbeddingStore``: one safetensors entry per scan plus append-only JSONL manifests.

Layout (docs/contracts.md)::

    STORE/entries/<scan_id>.safetensors   cls (C,), patch (d,h,w,C), registers (R,C) + metadata
    STORE/manifest.jsonl                  one record per attempt (unsharded runs)
    STORE/manifest-<i>-of-<n>.jsonl       one file per shard

Crash safety: an entry is written to a temporary file and renamed into place *before* its "ok"
record is appended, so an "ok" record always points at a complete entry; a run killed mid-write
leaves at most a stray temporary file and no record, and the scan is simply redone. Records are
appended with one ``write`` + ``fsync``; a torn last line (killed mid-append) is ignored on read.
The last record per scan id wins (records are ordered by their ``time``, then file order).

Features that are not finite (NaN/Inf anywhere in cls, patch or registers) are never stored as
"ok": :meth:`EmbeddingStore.write` records the scan as failed with the count and raises. Every
record carries the ``source_fingerprint`` of the scan (path, size, mtime; see
:mod:`voxelfm.core.fingerprint`), so a re-run can tell that a scan id now points at other data.

One writer per manifest: :meth:`EmbeddingStore.lock` takes an exclusive ``fcntl.flock`` on
``STORE/.lock`` (``.lock-<i>-of-<n>`` per shard), whose text names the holder's pid and host.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxelfm.core.atomic import atomic_save, atomic_write_text
from voxelfm.core.errors import StoreError, VoxelFMError, located
from voxelfm.core.fingerprint import source_fingerprint as _source_fingerprint
from voxelfm.core.geometry import Geometry
from voxelfm.core.processes import pid_alive
from voxelfm.core.types import FeatureSpec, VoxelFeatures

log = logging.getLogger(__name__)
ENTRIES = "entries"
#: File descriptors of store locks held by this process; forked reader workers close their copies
#: so that a lock never outlives the process that took it (flock locks follow the open file).
HELD_LOCK_FDS: set[int] = set()
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def spec_fingerprint(spec: FeatureSpec | Mapping[str, Any] | None) -> str | None:
    """Fingerprint of a spec (a PreprocessSpec or a backbone's NativeSpec, or its ``to_dict()``)."""
    if not spec:
        return None
    if isinstance(spec, Mapping):
        from voxelfm.models.backbones.spec import spec_from_dict

        spec = spec_from_dict(dict(spec))
    return spec.fingerprint()


def spec_dict(spec: FeatureSpec | Mapping[str, Any] | None) -> dict[str, Any]:
    """The serialised spec an entry keeps (``{}``: none); features built by hand may give the dict."""
    return {} if not spec else dict(spec) if isinstance(spec, Mapping) else spec.to_dict()


@functools.lru_cache(maxsize=64)
def read_spec(text: str | None) -> FeatureSpec | None:
    """The spec object of an entry's stored JSON (``{}`` or none: ``None``); parsed once per distinct
    text, so reading many entries made with one spec builds it once."""
    data = json.loads(text) if text else None
    if not data:
        return None
    from voxelfm.models.backbones.spec import spec_from_dict

    return spec_from_dict(data)


def manifest_name(shard: tuple[int, int] | None = None) -> str:
    """``manifest.jsonl`` or ``manifest-<i>-of-<n>.jsonl`` for shard ``(i, n)``."""
    if shard is None or shard[1] <= 1:
        return "manifest.jsonl"
    return f"manifest-{shard[0]}-of-{shard[1]}.jsonl"


def lock_name(shard: tuple[int, int] | None = None) -> str:
    """``.lock`` or ``.lock-<i>-of-<n>``: one writer per manifest."""
    if shard is None or shard[1] <= 1:
        return ".lock"
    return f".lock-{shard[0]}-of-{shard[1]}"


@dataclass
class ClsFeatures:
    """CLS vectors of some scans of a store, row ``i`` for ``ids[i]``, and the models they come from."""

    ids: list[str]
    cls: np.ndarray  # (N, C) float32; a read-only memory map when it is a whole compacted store
    models: dict[str | None, int]  # model id -> number of rows


@dataclass
class PatchFeatures:
    """CLS vectors, patch grids and geometries of some scans of a store, item ``i`` for ``ids[i]``."""

    ids: list[str]
    cls: np.ndarray  # (N, C) float32
    patches: list[np.ndarray]  # (d, h, w, C) float32 each
    patch_geometry: list[Geometry | None]
    input_geometry: list[Geometry | None]
    model_ids: list[str | None]


class NonFiniteFeaturesError(StoreError):
    """Features with NaN/Inf were refused (the scan is already recorded as failed)."""


def _non_finite(tensors: dict[str, np.ndarray]) -> str | None:
    bad = [f"{int(np.size(a) - np.isfinite(a).sum())} of {np.size(a)} {name} values"
           for name, a in tensors.items() if not np.isfinite(a).all()]
    return None if not bad else "features are not finite (" + ", ".join(bad) + " are NaN/Inf); not stored"


class EmbeddingStore:
    """Read and write an embedding store (readable while another process appends to it).

    ``shard`` picks the manifest this instance appends to; reads always merge every manifest.
    """

    def __init__(self, path: str | os.PathLike[str], *, shard: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self.entries_dir = self.path / ENTRIES
        self.manifest_path = self.path / manifest_name(shard)
        self.lock_path = self.path / lock_name(shard)
        self.sharded = shard is not None and shard[1] > 1
        self._lock_depth = 0
        self._cache: tuple[tuple[Any, ...], dict[str, dict[str, Any]]] | None = None

    # -- records ------------------------------------------------------------------------------
    def _read_records(self) -> list[dict[str, Any]]:
        rows: list[tuple[float, int, int, dict[str, Any]]] = []
        for file_index, manifest in enumerate(sorted(self.path.glob("manifest*.jsonl"))):
            try:
                lines = manifest.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise StoreError(located(manifest, f"cannot read manifest ({exc.strerror})")) from exc
            for line_index, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn line from a run killed mid-append
                if isinstance(record, dict) and "scan_id" in record:
                    rows.append((float(record.get("time") or 0.0), file_index, line_index, record))
        rows.sort(key=lambda r: r[:3])
        return [r[3] for r in rows]

    def stamp(self) -> tuple[Any, ...]:
        """What changes whenever the store does (its manifests' and compaction pointer's sizes and
        times): equal stamps, same contents. Readers that cache features compare it."""
        stamps = []
        for manifest in sorted(self.path.glob("manifest*.jsonl")):
            try:
                st = manifest.stat()
            except OSError:
                continue
            stamps.append((manifest.name, st.st_size, st.st_mtime_ns))
        with contextlib.suppress(OSError):  # a compaction (voxelfm.embed.shards) changes the store too
            st = (self.path / "consolidated" / "CURRENT").stat()
            stamps.append(("CURRENT", st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def consolidated(self) -> Any:
        """The store's current consolidated generation (:mod:`voxelfm.embed.shards`), or ``None``."""
        from voxelfm.embed.shards import Consolidated, current_path

        try:
            name = current_path(self.path).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        cached = getattr(self, "_consolidated", None)
        if cached is None or cached.generation != name:
            cached = self._consolidated = Consolidated.open(self.path)
        return cached

    def _live_latest(self) -> dict[str, dict[str, Any]]:
        """The last manifest record of every scan id (without the consolidated generation)."""
        stamp = self.stamp()
        cached = getattr(self, "_live_cache", None)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        out: dict[str, dict[str, Any]] = {}
        for record in self._read_records():
            out[str(record["scan_id"])] = record
        self._live_cache = (stamp, out)
        return out

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last record of every scan id (re-read only when a manifest changed)."""
        stamp = self.stamp()
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        out: dict[str, dict[str, Any]] = {}
        for record in self._read_records():
            out[str(record["scan_id"])] = record
        cons = self.consolidated()
        if cons is not None:  # compacted scans, replaced by newer manifest records
            out = cons.overlay(out)
        self._cache = (stamp, out)
        return out

    def records(self, *, all_attempts: bool = False) -> Any:
        """A pandas DataFrame: the last record per scan (or every attempt with ``all_attempts``)."""
        import pandas as pd

        rows = self._read_records() if all_attempts else list(self.latest().values())
        columns = ["scan_id", "source", "source_fingerprint", "status", "error", "model_id", "spec_fingerprint",
                   "mode", "grid_shape", "embed_dim", "seconds", "time"]
        return pd.DataFrame(rows, columns=columns) if not rows else pd.DataFrame(rows)

    def ids(self, status: str | None = "ok") -> list[str]:
        """Scan ids whose last record has ``status`` (``None``: every id), sorted."""
        cons = self.consolidated()
        if cons is not None and status == "ok" and not self._live_latest():
            return list(cons.ids)  # a compacted store without newer records: no record is parsed
        return sorted(k for k, r in self.latest().items() if status is None or r.get("status") == status)

    def done(self, model_id: str, spec_fingerprint: str | None, mode: str | None = None) -> set[str]:
        """Ids already embedded OK by this model with this spec (and mode): what a resumed run skips."""
        out = set()
        for scan_id, record in self.latest().items():
            if record.get("status") != "ok" or record.get("model_id") != model_id:
                continue
            if record.get("spec_fingerprint") != spec_fingerprint:
                continue
            if mode is not None and record.get("mode", "3d") != mode:
                continue
            if record.get("consolidated") or self.entry_path(scan_id).is_file():
                out.add(scan_id)
        return out

    def verify(self, ids: Iterable[str], *, model_id: str, mode: str = "3d") -> list[str]:
        """What keeps ``ids`` from being usable features of ``model_id`` in ``mode``: scans whose last
        record is not ok, entries from another model or mode, entry files missing (a compacted entry
        counts as present). One line per kind of problem, naming the store and up to three ids; an
        empty list: every scan is there."""
        ids = set(map(str, ids))
        latest = self.latest()
        problems = []
        missing = sorted(i for i in ids if latest.get(i, {}).get("status") != "ok")
        if missing:
            problems.append(f"{self.path}: {len(missing)} scan(s) not embedded (e.g. {missing[:3]})")
        wrong = sorted(i for i in ids & set(latest) if latest[i].get("model_id") != model_id
                       or latest[i].get("mode", "3d") != mode)
        if wrong:
            problems.append(f"{self.path}: {len(wrong)} entries from another model or mode (e.g. {wrong[:3]})")
        absent = sorted(i for i in ids if not latest.get(i, {}).get("consolidated")
                        and not self.entry_path(i).is_file())
        if absent:
            problems.append(f"{self.path}: {len(absent)} entry files missing (e.g. {absent[:3]})")
        return problems

    def identities(self) -> dict[tuple[str | None, str | None], int]:
        """``{(model_id, spec_fingerprint): number of ok scans}``: which embeddings the store holds."""
        out: dict[tuple[str | None, str | None], int] = {}
        for record in self.latest().values():
            if record.get("status") == "ok":
                key = (record.get("model_id"), record.get("spec_fingerprint"))
                out[key] = out.get(key, 0) + 1
        return out

    # -- the writer lock ----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the exclusive writer lock of this store (this shard's manifest) while in the block
        (re-entrant for the same instance).

        A second writer gets a one-line :class:`StoreError` naming the holder (pid, host, start
        time). The lock is an ``fcntl.flock`` that the kernel drops when its holder dies, so a lock
        file left by a killed run is stale by construction and is simply taken over.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no advisory locks to take
            log.warning("%s: this platform has no fcntl; the store is not locked against a second writer", self.path)
            yield
            return
        if self._lock_depth:  # this instance holds it already (the CLI, then run_embedding)
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise StoreError(located(self.path, f"cannot open the store for writing ({exc.strerror})")) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(located(self.path, self._holder_text(fd))) from None
            previous = self._read_holder(fd)
            if previous and previous.get("pid") != os.getpid():
                log.info("%s: taking over the lock of an earlier run (pid %s on %s) that no longer runs",
                         self.path, previous.get("pid"), previous.get("host"))
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
            HELD_LOCK_FDS.add(fd)
            self._lock_depth = 1
            self._remove_stray_temporaries()
            try:
                yield
            finally:
                self._lock_depth = 0
                HELD_LOCK_FDS.discard(fd)
                os.ftruncate(fd, 0)  # an empty lock file reads as "free" even to tools that only look
        finally:
            os.close(fd)  # closing releases the flock

    def _remove_stray_temporaries(self) -> None:
        """Delete half-written entries (``.<id>.safetensors.tmp-<pid>``) left by killed writers.

        Only files whose writer pid no longer runs here; in a sharded store, where another shard may
        write from another host, only those untouched for 10 minutes as well.
        """
        if not self.entries_dir.is_dir():
            return
        removed = 0
        for path in self.entries_dir.glob(".*.safetensors.tmp-*"):
            pid = path.name.rsplit("-", 1)[-1]
            try:
                stale = not pid.isdigit() or not pid_alive(int(pid))
                if stale and self.sharded:
                    stale = time.time() - path.stat().st_mtime > 600
                if stale:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        if removed:
            log.info("%s: removed %d half-written entr%s of an interrupted run", self.path, removed,
                     "y" if removed == 1 else "ies")

    @staticmethod
    def _read_holder(fd: int) -> dict[str, Any] | None:
        try:
            data = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "null")
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _holder_text(self, fd: int) -> str:
        holder = self._read_holder(fd) or {}
        pid, host = holder.get("pid"), holder.get("host")
        since = holder.get("since")
        when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, int | float) else ""
        if not isinstance(pid, int):
            return "another voxelfm embed is writing to this store (lock held); wait for it or use another --out"
        if host == socket.gethostname() and not pid_alive(pid):
            return (f"locked by pid {pid} on {host}{when}, which has exited but left a child process holding "
                    f"the lock (see `fuser {self.lock_path}`); end that process or use another --out")
        return (f"another voxelfm embed (pid {pid} on {host}{when}) is writing to this store; "
                "wait for it or use another --out")

    def __contains__(self, scan_id: object) -> bool:
        record = self.latest().get(str(scan_id))
        return record is not None and record.get("status") == "ok"

    def __len__(self) -> int:
        return len(self.ids())

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def items(self, ids: Iterable[str] | None = None) -> Iterator[tuple[str, VoxelFeatures]]:
        """``(scan_id, VoxelFeatures)`` for every ok entry (or the given ids)."""
        for scan_id in (self.ids() if ids is None else ids):
            yield scan_id, self.get(scan_id)

    # -- entries ------------------------------------------------------------------------------
    def entry_path(self, scan_id: str) -> Path:
        if not _SAFE_ID.match(scan_id):
            raise StoreError(located(scan_id, "scan id may only contain letters, digits, '.', '_' and '-'"))
        return self.entries_dir / f"{scan_id}.safetensors"

    def get(self, scan_id: str) -> VoxelFeatures:
        """Features of one scan (StoreError if absent or unreadable)."""
        self.entry_path(scan_id)  # the id check, whether or not the entry file is read
        cons = self.consolidated()
        row = None if cons is None else cons.serves(scan_id, self._live_latest().get(scan_id))
        if row is not None:
            return cons.features(row)
        return self._read_entry(scan_id)

    def _read_entry(self, scan_id: str) -> VoxelFeatures:
        """Features from the scan's entry file (StoreError if absent or unreadable)."""
        from safetensors import SafetensorError, safe_open

        path = self.entry_path(scan_id)
        if not path.is_file():
            raise StoreError(located(self.path, f"no embedding for scan {scan_id!r}"))
        try:
            with safe_open(str(path), framework="np") as handle:
                meta = handle.metadata() or {}
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            raise StoreError(located(path, f"unreadable entry ({exc})")) from exc
        missing = {"cls", "patch"} - set(tensors)
        if missing:
            raise StoreError(located(path, f"entry lacks tensors {sorted(missing)}"))
        c = tensors["cls"].shape[-1]
        return VoxelFeatures(
            cls=tensors["cls"],
            patch=tensors["patch"],
            registers=tensors.get("registers", np.zeros((0, c), dtype=np.float32)),
            patch_geometry=_geometry(meta.get("patch_geometry")),
            input_geometry=_geometry(meta.get("input_geometry")),
            spec=_entry_spec(path, meta.get("spec")),
            model_id=meta.get("model_id"),
            mode=meta.get("mode", "3d"),
            spec_fingerprint=_stored_fingerprint(meta.get("spec_fingerprint")),
        )

    def cls_matrix(self, ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """``(ids, (N, C) float32)`` of CLS tokens (see :meth:`cls_features`)."""
        table = self.cls_features(ids)
        return table.ids, table.cls

    def cls_features(self, ids: Sequence[str] | None = None) -> ClsFeatures:
        """CLS vectors of every ok scan (or of ``ids``, in that order) and the models they come from.

        Rows held by the consolidated generation are read in bulk: the whole matrix is its memory
        map (no copy) when nothing newer was appended, else one fancy-indexed read of the rows
        looked up by binary search. Only scans embedded since the last compaction open their
        entry file, reading nothing but the ``cls`` tensor. StoreError if an id has no embedding.
        """
        cons = self.consolidated()
        live = self._live_latest()
        if cons is not None and not live:  # a compacted store, nothing newer: no record is parsed
            if ids is None:
                return ClsFeatures(list(cons.ids), cons.cls, cons.models_of(None))
            wanted = [str(i) for i in ids]
            rows = cons.rows_of(wanted)
            if len(rows) and int(rows.min()) < 0:
                missing = wanted[int(np.flatnonzero(rows < 0)[0])]
                raise StoreError(located(self.path, f"no embedding for scan {missing!r}"))
            return ClsFeatures(wanted, np.asarray(cons.cls[rows], dtype=np.float32), cons.models_of(rows))
        # Rows of the generation that no newer manifest record replaces, and the rest from entries.
        replaced: set[str] = set()  # generation rows that a newer manifest record replaces
        in_gen: set[str] = set()
        if cons is not None:
            live_ids = list(live)
            live_rows = cons.rows_of(live_ids).tolist()
            times = cons.array("times")
            in_gen = {sid for sid, row in zip(live_ids, live_rows, strict=True) if row >= 0}
            replaced = {sid for sid, row in zip(live_ids, live_rows, strict=True)
                        if row >= 0 and float(live[sid].get("time") or 0.0) > float(times[row])}
        if ids is None:
            ok_live = {sid for sid, r in live.items() if r.get("status") == "ok"}
            if cons is not None:
                kept = [sid for sid in cons.ids if sid not in replaced]
                ok_live = {sid for sid in ok_live if sid in replaced or sid not in in_gen}
                wanted = sorted(set(kept) | ok_live)
            else:
                wanted = sorted(ok_live)
        else:
            wanted = [str(i) for i in ids]
        rows = cons.rows_of(wanted) if cons is not None else np.full(len(wanted), -1, dtype=np.int64)
        if replaced:
            for i, sid in enumerate(wanted):
                if rows[i] >= 0 and sid in replaced:
                    rows[i] = -1
        from_gen = np.flatnonzero(rows >= 0)
        from_entries = np.flatnonzero(rows < 0)
        models: dict[str | None, int] = cons.models_of(rows[from_gen]) if cons is not None and len(from_gen) else {}
        vectors: dict[int, np.ndarray] = {}
        for i in from_entries.tolist():
            sid = wanted[i]
            vectors[i] = self._entry_cls(sid)
            model = (live.get(sid) or {}).get("model_id")
            models[model] = models.get(model, 0) + 1
        dim = cons.dim if cons is not None else (len(next(iter(vectors.values()))) if vectors else 0)
        matrix = np.empty((len(wanted), dim), dtype=np.float32)
        if len(from_gen):
            matrix[from_gen] = cons.cls[rows[from_gen]]
        for i, vector in vectors.items():
            if vector.shape != (dim,):
                raise StoreError(located(self.entry_path(wanted[i]), f"cls has {vector.size} values, other scans {dim}"))
            matrix[i] = vector
        return ClsFeatures(wanted, matrix, models)

    def patch_features(self, ids: Sequence[str] | None = None) -> PatchFeatures:
        """CLS vectors, patch grids and geometries of every ok scan (or of ``ids``, in that order).

        The values of :meth:`get` scan by scan, read in bulk where the store allows: rows of the
        consolidated generation come from its memory maps in a few indexed reads
        (:meth:`~voxelfm.embed.shards.Consolidated.bulk_patches`); scans embedded since the last
        compaction (or a newer record replaces) open their entry file. The manifests are read once
        for the whole call, not once per scan. StoreError if an id has no embedding.
        """
        cons = self.consolidated()
        live = self._live_latest()
        wanted = self.ids() if ids is None else [str(i) for i in ids]
        rows = cons.rows_of(wanted) if cons is not None else np.full(len(wanted), -1, dtype=np.int64)
        if cons is not None and live and len(rows):
            times = cons.array("times")
            for i, sid in enumerate(wanted):  # as Consolidated.serves: a newer live record wins
                record = live.get(sid)
                if rows[i] >= 0 and record is not None and float(record.get("time") or 0.0) > float(times[rows[i]]):
                    rows[i] = -1
        from_gen = np.flatnonzero(rows >= 0)
        n = len(wanted)
        grids: list[np.ndarray] = [np.empty(0)] * n
        patch_geo: list[Geometry | None] = [None] * n
        input_geo: list[Geometry | None] = [None] * n
        models: list[str | None] = [None] * n
        cls_rows: dict[int, np.ndarray] = {}
        gen_cls = None
        if len(from_gen):
            gen_cls, gen_grids, gen_pgeo, gen_igeo, gen_models = cons.bulk_patches(rows[from_gen])
            for k, i in enumerate(from_gen.tolist()):
                grids[i], patch_geo[i], input_geo[i], models[i] = gen_grids[k], gen_pgeo[k], gen_igeo[k], gen_models[k]
        for i in np.flatnonzero(rows < 0).tolist():
            f = self._read_entry(wanted[i])
            cls_rows[i] = np.asarray(f.cls, dtype=np.float32).reshape(-1)
            grids[i] = np.asarray(f.patch, dtype=np.float32)
            patch_geo[i], input_geo[i], models[i] = f.patch_geometry, f.input_geometry, f.model_id
        dims = {len(v) for v in cls_rows.values()} | ({cons.dim} if len(from_gen) else set())
        if len(dims) > 1:
            raise StoreError(located(self.path, f"CLS vectors of different lengths {sorted(dims)} in one store"))
        matrix = np.empty((n, next(iter(dims), 0)), dtype=np.float32)
        if gen_cls is not None:
            matrix[from_gen] = gen_cls
        for i, vector in cls_rows.items():
            matrix[i] = vector
        return PatchFeatures(wanted, matrix, grids, patch_geo, input_geo, models)

    def _entry_cls(self, scan_id: str) -> np.ndarray:
        """The ``cls`` tensor of one entry file, read alone."""
        from safetensors import SafetensorError, safe_open

        path = self.entry_path(scan_id)
        if not path.is_file():
            raise StoreError(located(self.path, f"no embedding for scan {scan_id!r}"))
        try:
            with safe_open(str(path), framework="np") as handle:
                return np.asarray(handle.get_tensor("cls"), dtype=np.float32).reshape(-1)
        except (SafetensorError, OSError, ValueError) as exc:
            raise StoreError(located(path, f"unreadable entry ({exc})")) from exc

    # -- writing ------------------------------------------------------------------------------
    def _append(self, record: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, default=str) + "\n").encode("utf-8")
        fd = os.open(self.manifest_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # close a torn line left by a killed run; it stays unparsable
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, scan_id: str, features: VoxelFeatures, source: str | os.PathLike[str] | None = None,
              seconds: float | None = None, *, source_fingerprint: str | None = None) -> dict[str, Any]:
        """Atomically write the entry, then append its "ok" record; returns the record.

        Non-finite features are recorded as failed and raise :class:`NonFiniteFeaturesError`.
        ``source_fingerprint`` defaults to that of ``source`` now.
        """
        from safetensors.numpy import save_file

        path = self.entry_path(scan_id)
        tensors = {
            "cls": np.ascontiguousarray(features.cls, dtype=np.float32).reshape(-1),
            "patch": np.ascontiguousarray(features.patch, dtype=np.float32),
            "registers": np.ascontiguousarray(features.registers, dtype=np.float32),
        }
        # carried from where the features were made; taken from the spec only for hand-built ones
        fingerprint = features.spec_fingerprint or spec_fingerprint(features.spec)
        if source_fingerprint is None and source is not None:
            source_fingerprint = _source_fingerprint(source)
        problem = _non_finite(tensors)
        if problem is not None:
            # never "ok": record why, so the scan shows up as failed and is retried on a re-run
            self.record_failure(scan_id, source, located(source if source is not None else scan_id, problem),
                                model_id=features.model_id, spec_fingerprint=fingerprint, mode=features.mode,
                                seconds=seconds, source_fingerprint=source_fingerprint)
            raise NonFiniteFeaturesError(located(source if source is not None else scan_id, problem))
        metadata = {
            "scan_id": scan_id,
            "model_id": str(features.model_id),
            "spec": json.dumps(spec_dict(features.spec), sort_keys=True),
            "spec_fingerprint": str(fingerprint),
            "patch_geometry": json.dumps(features.patch_geometry.to_dict()) if features.patch_geometry else "",
            "input_geometry": json.dumps(features.input_geometry.to_dict()) if features.input_geometry else "",
            "mode": features.mode,
        }
        self.entries_dir.mkdir(parents=True, exist_ok=True)
        atomic_save(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        record = {
            "scan_id": scan_id, "source": None if source is None else os.fspath(source),
            "source_fingerprint": source_fingerprint, "status": "ok", "error": None,
            "model_id": features.model_id, "spec_fingerprint": fingerprint,
            "mode": features.mode, "grid_shape": list(tensors["patch"].shape[:3]),
            "embed_dim": int(tensors["cls"].shape[0]),
            "seconds": None if seconds is None else round(float(seconds), 4), "time": time.time(),
        }
        self._append(record)
        return record

    def record_failure(self, scan_id: str, source: str | os.PathLike[str] | None, error: str, *,
                       model_id: str | None = None, spec_fingerprint: str | None = None,
                       mode: str | None = None, seconds: float | None = None,
                       source_fingerprint: str | None = None) -> dict[str, Any]:
        """Append a "failed" record (any earlier entry file is left in place but no longer listed)."""
        if source_fingerprint is None and source is not None:
            source_fingerprint = _source_fingerprint(source)
        record = {
            "scan_id": scan_id, "source": None if source is None else os.fspath(source),
            "source_fingerprint": source_fingerprint, "status": "failed",
            "error": str(error), "model_id": model_id, "spec_fingerprint": spec_fingerprint, "mode": mode,
            "grid_shape": None, "embed_dim": None,
            "seconds": None if seconds is None else round(float(seconds), 4), "time": time.time(),
        }
        self._append(record)
        return record

    # -- original {uid}.pth cache (docs/original.md §3.6) ---------------------------------------------
    def import_pth_cache(self, directory: str | os.PathLike[str], *, model_id: str = "imported",
                         spec: FeatureSpec | None = None) -> int:
        """Import every ``{uid}.pth`` (``{"cls": (1, C), "patch": (d, h, w, C)}``); returns the count.

        Files are read with ``torch.load(weights_only=True)``; they carry no registers (stored as
        ``(0, C)``), geometry or spec (pass ``spec``/``model_id`` when known).
        """
        import torch

        directory = Path(directory)
        if not directory.is_dir():
            raise StoreError(located(directory, "not a directory"))
        count = 0
        for pth in sorted(directory.glob("*.pth")):
            try:
                data = torch.load(pth, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a cache file"
                # torch's weights_only refusal spans many lines; the error must stay one line.
                first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
                raise StoreError(located(pth, f"cannot be read with torch.load(weights_only=True): {first[:160]}")) from None
            if not isinstance(data, dict) or "cls" not in data or "patch" not in data:
                raise StoreError(located(pth, "expected a dict with 'cls' and 'patch' tensors"))
            cls = data["cls"].float().reshape(-1).numpy()
            patch = data["patch"].float().numpy()
            if patch.ndim != 4 or patch.shape[-1] != cls.shape[0]:
                raise StoreError(located(pth, f"patch must be (d, h, w, C={cls.shape[0]}), got {tuple(patch.shape)}"))
            feats = VoxelFeatures(cls=cls, patch=patch, registers=np.zeros((0, cls.shape[0]), np.float32),
                                  spec=spec, model_id=model_id, mode="3d")
            self.write(pth.stem, feats, source=pth)
            count += 1
        return count

    def export_pth_cache(self, directory: str | os.PathLike[str], ids: Iterable[str] | None = None) -> int:
        """Write ``{uid}.pth`` files (+ ``summary.jsonl``) in the original cache format; returns the count."""
        import torch

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        summary = []
        count = 0
        for scan_id in (self.ids() if ids is None else ids):
            feats = self.get(scan_id)
            payload = {"cls": torch.from_numpy(np.asarray(feats.cls, np.float32).reshape(1, -1)),
                       "patch": torch.from_numpy(np.asarray(feats.patch, np.float32))}
            target = directory / f"{scan_id}.pth"
            atomic_save(target, lambda tmp, payload=payload: torch.save(payload, tmp))
            shape = list(feats.input_geometry.shape) if feats.input_geometry else None
            summary.append(json.dumps({"uid": scan_id, "path": str(target), "shape": shape}))
            count += 1
        atomic_write_text(directory / "summary.jsonl", "".join(line + "\n" for line in summary))
        return count


def _entry_spec(where: Any, text: str | None) -> FeatureSpec | None:
    try:
        return read_spec(text)
    except (VoxelFMError, ValueError, TypeError) as exc:
        raise StoreError(located(where, f"unreadable preprocessing spec ({exc})")) from None


def _stored_fingerprint(text: str | None) -> str | None:
    """An entry's ``spec_fingerprint`` metadata (written as ``"None"`` for features without a spec)."""
    return None if text in (None, "", "None") else text


def _geometry(text: str | None) -> Geometry | None:
    return Geometry.from_dict(json.loads(text)) if text else None
