"""The split backward of zero-bubble schedules: B, the input gradient, now; W, the weight gradients, later.

A stage's linear layers hold nearly all of its weight-gradient work: for each ``nn.Linear``,
``dW = dY^T X`` (and ``db``, the sum of ``dY``). So B asks autograd for the gradient of the stage
input *and* of the output ``Y`` of every ``nn.Linear`` call of the forward (recorded by a forward
hook, with the layer's input ``X``): autograd computes each layer's input gradient but not its
weight gradient, since no requested gradient depends on it, and B's graph is freed. W then does
the two matrix products per layer (``dY^T X``, ``sum dY``) and accumulates them into ``.grad``.
The stage's other parameters (LayerNorm scales and shifts: tiny) get their gradients in B's
autograd pass, held back until W adds them, so that B leaves every ``.grad`` alone.

This is how zero-bubble implementations defer W (Qi et al., "Zero Bubble Pipeline Parallelism",
ICLR 2024, whose Megatron-LM implementation keeps the linear layers' ``(X, dY)`` pairs for later
in a ``WeightGradStore``). torch.distributed.pipelining's ``stage_backward_input`` /
``stage_backward_weight`` (which its zero-bubble schedule classes use) instead walk the stage's
autograd graph in Python on every B to find the nodes the weights hang off, and run one autograd
pass per group of weights in W. On the CPU model of this project (``cpu-small``, 3 stages) that
costs more than the fused backward; the split here costs what the fused backward costs (figures:
docs/run.md, ``benchmarks/bench_split.py``).

On the first stage there is no input gradient; its B does nothing and its W runs the whole
backward, as torch does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn


def _accumulate(p: torch.Tensor, g: torch.Tensor) -> None:
    if p.grad is None:
        p.grad = g
    else:
        p.grad += g


@dataclass
class Pending:
    """B's state for W: per linear-layer call (layer, its input, its output gradient) and the
    gradients of the stage's other parameters."""
    linear: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    other: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


class SplitBackward:
    """The split backward of one stage module.

    ``out, tape = sb.forward(module_call, *args)`` runs the forward recording every linear-layer
    call; ``pending = sb.input_grad(out, grad, x, tape)`` is B (sets ``x.grad``; ``grad`` None:
    ``out`` is the loss); ``sb.weight_grad(pending)`` is W.
    """

    def __init__(self, module: nn.Module):
        self.linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        owned = {id(p) for m in self.linears for p in m.parameters(recurse=False)}
        self.others = [p for p in module.parameters() if p.requires_grad and id(p) not in owned]

    def forward(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` (the stage's forward), and its tape of linear-layer calls.
        The hooks that record them exist only during this call: other forwards are untouched."""
        tape: list = []

        def record(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if out.requires_grad:
                tape.append((mod, args[0], out))

        handles = [m.register_forward_hook(record) for m in self.linears]
        try:
            out = fn(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        return out, tape

    def input_grad(self, out: torch.Tensor, grad: torch.Tensor | None, x: torch.Tensor, tape: list) -> Pending:
        """B: the gradient of ``x`` (accumulated into ``x.grad``) and, for W, of every recorded
        linear-layer output and of the other parameters. Frees the forward's graph."""
        outs = [o for _, _, o in tape]
        inputs = [x, *outs, *self.others]
        got = torch.autograd.grad([out], inputs, None if grad is None else [grad], allow_unused=True)
        if got[0] is not None:
            _accumulate(x, got[0])
        n = len(outs)
        return Pending(linear=[(m, xi, g) for (m, xi, _), g in zip(tape, got[1:1 + n]) if g is not None],
                       other=[(p, g) for p, g in zip(self.others, got[1 + n:]) if g is not None])

    @staticmethod
    def weight_grad(pending: Pending) -> None:
        """W: each linear layer's weight and bias gradients from its input and output gradient,
        and the other parameters' gradients from B, accumulated into ``.grad``."""
        for m, xi, g in pending.linear:
            g2 = g.reshape(-1, g.shape[-1])
            if m.weight.requires_grad:
                _accumulate(m.weight, g2.t().mm(xi.reshape(-1, xi.shape[-1])))
            if m.bias is not None and m.bias.requires_grad:
                _accumulate(m.bias, g2.sum(0))
        for p, g in pending.other:
            _accumulate(p, g)
        pending.linear.clear()
        pending.other.clear()
