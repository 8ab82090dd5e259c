"""3D block masking and the stratified iBOT mask collation (docs/original.md §2.4)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MaskingGenerator3D:
    """Random 3D blocks on a patch grid ``(d, h, w)``.

    Each block draws a target volume ``V ~ U(min_num_patches, remaining budget)`` and two log-uniform
    aspect ratios (h/w, d/w); ``w = round((V / (a_hw a_dw))^(1/3))``, ``h = round(w a_hw)``,
    ``d = round(w a_dw)``, each strictly smaller than the grid; 10 attempts per block. Blocks are
    added until the count is reached or none fits; a shortfall is filled with random patches.
    """

    grid: tuple[int, int, int]
    min_num_patches: int = 4
    max_num_patches: int | None = None  # default: half the grid
    min_aspect: float = 0.3
    max_aspect: float | None = None  # default: 1 / min_aspect

    @property
    def num_patches(self) -> int:
        return int(np.prod(self.grid))

    def _block(self, mask: np.ndarray, budget: int, rng: np.random.Generator) -> int:
        d_grid, h_grid, w_grid = self.grid
        lo = math.log(self.min_aspect)
        hi = math.log(self.max_aspect if self.max_aspect is not None else 1.0 / self.min_aspect)
        for _ in range(10):
            volume = rng.uniform(self.min_num_patches, budget)
            a_hw = math.exp(rng.uniform(lo, hi))
            a_dw = math.exp(rng.uniform(lo, hi))
            w = round((volume / (a_hw * a_dw)) ** (1.0 / 3.0))
            h, d = round(w * a_hw), round(w * a_dw)
            if not (0 < d < d_grid and 0 < h < h_grid and 0 < w < w_grid):
                continue
            z0 = int(rng.integers(0, d_grid - d + 1))
            y0 = int(rng.integers(0, h_grid - h + 1))
            x0 = int(rng.integers(0, w_grid - w + 1))
            block = mask[z0 : z0 + d, y0 : y0 + h, x0 : x0 + w]
            new = d * h * w - int(block.sum())
            if 0 < new <= budget:
                block[...] = True
                return new
        return 0

    def __call__(self, num_masking_patches: int, rng: np.random.Generator) -> np.ndarray:
        """A boolean mask of the grid with exactly ``num_masking_patches`` True entries."""
        mask = np.zeros(self.grid, dtype=bool)
        target = int(min(max(num_masking_patches, 0), self.num_patches))
        cap = self.max_num_patches if self.max_num_patches is not None else self.num_patches // 2
        count = 0
        while count < target:
            budget = min(target - count, max(cap, 1))
            if budget < self.min_num_patches:
                break
            added = self._block(mask, budget, rng)
            if added == 0:
                break
            count += added
        if count < target:
            free = np.flatnonzero(~mask.reshape(-1))
            extra = rng.choice(free, size=target - count, replace=False)
            mask.reshape(-1)[extra] = True
        return mask


def stratified_masks(
    n_images: int,
    generator: MaskingGenerator3D,
    rng: np.random.Generator,
    mask_probability: float = 0.5,
    ratio_min_max: Sequence[float] = (0.1, 0.5),
) -> dict[str, torch.Tensor | int]:
    """Masks of ``n_images`` global crops as the original collate builds them.

    ``int(n_images * mask_probability)`` crops are masked; crop i of those gets
    ``int(N * U(probs[i], probs[i+1]))`` patches with ``probs = linspace(min, max, n + 1)``; the
    others none; the list is shuffled. Returns ``masks (n_images, N)`` bool, ``mask_indices``
    (flat indices of masked patches), ``masks_weight`` (1 / #masked of the owning crop, per masked
    patch), ``n_masked_patches`` and ``upperbound`` (sum of ``int(N * probs[i+1])``).
    """
    n_total = generator.num_patches
    n_masked_images = int(n_images * mask_probability)
    probs = np.linspace(ratio_min_max[0], ratio_min_max[1], n_masked_images + 1)
    masks, upperbound = [], 0
    for i in range(n_masked_images):
        ratio = rng.uniform(probs[i], probs[i + 1])
        masks.append(generator(int(n_total * ratio), rng).reshape(-1))
        upperbound += int(n_total * probs[i + 1])
    masks += [np.zeros(n_total, dtype=bool)] * (n_images - n_masked_images)
    order = rng.permutation(n_images)
    stacked = torch.from_numpy(np.stack([masks[i] for i in order])) if n_images else torch.zeros(0, n_total, dtype=torch.bool)
    counts = stacked.sum(-1, keepdim=True).clamp(min=1).float()
    weights = (1.0 / counts).expand_as(stacked)[stacked]
    indices = stacked.flatten().nonzero().flatten()
    return {
        "masks": stacked,
        "mask_indices": indices,
        "masks_weight": weights,
        "n_masked_patches": int(indices.numel()),
        "upperbound": upperbound,
    }
