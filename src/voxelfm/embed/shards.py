"""Consolidated, memory-mapped generations of an :class:`~voxelfm.embed.store.EmbeddingStore`.

A run writes one safetensors entry per scan (crash-safe, resumable). For 100k–1M scans that is a
million files and a million opens for every ``cls_matrix()``, so :func:`compact` folds a store's
entries (and the entries or generations of other stores, e.g. one per rank of a multi-node run)
into one *generation*: a few flat arrays that are memory-mapped on read. Layout::

    STORE/consolidated/CURRENT            the name of the current generation (atomic rewrite)
    STORE/consolidated/gen-000001/
        ids.txt          scan ids, sorted, one per line (row i of every array below)
        cls.npy          (N, C) float32           memory-mapped by cls_matrix()
        mean_patch.npy   (N, C) float32           mean of each patch grid (zeros for an empty grid)
        registers.npy    (N, R, C) float32
        patch_index.npy  (N, 5) int64             pack number, first row, d, h, w
        times.npy        (N,) float64             time of each scan's record (newer live records win)
        records.jsonl    one manifest-style record per row (+ patch/input geometry, spec fingerprint)
        offsets.npy      (N + 1,) int64           byte offset of each record line
        failed.jsonl     the last "failed" record of scans without an embedding
        specs.json       {spec fingerprint: spec}
        packs.json       pack file names (under STORE/packs/), indexed by the pack number
        info.json        count, dim, registers, models, sources, created
    STORE/packs/<name>.f32                raw float32 rows (C wide): the patch grids of many scans

A generation is written under a temporary name and renamed into place; ``CURRENT`` is then
replaced atomically: that rename is the commit. Only after it are folded manifests and entry files
deleted, so a compaction killed at any point leaves a readable store (at worst with entries that
are held twice, identically). Packs are never rewritten: a later compaction references them again.
Records appended to a manifest after a compaction win over the generation's when they are newer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.errors import StoreError, located
from voxelfm.core.geometry import Geometry
from voxelfm.core.types import FeatureSpec, VoxelFeatures

if TYPE_CHECKING:
    from voxelfm.embed.store import EmbeddingStore

log = logging.getLogger(__name__)
CONSOLIDATED = "consolidated"
CURRENT = "CURRENT"
PACKS = "packs"
FORMAT = 1
_RECORD_KEYS = ("scan_id", "source", "source_fingerprint", "status", "error", "model_id", "spec_fingerprint",
                "mode", "grid_shape", "embed_dim", "seconds", "time")


def release_pages(*arrays: Any) -> None:
    """Drop the resident pages of memory-mapped arrays (written ones are flushed first).

    Pages of a file mapping count in the process's RSS until the kernel reclaims them; a
    compaction or index build that streams through gigabytes of maps releases each block when
    done with it, so its resident memory stays near one block instead of the whole file.
    """
    import mmap

    advice = getattr(mmap, "MADV_DONTNEED", None)
    for array in arrays:
        handle = getattr(array, "_mmap", None)
        if handle is None or advice is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            if array.flags.writeable:
                array.flush()
            handle.madvise(advice)


def current_path(store_path: str | os.PathLike[str]) -> Path:
    return Path(store_path) / CONSOLIDATED / CURRENT


# -- reading ------------------------------------------------------------------------------------
class Consolidated:
    """One generation of a store, memory-mapped (read-only)."""

    def __init__(self, store_path: str | os.PathLike[str], generation: str) -> None:
        self.store_path = Path(store_path)
        self.generation = generation
        self.dir = self.store_path / CONSOLIDATED / generation
        try:
            self.info = json.loads((self.dir / "info.json").read_text())
            self.ids: list[str] = (self.dir / "ids.txt").read_text(encoding="utf-8").split("\n")[:-1] \
                if self.info["count"] else []
            self.packs: list[str] = json.loads((self.dir / "packs.json").read_text())
            self.specs: dict[str, Any] = json.loads((self.dir / "specs.json").read_text())
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(located(self.dir, f"unreadable consolidated generation ({exc})")) from None
        if len(self.ids) != self.info["count"]:
            raise StoreError(located(self.dir, f"ids.txt lists {len(self.ids)} ids but info.json says {self.info['count']}"))
        self._index: dict[str, int] | None = None
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None  # ids sorted, and their rows
        self._arrays: dict[str, np.ndarray] = {}
        self._pack_maps: dict[int, np.ndarray] = {}
        self._records_fd: int | None = None

    @classmethod
    def open(cls, store_path: str | os.PathLike[str]) -> Consolidated | None:
        """The current generation of a store, or ``None`` when it has never been compacted."""
        current = current_path(store_path)
        try:
            name = current.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(located(current, f"cannot read ({exc.strerror})")) from None
        if not name:
            return None
        return cls(store_path, name)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    def row(self, scan_id: str) -> int | None:
        if self._index is None:
            self._index = {sid: i for i, sid in enumerate(self.ids)}
        return self._index.get(scan_id)

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """The row of every id in ``ids`` (``-1`` where this generation lacks it), as one ``int64``
        array: a binary search in the sorted id array, not a million dictionary look-ups."""
        if self._sorted is None:
            keys = np.asarray(self.ids, dtype=str)
            order = np.arange(len(keys), dtype=np.int64)
            if len(keys) > 1 and not bool(np.all(keys[1:] > keys[:-1])):  # compact writes sorted ids
                order = np.argsort(keys, kind="stable")
                keys = keys[order]
            self._sorted = (keys, order)
        keys, order = self._sorted
        wanted = np.asarray(list(ids), dtype=str)
        out = np.full(len(wanted), -1, dtype=np.int64)
        if not len(wanted) or not len(keys):
            return out
        pos = np.searchsorted(keys, wanted)
        inside = pos < len(keys)
        hit = np.zeros(len(wanted), dtype=bool)
        hit[inside] = keys[pos[inside]] == wanted[inside]
        out[hit] = order[pos[hit]]
        return out

    def models_of(self, rows: np.ndarray | None = None) -> dict[str | None, int]:
        """``{model id: number of rows}`` over ``rows`` (every row when ``None``); records are only
        read when the generation holds more than one model."""
        count = len(self.ids) if rows is None else len(rows)
        models = self.info.get("models") or {}
        if len(models) == 1:
            return {next(iter(models)): count} if count else {}
        out: dict[str | None, int] = {}
        for row in (range(len(self.ids)) if rows is None else np.asarray(rows).tolist()):
            model = self.record(int(row)).get("model_id")
            out[model] = out.get(model, 0) + 1
        return out

    def array(self, name: str) -> np.ndarray:
        """``cls``, ``mean_patch``, ``registers``, ``patch_index``, ``times`` or ``offsets``, memory-mapped."""
        if name not in self._arrays:
            path = self.dir / f"{name}.npy"
            try:
                self._arrays[name] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise StoreError(located(path, f"unreadable array ({exc})")) from None
        return self._arrays[name]

    @property
    def cls(self) -> np.ndarray:
        """``(N, C)`` float32 CLS vectors, memory-mapped (no copy)."""
        return self.array("cls")

    def record(self, row: int) -> dict[str, Any]:
        """The record of one row (with its ``meta``: geometries), read with one ``pread``."""
        offsets = self.array("offsets")
        start, end = int(offsets[row]), int(offsets[row + 1])
        if self._records_fd is None:
            self._records_fd = os.open(self.dir / "records.jsonl", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return json.loads(os.pread(self._records_fd, end - start, start))

    def model_of(self, row: int) -> str | None:
        """The model id of one row (from info.json when the generation holds one model)."""
        models = self.info.get("models") or {}
        if len(models) == 1:
            return next(iter(models))
        return self.record(row).get("model_id")

    def failed_records(self) -> list[dict[str, Any]]:
        path = self.dir / "failed.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def __del__(self) -> None:
        if getattr(self, "_records_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._records_fd)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every row's record (status ``ok``), in row order, then the failed records."""
        for name in ("records.jsonl", "failed.jsonl"):
            path = self.dir / name
            if not path.is_file():
                continue
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        record = json.loads(line)
                        record.pop("meta", None)
                        if name == "records.jsonl":
                            record["consolidated"] = self.generation  # served from the generation
                        yield record

    def patch(self, row: int) -> np.ndarray:
        """The ``(d, h, w, C)`` patch grid of one row (a view of its memory-mapped pack)."""
        pack, first, d, h, w = (int(v) for v in self.array("patch_index")[row])
        n = d * h * w
        if n == 0:
            return np.zeros((d, h, w, self.dim), dtype=np.float32)
        return self._pack(pack)[first:first + n].reshape(d, h, w, self.dim)

    def _pack(self, number: int) -> np.ndarray:
        if number not in self._pack_maps:
            path = self.store_path / PACKS / self.packs[number]
            try:
                self._pack_maps[number] = np.memmap(path, dtype=np.float32, mode="r").reshape(-1, self.dim)
            except (OSError, ValueError) as exc:
                raise StoreError(located(path, f"unreadable patch pack ({exc})")) from None
        return self._pack_maps[number]

    def features(self, row: int) -> VoxelFeatures:
        from voxelfm.embed.store import read_spec

        record = self.record(row)
        meta = record.get("meta") or {}
        stored = self.specs.get(str(record.get("spec_fingerprint"))) if record.get("spec_fingerprint") else None
        spec = read_spec(json.dumps(stored, sort_keys=True)) if stored else None  # the object, parsed once per spec
        return VoxelFeatures(
            cls=np.array(self.cls[row]), patch=np.array(self.patch(row)), registers=np.array(self.array("registers")[row]),
            patch_geometry=_geometry(meta.get("patch_geometry")), input_geometry=_geometry(meta.get("input_geometry")),
            spec=spec, model_id=record.get("model_id"), mode=record.get("mode") or "3d",
            spec_fingerprint=record.get("spec_fingerprint"))

    def bulk_patches(self, rows: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[Geometry | None],
                                                       list[Geometry | None], list[str | None]]:
        """CLS rows, patch grids (copies), patch and input geometries and model ids of ``rows``.

        The same values as :meth:`features` row by row, read in bulk: one indexed read of the CLS
        matrix and of the patch index, the records sliced out of one memory map of
        ``records.jsonl`` (no system call per row), and grids that lie back to back in a pack
        copied out in one run and split (each grid a view of its run's copy).
        """
        import mmap

        rows = np.asarray(rows, dtype=np.int64)
        cls = np.asarray(self.cls[rows], dtype=np.float32)
        index = np.asarray(self.array("patch_index")[rows])
        offsets = self.array("offsets")
        starts, ends = np.asarray(offsets[rows]), np.asarray(offsets[rows + 1])
        patch_geo: list[Geometry | None] = []
        input_geo: list[Geometry | None] = []
        models: list[str | None] = []
        single = self.info.get("models") or {}
        single_model = next(iter(single)) if len(single) == 1 else None
        if len(rows):
            with open(self.dir / "records.jsonl", "rb") as handle, \
                    mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as text:
                for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
                    record = json.loads(text[start:end])
                    meta = record.get("meta") or {}
                    patch_geo.append(_geometry(meta.get("patch_geometry")))
                    input_geo.append(_geometry(meta.get("input_geometry")))
                    models.append(single_model if len(single) == 1 else record.get("model_id"))
        return cls, self._grids(index), patch_geo, input_geo, models

    def _grids(self, index: np.ndarray) -> list[np.ndarray]:
        """Copies of the grids ``index`` (rows of ``patch_index``) describes, one copy per run of
        grids stored back to back in the same pack."""
        grids: list[np.ndarray] = [np.empty(0)] * len(index)
        i = 0
        while i < len(index):
            pack, first = int(index[i, 0]), int(index[i, 1])
            j, end = i, first
            while j < len(index) and int(index[j, 0]) == pack and int(index[j, 1]) == end:
                end += int(index[j, 2] * index[j, 3] * index[j, 4])
                j += 1
            block = np.array(self._pack(pack)[first:end]) if end > first else np.zeros((0, self.dim), np.float32)
            at = 0
            for k in range(i, j):
                d, h, w = (int(v) for v in index[k, 2:5])
                grids[k] = block[at:at + d * h * w].reshape(d, h, w, self.dim)
                at += d * h * w
            i = j
        return grids

    def overlay(self, live: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The last record of every scan: the generation's, replaced by newer live (manifest) records."""
        out = {str(r["scan_id"]): r for r in self.records()}
        for scan_id, record in live.items():
            mine = out.get(scan_id)
            if mine is None or float(record.get("time") or 0.0) > float(mine.get("time") or 0.0):
                out[scan_id] = record
        return out

    def serves(self, scan_id: str, live: dict[str, Any] | None) -> int | None:
        """The row holding ``scan_id`` unless a newer live record replaces it."""
        row = self.row(scan_id)
        if row is None:
            return None
        if live is not None and float(live.get("time") or 0.0) > float(self.array("times")[row]):
            return None
        return row


def _geometry(value: Any) -> Geometry | None:
    return Geometry.from_dict(value) if value else None


# -- writing a generation -------------------------------------------------------------------------
class GenerationWriter:
    """Write the rows of a new generation (known count) into a temporary directory, then commit."""

    def __init__(self, store_path: Path, count: int, dim: int, n_registers: int) -> None:
        self.store_path = store_path
        root = store_path / CONSOLIDATED
        root.mkdir(parents=True, exist_ok=True)
        (store_path / PACKS).mkdir(parents=True, exist_ok=True)
        numbers = [int(p.name.split("-")[1].split(".")[0]) for p in root.glob("gen-*")
                   if p.name.split("-")[1].split(".")[0].isdigit()]
        self.generation = f"gen-{max(numbers, default=0) + 1:06d}"
        self.tmp = root / f".{self.generation}.tmp-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        self.count, self.dim, self.n_registers = count, dim, n_registers
        from numpy.lib.format import open_memmap

        self.cls = open_memmap(self.tmp / "cls.npy", mode="w+", dtype=np.float32, shape=(count, dim))
        self.mean_patch = open_memmap(self.tmp / "mean_patch.npy", mode="w+", dtype=np.float32, shape=(count, dim))
        self.registers = open_memmap(self.tmp / "registers.npy", mode="w+", dtype=np.float32,
                                     shape=(count, n_registers, dim))
        self.patch_index = np.zeros((count, 5), dtype=np.int64)
        self.times = np.zeros(count, dtype=np.float64)
        self.lines: list[bytes | None] = [None] * count  # record lines, written in row order at commit
        self.packs: list[str] = []
        self._new_pack: Any = None
        self._new_pack_rows = 0
        self.specs: dict[str, Any] = {}
        self.ids: list[str | None] = [None] * count

    def pack_number(self, name: str) -> int:
        if name not in self.packs:
            self.packs.append(name)
        return self.packs.index(name)

    def _write_patch(self, patch: np.ndarray) -> tuple[int, int]:
        if self._new_pack is None:
            name = f"pack-{self.generation}-{os.getpid()}-{time.time_ns()}.f32"
            self._new_pack_name = name
            self._new_pack = open(self.store_path / PACKS / name, "wb")  # noqa: SIM115
        first = self._new_pack_rows
        data = np.ascontiguousarray(patch, dtype=np.float32).reshape(-1, self.dim)
        self._new_pack.write(data.tobytes())
        self._new_pack_rows += len(data)
        return self.pack_number(self._new_pack_name), first

    def add(self, row: int, record: dict[str, Any], cls: np.ndarray, registers: np.ndarray, *,
            patch: np.ndarray | None = None, pack_ref: tuple[str | None, int, tuple[int, int, int]] | None = None,
            mean_patch: np.ndarray | None = None, meta: dict[str, Any] | None = None,
            spec: FeatureSpec | None = None) -> None:
        """Row ``row``: a new patch grid (written to this generation's pack) or a reference
        ``(pack name, first row, (d, h, w))`` to rows of an existing pack of this store."""
        scan_id = str(record["scan_id"])
        self.ids[row] = scan_id
        self.cls[row] = np.asarray(cls, dtype=np.float32).reshape(-1)
        if registers.size:
            if registers.shape != self.registers.shape[1:]:
                raise StoreError(located(scan_id, f"registers of shape {registers.shape}, expected {self.registers.shape[1:]}; "
                                                  "scans with different register counts cannot share a generation"))
            self.registers[row] = registers
        if patch is not None:
            grid = tuple(int(v) for v in patch.shape[:3])
            pack, first = self._write_patch(patch) if patch.size else (0, 0)
            if patch.size:  # an empty grid leaves the (sparse, zero) row untouched
                self.mean_patch[row] = patch.reshape(-1, self.dim).mean(axis=0)
        else:
            assert pack_ref is not None  # noqa: S101 - an internal call contract, not user input
            name, first, grid = pack_ref
            pack = self.pack_number(name) if name is not None else 0
            if mean_patch is not None and grid[0] * grid[1] * grid[2]:
                self.mean_patch[row] = mean_patch
        self.patch_index[row] = (pack, first, *grid)
        if spec and record.get("spec_fingerprint"):
            from voxelfm.embed.store import spec_dict

            self.specs.setdefault(str(record["spec_fingerprint"]), spec_dict(spec))
        clean = {k: record.get(k) for k in _RECORD_KEYS}
        clean["status"], clean["error"], clean["grid_shape"] = "ok", None, list(grid)
        clean["meta"] = meta or {}
        self.times[row] = float(record.get("time") or 0.0)
        self.lines[row] = (json.dumps(clean, default=str) + "\n").encode("utf-8")
        if row % 65_536 == 65_535:
            release_pages(self.cls, self.mean_patch, self.registers)

    def add_rows(self, rows: np.ndarray, gen: Consolidated, src_rows: np.ndarray, pack_names: list[str | None]) -> None:
        """Copy rows ``src_rows`` of another generation to ``rows`` in bulk (arrays block by block,
        record lines verbatim); ``pack_names[i]`` is pack ``i`` of ``gen`` under this store's packs."""
        numbers = np.array([self.pack_number(n) if n is not None else 0 for n in pack_names] or [0], dtype=np.int64)
        records = (gen.dir / "records.jsonl").read_bytes()
        offsets = np.array(gen.array("offsets")).tolist()
        registers = gen.array("registers")
        if registers.shape[1:] != self.registers.shape[1:] and len(rows):
            raise StoreError(located(gen.dir, f"registers of shape {registers.shape[1:]}, expected "
                                              f"{self.registers.shape[1:]}; they cannot share a generation"))
        step = 65_536
        for lo in range(0, len(rows), step):
            dst, src = rows[lo:lo + step], src_rows[lo:lo + step]
            self.cls[dst] = gen.cls[src]
            index = np.array(gen.array("patch_index")[src])
            grids = index[:, 2] * index[:, 3] * index[:, 4] > 0  # rows without a grid keep a sparse zero row
            if grids.any():
                self.mean_patch[dst[grids]] = gen.array("mean_patch")[src[grids]]
            if self.registers.shape[1]:
                self.registers[dst] = registers[src]
            index[:, 0] = numbers[index[:, 0]] if len(pack_names) else 0
            self.patch_index[dst] = index
            self.times[dst] = gen.array("times")[src]
            release_pages(self.cls, self.mean_patch, self.registers, gen.cls, gen.array("mean_patch"), registers)
        for dst, src in zip(rows.tolist(), src_rows.tolist(), strict=True):
            self.ids[dst] = gen.ids[src]
            self.lines[dst] = records[offsets[src]:offsets[src + 1]]
        for fp, spec in gen.specs.items():
            self.specs.setdefault(fp, spec)

    def commit(self, failed: Sequence[dict[str, Any]], info: dict[str, Any]) -> str:
        """Finish the files, rename the directory into place and point ``CURRENT`` at it."""
        missing = sum(1 for line in self.lines if line is None)
        if missing:
            raise StoreError(located(self.tmp, f"{missing} of {self.count} rows were not written"))
        offsets = np.zeros(self.count + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(line) for line in self.lines])  # type: ignore[arg-type]
        with open(self.tmp / "records.jsonl", "wb") as handle:
            for lo in range(0, self.count, 65_536):
                handle.write(b"".join(self.lines[lo:lo + 65_536]))  # type: ignore[arg-type]
        if self._new_pack is not None:
            self._new_pack.flush()
            os.fsync(self._new_pack.fileno())
            self._new_pack.close()
        for array in (self.cls, self.mean_patch, self.registers):
            array.flush()
        del self.cls, self.mean_patch, self.registers
        np.save(self.tmp / "patch_index.npy", self.patch_index)
        np.save(self.tmp / "times.npy", self.times)
        np.save(self.tmp / "offsets.npy", offsets)
        (self.tmp / "ids.txt").write_text("".join(i + "\n" for i in self.ids), encoding="utf-8")
        (self.tmp / "failed.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in failed), encoding="utf-8")
        (self.tmp / "specs.json").write_text(json.dumps(self.specs))
        (self.tmp / "packs.json").write_text(json.dumps(self.packs))
        info = {"format": FORMAT, "count": self.count, "dim": self.dim, "registers": self.n_registers,
                "created": time.time(), **info}
        (self.tmp / "info.json").write_text(json.dumps(info, indent=1))
        for path in self.tmp.iterdir():  # durable before the commit point
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        final = self.tmp.parent / self.generation
        os.replace(self.tmp, final)
        atomic_write_text(self.tmp.parent / CURRENT, self.generation + "\n")
        return self.generation

    def abort(self) -> None:
        if self._new_pack is not None:
            with contextlib.suppress(Exception):
                self._new_pack.close()
                (self.store_path / PACKS / self._new_pack_name).unlink()
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- candidates from a store -----------------------------------------------------------------------
@dataclass
class _Candidate:
    scan_id: str
    store: EmbeddingStore
    record: dict[str, Any]
    row: int | None  # a row of the store's generation, or None for a live entry
    gen: Consolidated | None = None  # that generation (opened once per store)

    @property
    def time(self) -> float:
        return float(self.record.get("time") or 0.0)


def _live_latest(store: EmbeddingStore) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for record in store._read_records():  # manifest records only, ordered
        out[str(record["scan_id"])] = record
    return out


def _candidates(store: EmbeddingStore) -> tuple[list[_Candidate], list[dict[str, Any]]]:
    """Every scan's current embedding in one store (and its failed last records)."""
    cons = Consolidated.open(store.path)
    live = _live_latest(store)
    oks: list[_Candidate] = []
    failed: list[dict[str, Any]] = []
    if cons is not None:
        times = np.array(cons.array("times")).tolist()  # plain floats: memmap scalar access is slow
        for row, scan_id in enumerate(cons.ids):
            newer = live.get(scan_id)
            if newer is not None and float(newer.get("time") or 0.0) > float(times[row]):
                continue
            live.pop(scan_id, None)
            oks.append(_Candidate(scan_id, store, {"scan_id": scan_id, "time": float(times[row])}, row, cons))
        failed += [r for r in cons.failed_records() if r["scan_id"] not in live]
    for scan_id, record in live.items():
        if record.get("status") == "ok":
            oks.append(_Candidate(scan_id, store, record, None))
        else:
            failed.append(record)
    return oks, failed


def _digest(candidate: _Candidate) -> str:
    """A hash of the arrays of one candidate: identical duplicates are kept once."""
    if candidate.row is not None and candidate.gen is not None:
        cons = candidate.gen
        arrays = [cons.cls[candidate.row], cons.patch(candidate.row), cons.array("registers")[candidate.row]]
    else:
        feats = candidate.store.get(candidate.scan_id)
        arrays = [feats.cls, feats.patch, feats.registers]
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float32)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# -- compaction -----------------------------------------------------------------------------------
@dataclass
class CompactReport:
    """What :func:`compact` did."""

    out: Path
    generation: str | None = None
    scans: int = 0
    from_entries: int = 0
    identical_duplicates: int = 0
    replaced_duplicates: list[str] = field(default_factory=list)
    failed: int = 0
    models: dict[str, int] = field(default_factory=dict)
    removed_entries: int = 0
    seconds: float = 0.0


@contextlib.contextmanager
def _all_locks(store: EmbeddingStore) -> Iterator[None]:
    """Every writer lock of a store (main and per-shard manifests): no run writes while we compact."""
    from voxelfm.embed.store import EmbeddingStore as _Store

    shards = [(0, 0)]
    for path in store.path.glob("manifest-*-of-*.jsonl"):
        parts = path.stem.split("-")
        with contextlib.suppress(ValueError, IndexError):
            shards.append((int(parts[1]), int(parts[3])))
    with contextlib.ExitStack() as stack:
        for shard in sorted(set(shards)):
            stack.enter_context(_Store(store.path, shard=None if shard == (0, 0) else shard).lock())
        yield


def compact(out: str | os.PathLike[str], sources: Sequence[str | os.PathLike[str]] = (), *,
            allow_mixed_models: bool = False, on_conflict: str = "error", keep_entries: bool = False) -> CompactReport:
    """Fold ``out``'s own entries and every store in ``sources`` into one new generation of ``out``.

    The same scan id in two stores is kept once when both embeddings are identical; when they
    differ the compaction is refused (``on_conflict="error"``) or the newer record wins
    (``"newest"``). A store holds one model's embeddings: several models are refused unless
    ``allow_mixed_models``. Folded manifests and entry files of ``out`` are deleted after the
    commit (``keep_entries`` keeps them); ``sources`` are only read.
    """
    from voxelfm.embed.store import EmbeddingStore

    if on_conflict not in ("error", "newest"):
        raise StoreError(f"on_conflict must be 'error' or 'newest', got {on_conflict!r}")
    start = time.perf_counter()
    out_store = EmbeddingStore(out)
    report = CompactReport(Path(out))
    src_stores = []
    for src in sources:
        path = Path(src)
        if not path.is_dir():
            raise StoreError(located(path, "embedding store does not exist"))
        if path.resolve() == out_store.path.resolve():
            continue
        if not any(path.glob("manifest*.jsonl")) and not current_path(path).is_file():
            raise StoreError(located(path, "not an embedding store (no manifest and no consolidated generation)"))
        src_stores.append(EmbeddingStore(path))
    with contextlib.ExitStack() as stack:
        for store in [out_store, *src_stores]:
            stack.enter_context(_all_locks(store))
        folded_manifests = sorted(out_store.path.glob("manifest*.jsonl"))
        by_id: dict[str, list[_Candidate]] = {}
        failed: dict[str, dict[str, Any]] = {}
        for store in [out_store, *src_stores]:
            oks, bad = _candidates(store)
            for c in oks:
                by_id.setdefault(c.scan_id, []).append(c)
            for record in bad:
                sid = str(record["scan_id"])
                if sid not in failed or float(record.get("time") or 0) > float(failed[sid].get("time") or 0):
                    failed[sid] = record
        chosen, conflicts = _resolve(by_id, on_conflict, report)
        if conflicts:
            shown = "; ".join(conflicts[:5]) + (f"; … {len(conflicts) - 5} more" if len(conflicts) > 5 else "")
            raise StoreError(located(out_store.path, f"{len(conflicts)} scan id(s) have different embeddings in "
                                     f"different stores: {shown}; re-embed them, or pass --on-conflict newest"))
        failed_rows = [r for sid, r in sorted(failed.items()) if sid not in chosen]
        report.failed = len(failed_rows)
        _write(out_store, chosen, failed_rows, report, allow_mixed_models=allow_mixed_models,
               sources=[str(s.path) for s in src_stores])
        if not keep_entries:
            report.removed_entries = _clean(out_store, folded_manifests)
    report.seconds = time.perf_counter() - start
    return report


def _resolve(by_id: dict[str, list[_Candidate]], on_conflict: str, report: CompactReport
             ) -> tuple[dict[str, _Candidate], list[str]]:
    chosen: dict[str, _Candidate] = {}
    conflicts: list[str] = []
    for scan_id in sorted(by_id):
        group = sorted(by_id[scan_id], key=lambda c: c.time)
        if len(group) == 1:
            chosen[scan_id] = group[0]
            continue
        digests = {_digest(c) for c in group}
        if len(digests) == 1:
            report.identical_duplicates += len(group) - 1
        elif on_conflict == "newest":
            report.replaced_duplicates.append(scan_id)
        else:
            conflicts.append(f"{scan_id} ({', '.join(str(c.store.path) for c in group)})")
        chosen[scan_id] = group[-1]
    return chosen, conflicts


def _write(out_store: EmbeddingStore, chosen: dict[str, _Candidate], failed: list[dict[str, Any]],
           report: CompactReport, *, allow_mixed_models: bool, sources: list[str]) -> None:
    ids = sorted(chosen)
    if not ids and not failed:
        raise StoreError(located(out_store.path, "nothing to compact: no embeddings in the store or its sources"))
    gens: dict[str, Consolidated] = {}
    for c in chosen.values():
        if c.gen is not None:
            gens.setdefault(str(c.store.path), c.gen)
    # dims, registers and models: from the generation info or the live records
    models: dict[str, int] = {}
    dim, n_reg = None, None
    for sid in ids:
        c = chosen[sid]
        if c.row is not None:
            gen = gens[str(c.store.path)]
            model = gen.model_of(c.row)
            d, r = gen.dim, int(gen.array("registers").shape[1])
        else:
            model, d, r = c.record.get("model_id"), int(c.record.get("embed_dim") or 0), None
        models[str(model)] = models.get(str(model), 0) + 1
        if dim is None:
            dim = d
        elif d and d != dim:
            raise StoreError(located(c.store.path, f"scan {sid!r} has {d}-dim features but others have {dim}"))
        if r is not None:
            n_reg = r if n_reg is None else n_reg
    report.models = models
    if len(models) > 1 and not allow_mixed_models:
        listed = ", ".join(f"{m} ({n} scans)" for m, n in sorted(models.items(), key=lambda kv: -kv[1]))
        raise StoreError(located(out_store.path, f"the stores hold embeddings of several models: {listed}; features of "
                                 "different models are not comparable (pass --allow-mixed-models to merge anyway)"))
    if n_reg is None:
        first_live = next((chosen[s] for s in ids if chosen[s].row is None), None)
        n_reg = int(first_live.store.get(first_live.scan_id).registers.shape[0]) if first_live else 0
    writer = GenerationWriter(out_store.path, len(ids), int(dim or 0), n_reg)
    linked: dict[tuple[str, int], str] = {}
    bulk: dict[str, tuple[list[int], list[int]]] = {}  # generation rows, copied in bulk per source store
    try:
        for row, sid in enumerate(ids):
            c = chosen[sid]
            if c.row is not None:
                dst, src = bulk.setdefault(str(c.store.path), ([], []))
                dst.append(row)
                src.append(c.row)
                continue
            feats = c.store.get(sid)
            meta = {"patch_geometry": feats.patch_geometry.to_dict() if feats.patch_geometry else None,
                    "input_geometry": feats.input_geometry.to_dict() if feats.input_geometry else None}
            writer.add(row, c.record, feats.cls, np.asarray(feats.registers, np.float32), patch=np.asarray(feats.patch),
                       meta=meta, spec=feats.spec)
            report.from_entries += 1
        for key, (dst, src) in bulk.items():
            gen = gens[key]
            names: list[str | None] = [_pack_for(out_store.path, gen, i, linked) for i in range(len(gen.packs))]
            writer.add_rows(np.asarray(dst, dtype=np.int64), gen, np.asarray(src, dtype=np.int64), names)
        report.generation = writer.commit(failed, {"models": models, "sources": sources})
    except BaseException:
        writer.abort()
        raise
    report.scans = len(ids)


def _pack_for(out: Path, gen: Consolidated, number: int, linked: dict[tuple[str, int], str]) -> str:
    """The name under ``out/packs`` of pack ``number`` of ``gen`` (hard-linked or copied in from another store)."""
    name = gen.packs[number]
    if gen.store_path.resolve() == out.resolve():
        return name
    key = (str(gen.store_path), number)
    if key not in linked:
        target_name = f"{gen.store_path.name}-{gen.generation}-{name}"
        target = out / PACKS / target_name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target_name}.tmp-{os.getpid()}")
            try:
                os.link(gen.store_path / PACKS / name, tmp)
            except OSError:
                shutil.copyfile(gen.store_path / PACKS / name, tmp)
            os.replace(tmp, target)
        linked[key] = target_name
    return linked[key]


def _clean(store: EmbeddingStore, folded_manifests: list[Path]) -> int:
    """After the commit: drop folded manifests, entry files, older generations and unused packs."""
    cons = Consolidated.open(store.path)
    for manifest in folded_manifests:  # manifests first: an entry is never listed without its file
        with contextlib.suppress(FileNotFoundError):
            manifest.unlink()
    removed = 0
    entries = store.path / "entries"
    if entries.is_dir():
        live = _live_latest(store)  # records appended since (none while we hold the locks)
        for path in entries.glob("*.safetensors"):
            if path.stem not in live:
                path.unlink()
                removed += 1
    root = store.path / CONSOLIDATED
    for gen_dir in root.glob("gen-*"):
        if cons is not None and gen_dir.name != cons.generation:
            shutil.rmtree(gen_dir, ignore_errors=True)
    for tmp in root.glob(".gen-*.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    used = set(cons.packs) if cons is not None else set()
    for pack in (store.path / PACKS).glob("*"):
        if pack.name not in used:
            pack.unlink()
    return removed


__all__ = ["CONSOLIDATED", "CompactReport", "Consolidated", "GenerationWriter", "compact", "release_pages"]
