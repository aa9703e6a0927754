"""`torch.compile` for the network of any model of this template, from a config overlay."""

from typing import Literal

from lightning import Callback, LightningModule, Trainer
from torch import nn

from project.errors import UserError


class CompileNetwork(Callback):
    """Compiles `pl_module.net` (the plain `nn.Module`) when a run sets up.

    In place (`nn.Module.compile`): parameter names, checkpoints and `load_from_checkpoint` stay
    as without compiling, which wrapping the module in `torch.compile(...)` would change (every
    key would gain an `_orig_mod.` prefix). Compiling happens before DDP wraps the model, and only
    the network: the loss, metrics and logging stay eager. The first batches are slow (the
    compiler runs; on a CPU it needs a C++ compiler), and each new batch shape compiles again.
    Dynamo leaves uncompiled any code that holds an `nn.RNN`/`GRU`/`LSTM` (torch's
    `allow_rnn=False`), so the sequence models run as before; the image models compile.
    """

    def __init__(
        self,
        mode: Literal["default", "reduce-overhead", "max-autotune"] = "default",
        backend: str = "inductor",
    ) -> None:
        self.mode = mode
        self.backend = backend
        self._compiled: set[int] = set()

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        net = getattr(pl_module, "net", None)
        if not isinstance(net, nn.Module):
            raise UserError(f"{type(pl_module).__name__} has no `net` module to compile")
        if id(net) not in self._compiled:  # fit then test: compile once
            net.compile(mode=self.mode, backend=self.backend)
            self._compiled.add(id(net))
