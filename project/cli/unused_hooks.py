"""`skip_unused_hooks`: a run's callbacks cost a step only the hooks they implement.

Lightning calls every per-batch hook of every callback, implemented or not, with a profiler
context and a formatted name each time even when no profiler is set: about 1.8 µs a callback and
hook, six hooks a training step. On a small model's 3 ms step that was 3% for a default run's
callbacks (docs/benchmarks.md). Lightning skips a hook attribute that is not callable (its
`_call_callback_hooks` checks `callable`; its maintainers suggest `hook = None` to erase an
inherited hook: https://github.com/Lightning-AI/pytorch-lightning/issues/18265), so the CLI sets,
on each callback instance of a run, the per-batch hooks its class leaves as `Callback`'s no-ops to
None. Classes are untouched: a hook a class implements is called as before, its `super()` call
included. tests/test_lightning_api.py fails if Lightning starts calling a None hook.
"""

from collections.abc import Iterable

from lightning import Callback

BATCH_HOOKS = (
    "on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step", "on_before_zero_grad", "on_validation_batch_start",
    "on_validation_batch_end", "on_test_batch_start", "on_test_batch_end",
    "on_predict_batch_start", "on_predict_batch_end",
)  # fmt: skip


def skip_unused_hooks(callbacks: Iterable[Callback]) -> None:
    """Set each per-batch hook that a callback's class does not implement to None on it."""
    for callback in callbacks:
        for hook in BATCH_HOOKS:
            if getattr(type(callback), hook, None) is getattr(Callback, hook):
                setattr(callback, hook, None)
