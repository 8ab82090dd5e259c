import pytest
import torch

from voxelfm.core.errors import ConfigError
from voxelfm.report.chat import (
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
    ChatFormat,
    encode_example,
    encode_prompt,
    inject_image_tokens,
)
from voxelfm.report.model import ReportModel
from voxelfm.report.projector import FeatureProjector, ProjectorConfig

REPORT = "Small nodule in the right upper lobe."


def test_prompt_has_one_image_token_after_system_prompt(tiny_lm):
    _, tok = tiny_lm
    chat = ChatFormat()
    ids = encode_prompt(tok, chat)
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    before = tok.decode(ids[: ids.index(IMAGE_TOKEN_INDEX)])
    assert chat.system_prompt in before and before.rstrip().endswith("user")
    assert tok.decode(ids[ids.index(IMAGE_TOKEN_INDEX) + 1:]).endswith("assistant\n")


def test_labels_cover_only_the_assistant_turn(tiny_lm):
    _, tok = tiny_lm
    chat = ChatFormat()
    ids, labels = encode_example(tok, chat, REPORT)
    prompt = encode_prompt(tok, chat)
    assert ids[: len(prompt)] == prompt
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    answer = labels[len(prompt):]
    assert all(t >= 0 for t in answer)
    text = tok.decode(answer)
    assert text.startswith(REPORT) and tok.eos_token in text


def test_template_free_tokenizer_uses_plain_format(tiny_lm):
    _, tok = tiny_lm
    plain = tok.__class__.from_pretrained(tok.name_or_path)
    plain.chat_template = None
    ids, labels = encode_example(plain, ChatFormat(system_prompt=""), REPORT)
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    assert plain.decode([t for t in labels if t >= 0]).startswith(REPORT)


def test_injector_places_image_tokens_at_placeholder_and_masks_labels(tiny_lm):
    lm, tok = tiny_lm
    emb = lm.get_input_embeddings()
    dim = emb.weight.shape[1]
    seqs = [[5, 6, IMAGE_TOKEN_INDEX, 7, 8, 9], [5, IMAGE_TOKEN_INDEX, 7]]
    labels = [[IGNORE_INDEX] * 4 + [8, 9], [IGNORE_INDEX, IGNORE_INDEX, 7]]
    images = torch.randn(2, 3, dim)
    embeds, mask, out = inject_image_tokens(seqs, labels, images, emb)
    assert embeds.shape == (2, 8, dim) and mask.tolist() == [[1] * 8, [1] * 5 + [0] * 3]
    assert torch.equal(embeds[0, 2:5], images[0]) and torch.equal(embeds[1, 1:4], images[1])
    assert torch.allclose(embeds[0, 5], emb(torch.tensor(7)))
    assert out[0].tolist() == [IGNORE_INDEX] * 6 + [8, 9]
    assert out[1].tolist() == [IGNORE_INDEX] * 4 + [7] + [IGNORE_INDEX] * 3
    left, lmask, _ = inject_image_tokens(seqs, None, images, emb, pad_side="left")
    assert lmask[1].tolist() == [0] * 3 + [1] * 5
    assert torch.equal(left[1, 4:7], images[1])


def test_injector_rejects_missing_placeholder(tiny_lm):
    lm, _ = tiny_lm
    with pytest.raises(ConfigError, match="sequence 0"):
        inject_image_tokens([[1, 2, 3]], None, torch.zeros(1, 2, 32), lm.get_input_embeddings())


def test_loss_ignores_prompt_tokens(tiny_lm):
    from voxelfm.report.dataset import vision_tokens

    lm, tok = tiny_lm
    proj = FeatureProjector(ProjectorConfig(in_dim=8, out_dim=lm.config.hidden_size, hidden_dim=24,
                                            num_queries=3, num_heads=2, dropout=0.0))
    model = ReportModel(lm, tok, proj, ChatFormat()).eval()
    gen = torch.Generator().manual_seed(0)
    item = vision_tokens(torch.randn(8, generator=gen).numpy(),
                         torch.randn(2, 2, 2, 8, generator=gen).numpy())
    ids, labels = model.encode(REPORT)
    loss = model.loss([item], [ids], [labels])
    # Reference: cross-entropy of the next-token logits over the report tokens only.
    embeds = model.image_embeds([item])
    inputs, mask, target = inject_image_tokens([ids], [labels], embeds, lm.get_input_embeddings())
    logits = lm(inputs_embeds=inputs, attention_mask=mask).logits[0, :-1]
    tgt = target[0, 1:]
    keep = tgt != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[keep], tgt[keep])
    assert keep.sum() == sum(t >= 0 for t in labels)
    assert torch.allclose(loss, expected, atol=1e-5)
    # Changing the prompt's (ignored) labels or the system prompt's ids does not matter to which
    # positions are scored: labelling the prompt changes the loss, so masking is what excludes it.
    unmasked = [t if t != IMAGE_TOKEN_INDEX else IGNORE_INDEX for t in ids]
    assert not torch.allclose(model.loss([item], [ids], [unmasked]), loss)
