"""In-memory probe data: features, labels and splits, aligned row by row.

Probes never touch the embedding store directly: :class:`FeatureSet` holds the ids, CLS vectors,
patch grids and their geometries in memory (built from arrays in tests, or from an
``EmbeddingStore`` with :meth:`FeatureSet.from_store`). :func:`read_labels` and
:func:`resolve_splits` turn a labels CSV and a split (column, split files, or a patient-level
split made by voxelfm) into a :class:`ProbeData` with clear errors for every way they can disagree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from voxelfm.core.errors import DataError, StoreError, located
from voxelfm.core.geometry import Geometry

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
ID_COLUMNS: tuple[str, ...] = ("scan_id", "series_uid")


@dataclass
class FeatureSet:
    """Frozen features of N scans: ``cls`` (N, C) and optionally patch grids (d, h, w, C) each.

    ``patch_geometry`` / ``input_geometry`` (one per scan, may be ``None``) locate every patch
    centre in world space and in the preprocessed input grid; without them patch centres are
    assumed to tile the input grid evenly.
    """

    ids: list[str]
    cls: np.ndarray
    patches: list[np.ndarray] | None = None
    patch_geometry: list[Geometry | None] | None = None
    input_geometry: list[Geometry | None] | None = None
    model_id: str | None = None
    name: str | None = None
    #: ``{scan_id: row}``; ``scan_id in features`` asks it.
    index: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.ids = [str(i) for i in self.ids]
        self.cls = np.ascontiguousarray(np.asarray(self.cls, dtype=np.float32))
        n = len(self.ids)
        if self.cls.ndim != 2 or self.cls.shape[0] != n:
            raise DataError(located(self.name, f"CLS matrix has shape {self.cls.shape} for {n} ids"))
        if len(set(self.ids)) != n:
            raise DataError(located(self.name, "feature ids are not unique"))
        if self.patches is not None:
            if len(self.patches) != n:
                raise DataError(located(self.name, f"{len(self.patches)} patch grids for {n} ids"))
            for sid, grid in zip(self.ids, self.patches, strict=True):
                if grid.ndim != 4 or grid.shape[-1] != self.dim:
                    raise DataError(located(self.name, f"{sid}: patch grid {grid.shape} is not (d, h, w, {self.dim})"))
        for attr in ("patch_geometry", "input_geometry"):
            value = getattr(self, attr)
            if value is None:
                setattr(self, attr, [None] * n)
            elif len(value) != n:
                raise DataError(located(self.name, f"{len(value)} {attr} entries for {n} ids"))
        self.index = {sid: i for i, sid in enumerate(self.ids)}

    @property
    def dim(self) -> int:
        return int(self.cls.shape[1])

    @property
    def has_patches(self) -> bool:
        return self.patches is not None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, scan_id: object) -> bool:
        return scan_id in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __getitem__(self, scan_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(cls (C,), patch (d, h, w, C))`` of one scan: the mapping report generation reads."""
        row = self.position(scan_id)
        return self.cls[row], self.require_patches("report generation")[row]

    def position(self, scan_id: str) -> int:
        try:
            return self.index[scan_id]
        except KeyError:
            raise StoreError(located(self.name, f"no features for scan {scan_id!r}")) from None

    def subset(self, ids: Sequence[str]) -> FeatureSet:
        """The rows of ``ids`` in that order."""
        rows = [self.position(str(i)) for i in ids]
        return FeatureSet(
            ids=[self.ids[r] for r in rows],
            cls=self.cls[rows],
            patches=None if self.patches is None else [self.patches[r] for r in rows],
            patch_geometry=[self.patch_geometry[r] for r in rows],  # type: ignore[index]
            input_geometry=[self.input_geometry[r] for r in rows],  # type: ignore[index]
            model_id=self.model_id,
            name=self.name,
        )

    def require_patches(self, what: str) -> list[np.ndarray]:
        if self.patches is None:
            raise DataError(located(self.name, f"{what} needs patch tokens; load the features with patches=True"))
        return self.patches

    def tokens(self, row: int) -> np.ndarray:
        """Patch tokens of one scan flattened to (d*h*w, C) in (z, y, x) order."""
        grid = self.require_patches("patch tokens")[row]
        return grid.reshape(-1, grid.shape[-1])

    def mean_patch(self) -> np.ndarray:
        """(N, C) mean-pooled patch tokens."""
        return np.stack([g.reshape(-1, g.shape[-1]).mean(0) for g in self.require_patches("mean pooling")])

    def patch_positions(self, row: int) -> np.ndarray:
        """Normalised (z, y, x) position in [0, 1] of every patch centre of one scan, (d, h, w, 3).

        Computed from the true patch-centre geometry relative to the preprocessed input grid
        (``(index + 0.5) / n`` per axis), not from a linspace whose endpoints sit on the grid edges
        as the original localisation probe did.
        """
        grid_shape = self.require_patches("patch positions")[row].shape[:3]
        pg, ig = self.patch_geometry[row], self.input_geometry[row]  # type: ignore[index]
        if pg is not None and ig is not None:
            idx = ig.world_to_index(pg.voxel_centres_world())
            return ((idx + 0.5) / np.asarray(ig.shape, dtype=np.float64)).astype(np.float32)
        axes = [(np.arange(n) + 0.5) / n for n in grid_shape]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)

    @classmethod
    def from_store(
        cls, store: Any, ids: Sequence[str] | None = None, *, patches: bool = True, name: str | None = None,
    ) -> FeatureSet:
        """Load features from an :class:`voxelfm.embed.EmbeddingStore` (or a path to one)."""
        if isinstance(store, str | os.PathLike):
            from voxelfm.embed import EmbeddingStore

            path = Path(store)
            if not path.exists():
                raise StoreError(located(path, "embedding store does not exist"))
            store = EmbeddingStore(path)
        available = list(store.ids())
        present = set(available)
        wanted = available if ids is None else [str(i) for i in ids if str(i) in present]
        if not wanted:
            where = getattr(store, "path", store)
            if not available:
                failed = len(store.ids("failed")) if hasattr(store, "ids") else 0
                raise StoreError(located(where, "the store holds no usable embeddings"
                                                + (f" ({failed} scan(s) failed to embed)" if failed else "")))
            asked = list(dict.fromkeys(str(i) for i in ids or ()))
            raise StoreError(located(where, f"none of the {len(asked)} label ids match the {len(available)} store "
                                            f"ids (labels e.g. {asked[:3]}, store e.g. {available[:3]}); are the "
                                            "labels for this store, with the same scan_id spelling?"))
        label = name or str(getattr(store, "path", "store"))
        if not patches:
            if hasattr(store, "cls_features"):
                # In bulk: a compacted store's CLS matrix is one memory map and its models come from
                # the generation's info; only scans embedded since the compaction open a file.
                table = store.cls_features(None if ids is None else wanted)
                got_ids, matrix, model_ids = table.ids, table.cls, set(table.models) - {None}
            else:  # a store-like object with only cls_matrix()/latest()
                got_ids, matrix = store.cls_matrix(wanted)
                latest = store.latest() if hasattr(store, "latest") else {}
                model_ids = {latest.get(i, {}).get("model_id") for i in got_ids} - {None}
            if len(model_ids) > 1:
                raise StoreError(located(label, f"entries come from several models: {sorted(model_ids)}"))
            return cls(list(got_ids), matrix, None, None, None, next(iter(model_ids), None), label)
        if hasattr(store, "patch_features"):  # in bulk from a compacted store's memory maps
            bulk = store.patch_features(wanted)
            matrix, grids, pgeo, igeo = bulk.cls, bulk.patches, bulk.patch_geometry, bulk.input_geometry
            model_ids = set(bulk.model_ids)
        else:  # a store-like object with only get()
            cls_rows, grids, pgeo, igeo, model_ids = [], [], [], [], set()
            for sid in wanted:
                f = store.get(sid)
                cls_rows.append(np.asarray(f.cls, dtype=np.float32).reshape(-1))
                grids.append(np.asarray(f.patch, dtype=np.float32))
                pgeo.append(f.patch_geometry)
                igeo.append(f.input_geometry)
                model_ids.add(f.model_id)
            matrix = np.stack(cls_rows)
        if len(model_ids) > 1:
            raise StoreError(located(label, f"entries come from several models: {sorted(map(str, model_ids))}"))
        return cls(wanted, matrix, grids, pgeo, igeo, next(iter(model_ids)), label)


#: Features read in this process: (resolved store path, name, with patches) -> (store stamp, features).
_CACHE: dict[tuple[str, str | None, bool], tuple[tuple[Any, ...], FeatureSet]] = {}


def cached_features(store: str | os.PathLike[str], *, patches: bool = True, name: str | None = None) -> FeatureSet:
    """:meth:`FeatureSet.from_store` of a store path, read once per process while the store is unchanged.

    The one cache of a store's features: the probe jobs of ``voxelfm evaluate`` and of the demo
    (:mod:`voxelfm.probes.jobs`) and the demo's report generation read through it, so a process
    reads each store once. A set read with patch tokens also serves CLS-only requests. Entries stay
    until :func:`forget_features`; a store that changed since (its :meth:`~voxelfm.embed.EmbeddingStore.stamp`)
    is read again.
    """
    from voxelfm.embed import EmbeddingStore

    path = Path(store).resolve()
    if not path.exists():
        raise StoreError(located(path, "embedding store does not exist"))
    stamp = EmbeddingStore(path).stamp()
    for with_patches in (True,) if patches else (True, False):
        hit = _CACHE.get((str(path), name, with_patches))
        if hit is not None and hit[0] == stamp:
            return hit[1]
    features = FeatureSet.from_store(path, patches=patches, name=name)
    _CACHE[(str(path), name, patches)] = (stamp, features)
    return features


def forget_features(keep: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Release the cached features of every store but those in ``keep`` (paths)."""
    kept = {str(Path(p).resolve()) for p in keep}
    for key in [k for k in _CACHE if k[0] not in kept]:
        del _CACHE[key]


def read_labels(source: str | os.PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    """Read a labels CSV (or copy a DataFrame) with a ``scan_id`` (or ``series_uid``) column.

    Returns a frame indexed by ``scan_id`` (strings). Duplicate ids are an error.
    """
    name = "labels" if isinstance(source, pd.DataFrame) else os.fspath(source)
    if isinstance(source, pd.DataFrame):
        df = source.copy()
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(located(path, "labels file does not exist"))
        try:
            df = pd.read_csv(path, dtype={c: str for c in (*ID_COLUMNS, "patient_id")})
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise DataError(located(path, f"cannot parse as CSV ({exc})")) from None
    if df.index.name in ID_COLUMNS and not any(c in df.columns for c in ID_COLUMNS):
        df = df.reset_index()
    id_col = next((c for c in ID_COLUMNS if c in df.columns), None)
    if id_col is None:
        raise DataError(located(name, f"no id column (expected one of {', '.join(ID_COLUMNS)}); columns: {list(df.columns)}"))
    df = df.rename(columns={id_col: "scan_id"})
    df["scan_id"] = df["scan_id"].astype(str)
    dup = df["scan_id"][df["scan_id"].duplicated()].unique()
    if len(dup):
        raise DataError(located(name, f"{len(dup)} duplicated scan ids, e.g. {list(dup[:3])}"))
    df.attrs["source"] = name
    return df.set_index("scan_id", drop=False)


def require_columns(labels: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise a :class:`DataError` naming the labels file and every missing column."""
    missing = [c for c in columns if c not in labels.columns]
    if missing:
        raise DataError(located(labels.attrs.get("source", "labels"),
                                f"missing column(s) {missing}; available: {list(labels.columns)}"))


def usable_binary(labels: pd.DataFrame, columns: Sequence[str], min_per_class: int = 1,
                  split_column: str = "split") -> list[str]:
    """The ``columns`` with both classes (at least ``min_per_class`` each) in every split: the binary
    targets a probe can be trained, selected and tested on."""
    def ok(col: str) -> bool:
        for split in SPLITS:
            values = labels.loc[labels[split_column] == split, col].dropna().astype(int)
            if min(values.sum(), len(values) - values.sum()) < min_per_class:
                return False
        return True

    return [c for c in columns if c in labels.columns and ok(c)]


def usable_continuous(labels: pd.DataFrame, columns: Sequence[str], split_column: str = "split") -> list[str]:
    """The numeric ``columns`` without gaps that vary in the training split (regression targets)."""
    values = {c: pd.to_numeric(labels[c], errors="coerce") for c in columns if c in labels.columns}
    return [c for c, v in values.items() if v.notna().all() and v[labels[split_column] == "train"].std() > 0]


def _normalise_split_values(values: pd.Series, source: str) -> pd.Series:
    mapped = values.astype(str).str.strip().str.lower().map(_SPLIT_ALIASES)
    bad = values[mapped.isna() & values.notna()]
    if len(bad):
        raise DataError(located(source, f"unknown split names {sorted(set(bad.astype(str)))[:5]} (use train/val/test)"))
    return mapped


def read_split_dir(directory: str | os.PathLike[str]) -> pd.Series:
    """Split from ``train.csv``, ``val.csv`` (or ``valid.csv``) and ``test.csv``, each with an id column."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError(located(root, "split directory does not exist"))
    parts: dict[str, str] = {}
    for split, names in (("train", ("train",)), ("val", ("val", "valid", "validation")), ("test", ("test",))):
        path = next((root / f"{n}.csv" for n in names if (root / f"{n}.csv").is_file()), None)
        if path is None:
            raise DataError(located(root, f"no {split}.csv"))
        df = read_labels(path)
        for sid in df["scan_id"]:
            if sid in parts and parts[sid] != split:
                raise DataError(located(root, f"scan {sid!r} is in both {parts[sid]} and {split}"))
            parts[sid] = split
    return pd.Series(parts, name="split")


def check_patient_leak(labels: pd.DataFrame, split: pd.Series, patient_column: str = "patient_id") -> None:
    """Raise if one patient's scans fall into more than one split."""
    if patient_column not in labels.columns:
        return
    joined = pd.DataFrame({"patient": labels[patient_column], "split": split.reindex(labels.index)}).dropna()
    n_splits = joined.groupby("patient")["split"].nunique()
    leaking = n_splits[n_splits > 1]
    if len(leaking):
        raise DataError(located(labels.attrs.get("source", "labels"),
                                f"{len(leaking)} patient(s) have scans in more than one split "
                                f"(e.g. {list(leaking.index[:3])}): the split leaks across patients"))


def resolve_splits(
    labels: pd.DataFrame, *, split_column: str | None = "split", split_dir: str | os.PathLike[str] | None = None,
    patient_column: str = "patient_id", seed: int = 4, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    stratify: str | None = None,
) -> pd.Series:
    """Train/val/test assignment per scan id, from split files, a split column or a new patient split.

    The order of preference is ``split_dir``, then ``split_column`` if present, then a patient-level
    split made with :func:`voxelfm.data.splits.patient_level_split`. Any split is checked for
    patient leakage when a ``patient_column`` exists.
    """
    source = labels.attrs.get("source", "labels")
    if split_dir is not None:
        split = read_split_dir(split_dir)
    elif split_column and split_column in labels.columns:
        split = _normalise_split_values(labels[split_column], source)
        split.index = labels.index
    else:
        try:
            from voxelfm.data.splits import patient_level_split
        except ImportError:
            raise DataError(located(source, f"no {split_column!r} column and voxelfm.data.splits is unavailable; "
                                            "pass a split column or a split directory")) from None
        if patient_column not in labels.columns:
            raise DataError(located(source, f"cannot make a patient-level split without a {patient_column!r} column"))
        made = patient_level_split(labels, fractions=fractions, seed=seed, patient_col=patient_column,
                                   stratify=stratify)
        split = _normalise_split_values(pd.Series(made, index=labels.index), source)
    split = split.reindex(labels.index)
    check_patient_leak(labels, split, patient_column)
    return split


@dataclass
class ProbeData:
    """Features, labels and split aligned row by row (only scans with embeddings and labels)."""

    features: FeatureSet
    labels: pd.DataFrame
    split: np.ndarray
    dropped: dict[str, int] = field(default_factory=dict)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def counts(self) -> dict[str, int]:
        return {s: int(np.sum(self.split == s)) for s in SPLITS}

    @property
    def ids(self) -> list[str]:
        return self.features.ids


def assemble(
    features: FeatureSet, labels: pd.DataFrame, split: pd.Series, required: Sequence[str] = (),
    *, require_splits: Sequence[str] = SPLITS,
) -> ProbeData:
    """Keep scans that have features, a split and non-missing ``required`` labels; report the rest."""
    source = labels.attrs.get("source", "labels")
    require_columns(labels, required)
    label_ids = [sid for sid in labels.index if isinstance(split.get(sid), str)]
    no_split = len(labels) - len(label_ids)
    with_feats = [sid for sid in label_ids if sid in features]
    no_features = len(label_ids) - len(with_feats)
    if required:
        complete = labels.loc[with_feats, list(required)].notna().all(axis=1)
        keep = [sid for sid in with_feats if complete[sid]]
    else:
        keep = with_feats
    missing_label = len(with_feats) - len(keep)
    dropped = {"no_embedding": no_features, "missing_label": missing_label, "no_split": no_split}
    if no_features:
        log.warning("%s: %d of %d labelled scans have no embedding and are skipped", source, no_features, len(label_ids))
    if missing_label:
        log.warning("%s: %d scans lack a value for %s and are skipped", source, missing_label, list(required))
    if not keep:
        raise DataError(located(source, f"no scan has features, a split and labels ({dropped}); "
                                        f"store holds {len(features)} scans, e.g. {features.ids[:3]}"))
    sub = features.subset(keep)
    split_arr = np.asarray([split[sid] for sid in keep], dtype=object)
    for s in require_splits:
        if not np.any(split_arr == s):
            raise DataError(located(source, f"the {s} split is empty after dropping scans ({dropped})"))
    frame = labels.loc[keep].copy()
    frame.attrs["source"] = source
    return ProbeData(sub, frame, split_arr, dropped)


__all__ = [
    "FeatureSet",
    "ProbeData",
    "SPLITS",
    "assemble",
    "cached_features",
    "check_patient_leak",
    "forget_features",
    "read_labels",
    "read_split_dir",
    "require_columns",
    "resolve_splits",
    "usable_binary",
    "usable_continuous",
]
