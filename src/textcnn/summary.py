"""The seed tutorial's shape walk-through, computed on real tensors for any config."""

from __future__ import annotations

import torch

from .model import TextCNN, min_length

L_OUT_FORMULA = "L_out = floor((L_in + 2*padding - dilation*(k-1) - 1) / stride + 1)"


def shape_walk(model: TextCNN, batch_size: int, text_len: int, seed: int = 0) -> list[tuple[str, tuple[int, ...]]]:
    """Runs random token ids (batch_size, text_len) through the model step by step; returns the shapes."""
    vocab_size = model.embedding.num_embeddings
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, max(vocab_size, 2), (batch_size, text_len), generator=gen)  # (B, T)
    was_training = model.training
    model.eval()
    steps = model.shape_walk(ids)
    model.train(was_training)
    return [(name, tuple(t.shape)) for name, t in steps]


def parameter_counts(model: TextCNN) -> list[tuple[str, int]]:
    rows = [("embedding", model.embedding.weight.numel())]
    if model.static_embedding is not None:
        rows.append(("static embedding (frozen)", model.static_embedding.weight.numel()))
    for k, conv in zip(model.window_sizes, model.convs):
        rows.append((f"conv k={k}", sum(p.numel() for p in conv.parameters())))
    if model.norms is not None:
        rows.append(("batch norms", sum(p.numel() for p in model.norms.parameters())))
    rows.append(("fc", sum(p.numel() for p in model.fc.parameters())))
    if model.ngram_fc is not None:
        rows.append(("n-gram vectors", model.ngram_embedding.weight.numel()))
        rows.append(("n-gram fc", sum(p.numel() for p in model.ngram_fc.parameters())))
    return rows


def render_summary(model: TextCNN, batch_size: int, text_len: int) -> str:
    """The walk-through as text: shapes, the Conv1d length formula with numbers, parameter counts."""
    widest = min_length(model.window_sizes)
    if text_len < widest:
        raise ValueError(f"The text length {text_len} is shorter than the widest window {widest}.")
    steps = shape_walk(model, batch_size, text_len)
    width = max(len(name) for name, _ in steps) + 2
    lines = [f"TextCNN forward pass, batch {batch_size}, text length {text_len}", ""]
    lines += [f"  {name:<{width}}{' x '.join(map(str, shape))}" for name, shape in steps]
    lines += ["", f"Conv1d output length: {L_OUT_FORMULA}",
              "  with padding=0, dilation=1, stride=1 this is L_in - k + 1:"]
    lines += [f"  k={k}: {text_len} - {k} + 1 = {text_len - k + 1}" for k in model.window_sizes]
    counts = parameter_counts(model)
    lines += ["", "Parameters:"]
    lines += [f"  {name:<28}{n:>12,}" for name, n in counts]
    lines.append(f"  {'total':<28}{sum(n for _, n in counts):>12,}")
    return "\n".join(lines)
