"""The recurrence of `nn.RNN`, `nn.GRU` and `nn.LSTM` written out as a `torch.while_loop` over
time, for export.

`torch.export` traces the built-in cells step by step, which fixes the sequence length to the
example's (pytorch/pytorch#115092), and it cannot trace `pack_padded_sequence` at all (its
output size depends on the lengths' values). This loop takes any length, and `lengths` mask the
steps instead of packing them away: a sequence's state stops changing after its last real step
(forward) or starts at it (backward), which is exactly what packing computes.
"""

import torch
import torch.nn.functional as F
from torch import nn

State = tuple[torch.Tensor, torch.Tensor]  # (h, c); c stays unused but for the LSTM


def step(mode: str, gates_x: torch.Tensor, state: State, w_hh: torch.Tensor, b_hh) -> State:
    """One step of a cell: the new `(h, c)` from the input's gates and the previous state."""
    h, c = state
    gates_h = F.linear(h, w_hh, b_hh)
    if mode == "GRU":  # gates in torch's order: reset, update, new
        x_r, x_z, x_n = gates_x.chunk(3, 1)
        h_r, h_z, h_n = gates_h.chunk(3, 1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return n + z * (h - n), c
    if mode == "LSTM":  # input, forget, cell, output
        i, f, g, o = (gates_x + gates_h).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    pre = gates_x + gates_h
    return (torch.tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)), c


def one_direction(
    rnn: nn.RNNBase, suffix: str, x: torch.Tensor, lengths: torch.Tensor, reverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs `(batch, time, hidden)` of one layer's direction over `x` and its final h."""
    weight = lambda name: getattr(rnn, f"{name}{suffix}", None)  # noqa: E731 (biases may be off)
    gates_x = F.linear(x, weight("weight_ih"), weight("bias_ih"))  # every step's input at once
    w_hh, b_hh = weight("weight_hh"), weight("bias_hh")
    mode, batch, steps = rnn.mode, x.shape[0], x.shape[1]  # the loop's body must not read rnn
    zeros = x.new_zeros(batch, rnn.hidden_size)
    first = torch.full((), steps - 1 if reverse else 0, dtype=torch.long, device=x.device)

    def more(t: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
        return (t >= 0) if reverse else (t < steps)

    def body(t: torch.Tensor, h: torch.Tensor, c: torch.Tensor, out: torch.Tensor) -> tuple:
        gates = gates_x.index_select(1, t.view(1)).squeeze(1)
        new_h, new_c = step(mode, gates, (h, c), w_hh, b_hh)
        real = (t < lengths).unsqueeze(1)  # padded steps leave the state as it is
        h, c = torch.where(real, new_h, h), torch.where(real, new_c, c)
        return t + (-1 if reverse else 1), h, c, out.index_copy(1, t.view(1), h.unsqueeze(1))

    outputs = x.new_zeros(batch, steps, rnn.hidden_size)
    _, h, _, outputs = torch.while_loop(more, body, (first, zeros, zeros.clone(), outputs))
    return outputs, h


def final_states(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """The top layer's final hidden states `(batch, directions × hidden)` of a batch-first `rnn`
    over `x` `(batch, time, features)`, each sequence read to its length (default: all of it)."""
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
    directions = ("", "_reverse") if rnn.bidirectional else ("",)
    layer_input = x
    for layer in range(rnn.num_layers):  # eval only: no dropout between layers
        runs = [
            one_direction(rnn, f"_l{layer}{suffix}", layer_input, lengths, reverse=bool(suffix))
            for suffix in directions
        ]
        layer_input = torch.cat([outputs for outputs, _ in runs], dim=2)
    return torch.cat([h for _, h in runs], dim=1)
