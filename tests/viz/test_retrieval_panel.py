"""``voxelfm.viz.panels.retrieval_example``: one neighbour_examples entry drawn as a retrieval panel."""

from __future__ import annotations

import numpy as np

from voxelfm.viz.panels import Neighbour, retrieval_example, retrieval_figure


def test_a_neighbour_examples_entry_draws_as_retrieval_figure_would() -> None:
    thumbs = {s: np.full((8, 8, 3), i * 40, np.uint8) for i, s in enumerate(("q", "a", "b"))}
    example = {"query": "q", "neighbours": [{"scan_id": "a", "similarity": 0.9, "match": True},
                                            {"scan_id": "b", "similarity": 0.5, "match": False}]}
    png, hits = retrieval_example(example, thumbs.__getitem__, lambda s: f"findings of {s}")
    assert hits == 1 and png.startswith(b"\x89PNG")
    same = retrieval_figure(thumbs["q"], "q", "findings of q", [Neighbour(thumbs["a"], "a", 0.9, True, "findings of a"),
                                                                Neighbour(thumbs["b"], "b", 0.5, False, "findings of b")])
    assert png == same
