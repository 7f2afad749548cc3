"""The seed tutorial's TextCNN, written plainly in eager PyTorch: the baseline of the speed benchmark.

Exactly the model of ``docs/SEED-MODEL.md``: Embedding, one ``Sequential(Conv1d, ReLU,
MaxPool1d(max_text_len - h + 1))`` per window size, cat, view, dropout, fc; every text padded or
cut to ``max_text_len``; a plain training loop with dense Adam. It is not part of the package.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SeedConfig:
    vocab_size: int
    num_class: int
    embedding_size: int = 256
    feature_size: int = 100
    window_sizes: tuple[int, ...] = (3, 4, 5, 6)
    max_text_len: int = 35
    dropout_rate: float = 0.5


class SeedTextCNN(nn.Module):
    """The tutorial's model, layer for layer."""

    def __init__(self, config: SeedConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(config.embedding_size, config.feature_size, kernel_size=h),
                nn.ReLU(),
                nn.MaxPool1d(kernel_size=config.max_text_len - h + 1),
            )
            for h in config.window_sizes
        )
        self.dropout = nn.Dropout(config.dropout_rate)
        self.fc = nn.Linear(config.feature_size * len(config.window_sizes), config.num_class)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids)  # (B, T, E)
        x = x.permute(0, 2, 1)  # (B, E, T)
        out = torch.cat([conv(x) for conv in self.convs], dim=1)  # (B, F*n, 1)
        out = out.view(-1, out.size(1))  # (B, F*n)
        return self.fc(self.dropout(out))  # (B, C)


def pad_to_length(ids: list[list[int]], max_text_len: int) -> torch.Tensor:
    """Pads with 0 or cuts every id list to exactly ``max_text_len``: (N, max_text_len) int64."""
    out = np.zeros((len(ids), max_text_len), dtype=np.int64)
    for row, seq in enumerate(ids):
        seq = seq[:max_text_len]
        out[row, : len(seq)] = seq
    return torch.from_numpy(out)


def train_epoch(model: SeedTextCNN, x: torch.Tensor, y: torch.Tensor, optimizer, batch_size: int,
                generator: torch.Generator) -> float:
    """One shuffled pass with dense Adam; returns the mean loss."""
    model.train()
    order = torch.randperm(len(x), generator=generator)
    total = 0.0
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / len(x)


@torch.no_grad()
def predict_logits(model: SeedTextCNN, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])  # (N, C)


def fit(model: SeedTextCNN, train: tuple, dev: tuple, *, epochs: int, batch_size: int = 64,
        learning_rate: float = 1e-3, seed: int = 0) -> dict:
    """Trains for ``epochs`` and keeps the weights of the best dev-accuracy epoch."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    best, best_state, seconds = -1.0, None, 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        train_epoch(model, *train, optimizer, batch_size, generator)
        seconds += time.perf_counter() - started
        acc = float((predict_logits(model, dev[0]).argmax(1) == dev[1]).float().mean())
        if acc > best:
            best, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return {"best_dev_accuracy": best, "train_seconds": seconds}
