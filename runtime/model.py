"""A GPT decoder (in the style of nanoGPT's model.py) and its even split into stages.

Token and position embedding, N pre-norm transformer blocks (causal self-attention
and a 4x MLP with GELU), a final LayerNorm and a linear head with cross-entropy loss.
The head is not tied to the embedding, so that the first and the last stage own
disjoint parameters.

:func:`build_stages` builds the whole model from one seed and cuts it into stages
(embedding on the first, head and loss on the last, blocks split evenly), so that a
partitioned run starts from exactly the parameters of the unpartitioned model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTConfig:
    name: str
    layers: int
    d_model: int
    heads: int
    seq_len: int
    vocab: int
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for f in ("layers", "d_model", "heads", "seq_len", "vocab"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"model config {self.name!r}: {f} must be a positive integer, got {v!r}")
        if self.d_model % self.heads:
            raise ValueError(f"model config {self.name!r}: d_model {self.d_model} is not divisible by heads {self.heads}")

    def to_dict(self) -> dict:
        return {"name": self.name, "layers": self.layers, "d_model": self.d_model, "heads": self.heads,
                "seq_len": self.seq_len, "vocab": self.vocab}


PRESETS = {
    # The seed's workload (GPT-3 small as in Brown et al. 2020, Table 2.1; GPT-2 vocabulary).
    "gpt3-small": GPTConfig("gpt3-small", layers=12, d_model=768, heads=12, seq_len=2048, vocab=50257),
    # Small enough for 3 ranks on this 2-core machine (see README for how it was chosen).
    "cpu-small": GPTConfig("cpu-small", layers=6, d_model=128, heads=4, seq_len=128, vocab=1024),
    # For fast correctness tests.
    "tiny": GPTConfig("tiny", layers=3, d_model=32, heads=2, seq_len=16, vocab=64),
    # The same with 6 layers: enough for 3 ranks x 2 virtual stages (interleaved 1F1B tests).
    "tiny6": GPTConfig("tiny6", layers=6, d_model=32, heads=2, seq_len=16, vocab=64),
}
DEFAULT_CPU_PRESET = "cpu-small"


def get_config(name: str, **overrides) -> GPTConfig:
    try:
        cfg = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return replace(cfg, **overrides) if overrides else cfg


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.out = nn.Linear(4 * cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class Embedding(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.seq_len, cfg.d_model)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.tok(idx) + self.pos(pos)


class Head(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln = nn.LayerNorm(cfg.d_model)
        self.lm = nn.Linear(cfg.d_model, cfg.vocab, bias=False)

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.lm(self.ln(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


class GPT(nn.Module):
    """The unpartitioned model: ``GPT(cfg)(idx, targets)`` returns the mean loss."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embedding(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.head = Head(cfg)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("out.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for blk in self.blocks:
            x = blk(x)
        return self.head(x, targets)


class Stage(nn.Module):
    """One pipeline stage: optional embedding, a run of blocks, optional head+loss.

    ``forward(x)`` takes token ids on the first stage and hidden states elsewhere.
    On the last stage ``forward(x, targets)`` returns the loss; elsewhere the hidden
    states for the next stage.
    """

    def __init__(self, index: int, num_stages: int, embed: Embedding | None, blocks: list[Block],
                 head: Head | None, first_layer: int):
        super().__init__()
        self.index, self.num_stages, self.first_layer = index, num_stages, first_layer
        self.embed = embed
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    @property
    def is_first(self) -> bool:
        return self.index == 0

    @property
    def is_last(self) -> bool:
        return self.index == self.num_stages - 1

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        if self.head is not None:
            if targets is None:
                raise ValueError("the last stage needs targets to compute the loss")
            return self.head(x, targets)
        return x


def split_layers(layers: int, num_stages: int) -> list[tuple[int, int]]:
    """Even partition by layers: [start, end) per stage; earlier stages get the remainder."""
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
    if layers < num_stages:
        raise ValueError(f"cannot split {layers} layers over {num_stages} stages; use at most {layers} stages")
    base, extra = divmod(layers, num_stages)
    out, start = [], 0
    for s in range(num_stages):
        n = base + (1 if s < extra else 0)
        out.append((start, start + n))
        start += n
    return out


def build_stages(cfg: GPTConfig, num_stages: int, seed: int = 0) -> tuple[GPT, list[Stage]]:
    """Build the full model from ``seed`` and cut it into stages sharing its parameters."""
    torch.manual_seed(seed)
    full = GPT(cfg)
    stages = []
    for s, (a, b) in enumerate(split_layers(cfg.layers, num_stages)):
        blocks = cast(list[Block], list(full.blocks[a:b]))   # GPT.blocks holds Blocks; nn.ModuleList is not generic
        stages.append(Stage(s, num_stages, full.embed if s == 0 else None, blocks,
                            full.head if s == num_stages - 1 else None, first_layer=a))
    return full, stages


def build_stage(cfg: GPTConfig, num_stages: int, index: int, seed: int = 0) -> Stage:
    """The stage a rank owns, with parameters identical to the full model's slice."""
    return build_stages(cfg, num_stages, seed)[1][index]


def synthetic_batch(cfg: GPTConfig, batch_size: int, step: int, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic batch of token ids and next-token targets (same on every rank).

    Tokens follow a learnable pattern (each sequence counts up from a random start with
    a random stride), so the loss falls over a few steps.
    """
    g = torch.Generator().manual_seed(seed + step)
    start = torch.randint(0, cfg.vocab, (batch_size, 1), generator=g)
    stride = torch.randint(1, 4, (batch_size, 1), generator=g)
    seq = (start + stride * torch.arange(cfg.seq_len + 1)) % cfg.vocab
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
