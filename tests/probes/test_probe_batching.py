import numpy as np
import torch

from voxelfm.probes.batching import TokenBank, balanced_batches, shuffled_batches


def test_undersampled_batches_are_exactly_balanced():
    rows = np.arange(100)
    labels = (rows < 30).astype(int)
    batches = list(balanced_batches(rows, labels, 16, np.random.default_rng(0)))
    assert len(batches) == 30 // 8
    for b in batches:
        assert labels[b].sum() == 8 and len(b) == 16
    assert len(np.unique(np.concatenate(batches))) == sum(len(b) for b in batches)  # no repeats


def test_oversampled_epoch_covers_the_majority_class():
    rows = np.arange(100)
    labels = (rows < 10).astype(int)
    batches = list(balanced_batches(rows, labels, 16, np.random.default_rng(0), mode="oversample"))
    seen = np.concatenate(batches)
    # Every majority row but the remainder of the last incomplete share (< 8 rows) is seen.
    assert len(set(rows[labels == 0]) & set(seen)) > 90 - 8
    assert all(labels[b].sum() == 8 for b in batches)


def test_tiny_minority_gives_one_batch_and_shuffling_covers_everything():
    rows = np.arange(50)
    labels = (rows < 3).astype(int)
    (only,) = list(balanced_batches(rows, labels, 16, np.random.default_rng(1)))
    assert labels[only].sum() == 3 and len(only) == 6
    seen = np.concatenate(list(shuffled_batches(rows, 16, np.random.default_rng(2))))
    assert sorted(seen) == list(rows)


def test_token_bank_pads_and_masks():
    tokens = [np.ones((3, 4)), 2 * np.ones((5, 4))]
    pos = [np.zeros((3, 3)), np.ones((5, 3))]
    bank = TokenBank(tokens, pos)
    x, mask, p = bank.gather(np.array([0, 1]))
    assert x.shape == (2, 5, 4) and mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert torch.all(x[0, 3:] == 0) and p.shape == (2, 5, 3)
    same = TokenBank([np.ones((3, 4))] * 2)
    x2, mask2, p2 = same.gather(np.array([1]))
    assert x2.shape == (1, 3, 4) and mask2 is None and p2 is None


def test_token_bank_gather_is_the_advanced_indexing_copy():
    """gather uses index_select on a narrowed view (issue 18): the same values, contiguous."""
    rng = np.random.default_rng(0)
    for lengths in ([7, 7, 7, 7], [5, 9, 3, 9, 6]):
        tokens = [rng.normal(size=(n, 4)).astype(np.float32) for n in lengths]
        positions = [rng.random((n, 3)) for n in lengths]
        bank = TokenBank(tokens, positions)
        rows = np.array([2, 0, 2])
        x, mask, pos = bank.gather(rows)
        idx = torch.as_tensor(rows)
        width = max(lengths[r] for r in rows)
        assert x.is_contiguous() and pos.is_contiguous()
        assert torch.equal(x, bank.stack[idx, :width]) and torch.equal(pos, bank.pos_stack[idx, :width])
        for i, r in enumerate(rows):
            assert torch.equal(x[i, : lengths[r]], torch.from_numpy(tokens[r]))
            if mask is not None:
                assert int(mask[i].sum()) == lengths[r]


def test_noise_from_a_prescaled_bank_is_bit_identical():
    from voxelfm.probes.trainer import add_noise

    x = torch.randn(3, 5, 8)
    bank = torch.randn(64, 8)
    for p in (1.0, 0.5):
        plain = add_noise(x, 0.1, p, torch.Generator().manual_seed(1), bank)
        scaled = add_noise(x, 0.1, p, torch.Generator().manual_seed(1), bank * 0.1, bank_scaled=True)
        assert torch.equal(plain, scaled)
