"""`SkipsUnusedHooks`: the template's callbacks cost a step only the hooks they implement.

Lightning calls every per-batch hook of every callback, implemented or not, with a profiler
context and a formatted name each time even when no profiler is set: about 1.8 µs a callback and
hook, six hooks a training step. On a small model's 3 ms step that was 3% for the template's
callbacks (docs/benchmarks.md). Lightning skips a hook attribute that is not callable (its
`_call_callback_hooks` checks `callable`; its maintainers suggest `hook = None` to erase an
inherited hook: https://github.com/Lightning-AI/pytorch-lightning/issues/18265), so each instance
sets the per-batch hooks its class does not override to None. The classes keep theirs: a
subclass that overrides a hook gets it called, and its `super().hook(...)` still finds
`Callback`'s. tests/test_lightning_api.py fails if Lightning starts calling a None hook.
"""

from typing import Any

from lightning import Callback

BATCH_HOOKS = (
    "on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step", "on_before_zero_grad", "on_validation_batch_start",
    "on_validation_batch_end", "on_test_batch_start", "on_test_batch_end",
    "on_predict_batch_start", "on_predict_batch_end",
)  # fmt: skip


class SkipsUnusedHooks(Callback):
    """A base for callbacks: the per-batch hooks its class leaves as `Callback`'s are not called."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "SkipsUnusedHooks":
        callback = super().__new__(cls)
        for hook in BATCH_HOOKS:
            if getattr(cls, hook) is getattr(Callback, hook):
                setattr(callback, hook, None)
        return callback
