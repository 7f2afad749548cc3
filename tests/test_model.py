import pytest
import torch
import torch.nn.functional as F

from textcnn import TextCNN
from textcnn.summary import render_summary, shape_walk


def make(**kw):
    torch.manual_seed(0)
    args = dict(vocab_size=50, embedding_size=12, feature_size=6, window_sizes=(2, 3, 5), num_class=3)
    args.update(kw)
    return TextCNN(**args).eval()


def seed_forward(model: TextCNN, ids: torch.Tensor) -> torch.Tensor:
    """The tutorial's computation on unpadded ids: conv + bias, ReLU, max over every window."""
    x = model.embedding(ids).permute(0, 2, 1)  # (B, E, T)
    pooled = [F.relu(conv(x)).amax(dim=2) for conv in model.convs]  # n x (B, F)
    return model.fc(torch.cat(pooled, dim=1))  # (B, C)


def test_forward_equals_the_seed_computation():
    model = make()
    ids = torch.randint(1, 50, (4, 9))
    torch.testing.assert_close(model(ids), seed_forward(model, ids))


def test_padding_never_changes_the_answer():
    model = make()
    ids = torch.randint(1, 50, (1, 7))
    padded = F.pad(ids, (0, 13))
    torch.testing.assert_close(model(padded), model(ids))


def test_text_shorter_than_widest_window_works_and_padding_cannot_win():
    model = make(window_sizes=(2, 5))
    one_word = torch.tensor([[7]])
    out = model(one_word)
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    _, positions = model.pool(F.pad(one_word, (0, 10)), return_positions=True)
    assert (positions == 0).all(), "only the window holding the word may win"
    torch.testing.assert_close(model(F.pad(one_word, (0, 10))), out)


def test_batch_equals_each_text_alone():
    model = make()
    texts = [torch.randint(1, 50, (n,)) for n in (1, 3, 8, 20)]
    batch = torch.nn.utils.rnn.pad_sequence(texts, batch_first=True)
    alone = torch.cat([model(t.unsqueeze(0)) for t in texts])
    torch.testing.assert_close(model(batch), alone)


def test_empty_text_gives_a_defined_answer():
    out = make()(torch.zeros(1, 3, dtype=torch.long))
    assert torch.isfinite(out).all()


def test_batch_norm_and_multichannel_variants():
    for kw in (dict(batch_norm=True), dict(multichannel=True)):
        model = make(**kw)
        ids = torch.randint(1, 50, (3, 10))
        assert model(ids).shape == (3, 3)
        assert model(F.pad(ids[:1, :4], (0, 6))).shape == (1, 3)
    assert make(multichannel=True).static_embedding.weight.requires_grad is False


def test_padding_row_is_zero_and_max_norm_caps_rows():
    model = make()
    assert model.embedding.weight[0].abs().sum() == 0
    with torch.no_grad():
        model.fc.weight.mul_(100)
    model.apply_max_norm(3.0)
    assert (model.fc.weight.norm(dim=1) <= 3.0 + 1e-5).all()


def test_the_seed_tutorial_shapes_on_real_tensors():
    """The walk-through of SEED-MODEL.md: batch 32, length 35, 256-dim vectors, 100 filters, windows 3-6."""
    model = TextCNN(vocab_size=1000, embedding_size=256, feature_size=100, window_sizes=(3, 4, 5, 6), num_class=2)
    shapes = dict(shape_walk(model, batch_size=32, text_len=35))
    assert shapes["token ids"] == (32, 35)
    assert shapes["embedding"] == (32, 35, 256)
    assert shapes["permute(0, 2, 1)"] == (32, 256, 35)
    for k, length in zip((3, 4, 5, 6), (33, 32, 31, 30)):
        assert shapes[f"conv k={k}"] == (32, 100, length)
        assert shapes[f"relu + max-pool k={k}"] == (32, 100, 1)
    assert shapes["cat(dim=1)"] == (32, 400, 1)
    assert shapes["view(-1, 400)"] == (32, 400)
    assert shapes["dropout, fc"] == (32, 2)


def test_summary_text_shows_the_formula_and_parameters():
    model = TextCNN(vocab_size=100, embedding_size=8, feature_size=4, window_sizes=(3,), num_class=2)
    text = render_summary(model, batch_size=2, text_len=10)
    assert "L_out = floor((L_in + 2*padding - dilation*(k-1) - 1) / stride + 1)" in text
    assert "k=3: 10 - 3 + 1 = 8" in text
    assert f"{sum(p.numel() for p in model.parameters()):,}" in text
    with pytest.raises(ValueError, match="shorter than the widest window"):
        render_summary(model, batch_size=2, text_len=2)


def test_padding_ids_have_one_definition():
    """PAD_ID/UNK_ID live in vocab.py (torch-free); every other module imports them."""
    import pathlib
    import re

    import textcnn
    from textcnn import data, model, vocab

    assert model.PAD_ID is vocab.PAD_ID and data.PAD_ID is vocab.PAD_ID
    package = pathlib.Path(textcnn.__file__).parent
    defining = [p.name for p in package.glob("*.py") if re.search(r"^\s*(PAD_ID|UNK_ID)\b[^=\n]*=", p.read_text(), re.M)]
    assert defining == ["vocab.py"]


def test_short_texts_are_padded_to_the_widest_window_with_pad_id():
    from textcnn.model import PAD_ID, min_length, pad_to_widest, text_lengths

    ids = torch.tensor([[5, 6], [7, PAD_ID]])
    padded = pad_to_widest(ids, (2, 4))
    assert min_length((2, 4)) == 4 and padded.tolist() == [[5, 6, PAD_ID, PAD_ID], [7, PAD_ID, PAD_ID, PAD_ID]]
    assert pad_to_widest(ids, (1, 2)) is ids  # long enough: unchanged
    assert text_lengths(padded).tolist() == [2, 1]
