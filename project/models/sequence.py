"""Recurrent sequence models: a plain `nn.Module` and the LightningModule that trains it."""

from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from project.errors import UserError
from project.models.recurrence import final_states
from project.models.supervised import SupervisedModule
from project.task import Task

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
RecurrentInit = Literal["default", "orthogonal", "identity"]


def initialise(
    rnn: nn.RNNBase, cell: str, forget_bias: float | None, recurrent_init: RecurrentInit
) -> None:
    """Sets the initial weights the literature recommends over torch's uniform ones.

    `forget_bias` (LSTM only): the forget gate's bias, so that the cell keeps its memory until
    training teaches it to forget (Gers, Schmidhuber & Cummins 2000; Jozefowicz, Zaremba &
    Sutskever 2015, whose LSTM with forget bias 1 matched the GRU; Keras's `unit_forget_bias`).
    torch adds two biases, `bias_ih` and `bias_hh`, so the first gets the value and the second
    0: the sum the gate sees is exactly `forget_bias`. `None` keeps torch's draw.

    `recurrent_init`: each gate's block of every hidden-to-hidden matrix `weight_hh` becomes
    a random orthogonal matrix (Saxe, McClelland & Ganguli 2014: gradients keep their norm
    through time) or the identity (Le, Jaitly & Hinton 2015, the IRNN: the state is carried
    over unchanged at first). `default` keeps torch's uniform draw.
    """
    hidden = rnn.hidden_size
    # torch stacks the gates' rows: LSTM (input, forget, cell, output), GRU (reset, update, new)
    for name, parameter in rnn.named_parameters():
        with torch.no_grad():
            if cell == "lstm" and forget_bias is not None and name.startswith("bias_"):
                forget = parameter[hidden : 2 * hidden]
                forget.fill_(forget_bias if name.startswith("bias_ih") else 0.0)
            if recurrent_init != "default" and name.startswith("weight_hh"):
                for block in parameter.split(hidden):  # one (hidden, hidden) block per gate
                    if recurrent_init == "orthogonal":
                        nn.init.orthogonal_(block)
                    else:
                        block.copy_(torch.eye(hidden))


class RecurrentNet(nn.Module):
    """RNN / LSTM / GRU over `(batch, time, features)` → linear layer on the final hidden state.

    With `lengths`, padded steps are packed away, so each sequence gets exactly the output it
    would get alone: the forward direction's state at its last real step (and, when
    bidirectional, the backward direction's state after reading it back to its first step).
    `forget_bias` and `recurrent_init` choose the initial weights (see `initialise`);
    `nonlinearity` is the plain RNN's (`relu` with `recurrent_init: identity`: the IRNN).
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
        forget_bias: float | None = 1.0,
        recurrent_init: RecurrentInit = "default",
        nonlinearity: Literal["tanh", "relu"] = "tanh",
    ) -> None:
        super().__init__()
        if nonlinearity != "tanh" and cell != "rnn":
            raise UserError(
                f"nonlinearity {nonlinearity!r} is the plain RNN's, not the {cell}'s: "
                "set cell: rnn or leave nonlinearity out"
            )
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,  # torch only applies it between layers
            bidirectional=bidirectional,
            batch_first=True,
            **extra,
        )
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_outputs)
        # last, so that the head draws the same weights whichever init the cell gets
        initialise(self.rnn, cell, forget_bias, recurrent_init)

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
    `forget_bias` (LSTM, 1 unless set: the field's default), `recurrent_init` and
    `nonlinearity` set up the network as `RecurrentNet` documents. They only choose the
    initial weights (and the RNN's activation), so a checkpoint saved before they existed
    loads with their defaults and predicts exactly what it did.
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
        forget_bias: float | None = 1.0,
        recurrent_init: RecurrentInit = "default",
        nonlinearity: Literal["tanh", "relu"] = "tanh",
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
            input_size,
            num_outputs,
            cell,
            hidden_size,
            num_layers,
            dropout,
            bidirectional,
            forget_bias,
            recurrent_init,
            nonlinearity,
        )
        # a batch for export and the model summary; the length is arbitrary (RNNs take any)
        self.example_input_array = torch.zeros(2, 40, input_size)
