"""Recurrent sequence models: a plain `nn.Module` and the LightningModule that trains it."""

from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from project.models.recurrence import final_states
from project.models.supervised import SupervisedModule
from project.task import Task

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentNet(nn.Module):
    """RNN / LSTM / GRU over `(batch, time, features)` → linear layer on the final hidden state.

    With `lengths`, padded steps are packed away, so each sequence gets exactly the output it
    would get alone: the forward direction's state at its last real step (and, when
    bidirectional, the backward direction's state after reading it back to its first step).
    """

    def __init__(
        self,
        input_size: int,
        num_outputs: int,
        cell: Literal["rnn", "lstm", "gru"] = "gru",
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.rnn = CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,  # torch only applies it between layers
            bidirectional=bidirectional,
            batch_first=True,
        )
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 2:  # (batch, time): one feature per step
            x = x.unsqueeze(-1)
        if torch.compiler.is_exporting():  # the same states, for any sequence length
            return self.head(final_states(self.rnn, x, lengths))
        if lengths is not None:
            # initial state is zero (torch's default); lengths must live on the CPU for packing
            x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, hidden = self.rnn(x)
        if isinstance(hidden, tuple):  # LSTM returns (h, c)
            hidden = hidden[0]
        # hidden: (layers * directions, batch, hidden); keep the top layer's directions
        directions = 2 if self.rnn.bidirectional else 1
        top = hidden[-directions:].transpose(0, 1).reshape(hidden.shape[1], -1)
        return self.head(top)


class SequenceClassifier(SupervisedModule):
    """Classifies (or regresses) sequences with a `RecurrentNet`.

    `input_size`, `num_outputs` and `task` come from the DataModule through the CLI.
    `label_smoothing` and `class_weights` (per class, or `balanced` from the training labels)
    shape the classification loss; `decay_norms_and_biases: false` spares biases and
    normalization layers the optimizer's weight decay.
    """

    def __init__(
        self,
        input_size: int,
        num_outputs: int,
        task: Task = "classification",
        cell: Literal["rnn", "lstm", "gru"] = "gru",
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        class_weights: list[float] | Literal["balanced"] | None = None,
        decay_norms_and_biases: bool = True,
    ) -> None:
        super().__init__(
            num_outputs,
            task,
            optimizer,
            lr_scheduler,
            label_smoothing,
            class_weights,
            decay_norms_and_biases,
        )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.net = RecurrentNet(
            input_size, num_outputs, cell, hidden_size, num_layers, dropout, bidirectional
        )
        # a batch for export and the model summary; the length is arbitrary (RNNs take any)
        self.example_input_array = torch.zeros(2, 40, input_size)
