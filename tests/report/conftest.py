"""Shared fixtures for the report tests: a tiny tokenizer + Llama and a synthetic cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxelfm.report.dataset import ReportRecord

FINDINGS = ("lung_nodule", "pleural_effusion", "emphysema", "cardiomegaly")
SENTENCES = {
    "lung_nodule": "Small nodule in the right upper lobe.",
    "pleural_effusion": "Right pleural effusion.",
    "emphysema": "Centrilobular emphysema.",
    "cardiomegaly": "Cardiomegaly.",
}
NORMAL = "No relevant abnormal findings identified in the current examination."


def synthetic_cohort(n: int = 24, width: int = 16, seed: int = 0,
                     ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[ReportRecord]]:
    """Features where each finding adds its own prototype to some patches; templated reports."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(len(FINDINGS), width))
    features, records = {}, []
    for i in range(n):
        present = rng.random(len(FINDINGS)) < 0.4
        patch = rng.normal(size=(2, 3, 3, width)).astype(np.float32)
        for k in np.flatnonzero(present):
            patch[k % 2] += 2 * protos[k]
        sid = f"scan{i:03d}"
        features[sid] = (patch.mean(axis=(0, 1, 2)), patch)
        text = " ".join(SENTENCES[FINDINGS[k]] for k in np.flatnonzero(present)) or NORMAL
        split = "train" if i < n * 2 // 3 else ("val" if i < n * 5 // 6 else "test")
        records.append(ReportRecord(sid, split, text, patient_id=f"p{i:03d}"))
    return features, records


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from voxelfm.report.chat import DEFAULT_INSTRUCTION, DEFAULT_SYSTEM_PROMPT
    from voxelfm.report.lm import build_tiny_lm

    texts = [*SENTENCES.values(), NORMAL, DEFAULT_SYSTEM_PROMPT, DEFAULT_INSTRUCTION]
    return build_tiny_lm(texts * 3, tmp_path_factory.mktemp("tiny_lm"), hidden_size=32,
                         num_layers=1, num_heads=2, vocab_size=300)


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_dir: Path):
    from voxelfm.report.lm import load_lm

    return load_lm(tiny_lm_dir)
