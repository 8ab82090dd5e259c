"""voxelfm.embed: frozen features of CT scans, one scan or a cohort, and the store that holds them.

* :func:`extract_features(model, source, spec=None, mode="3d"|"2.5d", device=None, dtype=None,
  slab_thickness=None, slab_overlap=None)` -> :class:`voxelfm.core.VoxelFeatures`.
* :class:`EmbeddingStore(path)` — ``entries/<scan_id>.safetensors`` + ``manifest*.jsonl``;
  ``ids``, ``get``, ``cls_matrix``, ``records``, ``write``, ``record_failure``,
  ``import_pth_cache``, ``export_pth_cache``.
* :func:`run_embedding(model, jobs, store, ...)` with :func:`collect_jobs`, :func:`parse_shard`,
  :func:`shard_jobs` — the engine of ``voxelfm embed``; :func:`run_embeddings(targets, jobs, ...)`
  fills several stores (:class:`EmbedTarget`: model × mode × spec) in one pass over the scans.
* :func:`plan_slabs`, :func:`stitch_patches` — the 2.5D slab scheme (docs/extraction.md).
"""

from voxelfm.embed.batch import (
    EmbedJob,
    EmbedSummary,
    EmbedTarget,
    collect_jobs,
    parse_shard,
    read_manifest_csv,
    run_embedding,
    run_embeddings,
    shard_jobs,
)
from voxelfm.embed.extract import extract_features, features_from_preprocessed
from voxelfm.embed.slabs import SlabPlan, plan_slabs, stitch_patches
from voxelfm.embed.store import EmbeddingStore, manifest_name, spec_fingerprint

__all__ = [
    "EmbedJob",
    "EmbedSummary",
    "EmbedTarget",
    "EmbeddingStore",
    "SlabPlan",
    "collect_jobs",
    "extract_features",
    "features_from_preprocessed",
    "manifest_name",
    "parse_shard",
    "plan_slabs",
    "read_manifest_csv",
    "run_embedding",
    "run_embeddings",
    "shard_jobs",
    "spec_fingerprint",
    "stitch_patches",
]
