"""The training recipe's keys and overlays (configs/recipe/, configs/trainer/ema.yaml) through
the CLI: a schedule that ends with the run, EMA weights that evaluation uses and a resume
continues exactly, augmentation and mixing, no weight decay on norms and biases, bad values."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from project.models.image import ImageClassifier
from tests.callbacks import callback_flag, load_weights
from tests.conftest import CONFIGS, QUIET, SEQUENCE, cli, cli_process, run_dirs
from tests.test_messages import error_line

GRU = SEQUENCE / "gru.yaml"
SMALL_CNN = CONFIGS / "image" / "small_cnn.yaml"
RECIPE = CONFIGS / "recipe"
EMA = CONFIGS / "trainer" / "ema.yaml"
EARLY_STOPPING = CONFIGS / "trainer" / "early_stopping.yaml"
# 3500 training samples in batches of 250: 14 optimizer steps per epoch
TINY = ["--model.init_args.hidden_size", "16", "--data.init_args.batch_size", "250", *QUIET]
NO_VAL = ["--trainer.limit_val_batches", "0"]


@pytest.mark.parametrize(
    ("flags", "steps", "warmup"),
    [
        (["--trainer.max_epochs", "2"], 28, 14),
        (["--trainer.max_epochs", "5"], 70, 14),  # longer: the same warmup, a longer decay
        (["--trainer.max_epochs", "3", "--trainer.accumulate_grad_batches", "2"], 21, 7),
        (
            [
                "--trainer.max_epochs",
                "9",
                "--trainer.max_steps",
                "10",
                "--lr_scheduler.init_args.warmup_epochs",
                "0.2",
            ],
            10,
            3,
        ),  # fmt: skip
    ],
    ids=["2-epochs", "5-epochs", "accumulate-2", "max-steps"],
)
def test_warmup_cosine_ends_with_the_run(
    workdir: Path, flags: list[str], steps: int, warmup: int
) -> None:
    """Whatever sets the run's length, the rate climbs for the warmup's optimizer steps, peaks
    at the configured rate, then never rises again and reaches its floor at the last step."""
    lr, floor = 0.01, 0.1
    record = callback_flag("OptimizerSteps", path="steps.json")
    cli("fit", "-c", GRU, "-c", RECIPE / "warmup_cosine.yaml", *TINY, *NO_VAL, *flags, *record,
        "--lr_scheduler.init_args.final_lr_factor", str(floor))  # fmt: skip
    rates = [r[0] for r in json.loads((workdir / "steps.json").read_text())["rates"]]
    assert len(rates) == steps
    climb, decay = rates[: warmup + 1], rates[warmup:]
    assert all(a < b for a, b in zip(climb, climb[1:], strict=False)), climb
    assert rates[warmup] == pytest.approx(lr) and max(rates) == pytest.approx(lr)
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False)), decay
    assert rates[-1] == pytest.approx(lr * floor)


@pytest.mark.slow
def test_warmup_cosine_resumes_on_its_curve(workdir: Path) -> None:
    """A run stopped after its first epoch and resumed takes the same rates as a whole run."""
    common = ["-c", GRU, "-c", RECIPE / "warmup_cosine.yaml", *TINY, *NO_VAL]
    cli("fit", *common, "--trainer.max_epochs", "3", "--experiment", "whole",
        *callback_flag("OptimizerSteps", path="whole.json"))  # fmt: skip
    stop = callback_flag("StopAtStep", step=14)
    cli("fit", *common, "--trainer.max_epochs", "3", "--experiment", "cut",
        *callback_flag("OptimizerSteps", path="cut.json"), *stop)  # fmt: skip
    rates = {}
    rates["cut"] = json.loads((workdir / "cut.json").read_text())["rates"]
    (cut,) = run_dirs(workdir, "cut")
    cli("fit", "-c", cut / "config.yaml", "--ckpt_path", "last", *QUIET)  # rewrites cut.json
    rates["rest"] = json.loads((workdir / "cut.json").read_text())["rates"]
    rates["whole"] = json.loads((workdir / "whole.json").read_text())["rates"]
    assert len(rates["cut"]) == 14 and len(rates["whole"]) == 42
    assert rates["cut"] + rates["rest"] == rates["whole"]


def test_ema_checkpoints_hold_the_average_that_validation_measured(
    workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    """The best checkpoint's weights are the moving average, not the trained weights, and
    validating that checkpoint gives the score the run recorded for it; the summary says so."""
    cli("fit", "-c", GRU, "-c", EMA, *TINY, "--trainer.max_epochs", "2",
        "--trainer.callbacks.init_args.decay", "0.9")  # fmt: skip
    assert "weights: the average of EMAWeightAveraging" in capsys.readouterr().out
    (run,) = run_dirs(workdir, "gru")
    (best,) = (run / "checkpoints").glob("best*.ckpt")
    checkpoint = torch.load(best, weights_only=True)
    averaged, trained = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert averaged.keys() == trained.keys()
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged)
    recorded = next(
        state["best_model_score"]
        for name, state in checkpoint["callbacks"].items()
        if name.startswith("BestAndLastCheckpoint")
    )
    cli("validate", "-c", run / "config.yaml", "--ckpt_path", "best", *QUIET)
    validated = json.loads((run / "metrics.json").read_text())["val/loss"]
    assert validated == pytest.approx(float(recorded), abs=1e-6)


@pytest.mark.slow
def test_ema_resumed_ends_with_the_weights_of_an_uninterrupted_run(workdir: Path) -> None:
    """Stopped after an epoch and resumed, an EMA run ends bitwise where a run never stopped
    ends: both the trained weights and their average (the model's final weights)."""
    common = ["-c", GRU, "-c", EMA, *TINY, "--trainer.limit_val_batches", "2"]
    whole = callback_flag("SaveWeights", folder="whole")
    cli("fit", *common, "--trainer.max_epochs", "3", "--experiment", "whole", *whole)
    # stopped after its first epoch (14 steps), not run with max_epochs 1: the schedule is sized
    # to the run it starts, and a run sized to one epoch has decayed to 0 by its end
    stop = callback_flag("StopAtStep", step=14)
    cli("fit", *common, "--trainer.max_epochs", "3", "--experiment", "cut", *stop)
    (cut,) = run_dirs(workdir, "cut")
    resumed = callback_flag("SaveWeights", folder="resumed")
    cli("fit", "-c", cut / "config.yaml", "--ckpt_path", "last", *resumed, *QUIET)
    a = load_weights(workdir / "whole")[0]["weights"]
    b = load_weights(workdir / "resumed")[0]["weights"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    (whole_run,) = run_dirs(workdir, "whole")
    ends = [
        torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (whole_run, cut)
    ]
    for part in ("state_dict", "current_model_state", "averaging_state"):
        for key, value in ends[0][part].items():
            assert torch.equal(value, ends[1][part][key]), (part, key)


@pytest.mark.slow
def test_ema_and_early_stopping_agree_on_every_ddp_rank(workdir: Path) -> None:
    """2 gloo processes with EMA and early stopping: both ranks stop at the same epoch, before
    the last, with identical averaged weights, and the run exits (no rank left waiting)."""
    stalled = [
        "--optimizer.init_args.lr", "1e-9", "--trainer.max_epochs", "10",
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
    ]  # fmt: skip
    patience = ["--trainer.callbacks.init_args.patience", "1"]
    run = cli_process(
        "fit", "-c", GRU, "-c", CONFIGS / "trainer" / "ddp_cpu.yaml", "-c", EMA, "-c",
        EARLY_STOPPING, *TINY, *stalled, *patience, "--trainer.callbacks.init_args.min_delta",
        "0.01", *callback_flag("SaveWeights", folder="ranks"), cwd=workdir,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = load_weights(workdir / "ranks")
    assert sorted(ranks) == [0, 1] and ranks[0]["pid"] != ranks[1]["pid"]
    assert ranks[0]["epoch"] == ranks[1]["epoch"] < 9
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key
    assert any(not torch.equal(v, ranks[0]["initial"][k]) for k, v in ranks[0]["weights"].items())


def test_image_recipe_trains_with_true_label_metrics(workdir: Path) -> None:
    """The image overlay with warmup and EMA on the digits CNN: it trains, and the metrics it
    logs are accuracies against the true labels (in [0, 1]), not against blended ones."""
    stack = ["-c", SMALL_CNN, "-c", RECIPE / "image_augment.yaml", "-c",
             RECIPE / "warmup_cosine.yaml", "-c", EMA]  # fmt: skip
    cli("fit", *stack, "--trainer.max_epochs", "4", "--test_after_fit", "true", *QUIET,
        "--trainer.callbacks.init_args.decay", "0.9")  # 72 steps: a short average  # fmt: skip
    (run,) = run_dirs(workdir, "small_cnn")
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.3 < metrics["test/acc"] <= 1.0, metrics  # 10 classes: chance is 0.1
    config = (run / "config.yaml").read_text()
    for key in ("policy: trivial_augment", "mixup_alpha: 0.2", "label_smoothing: 0.1"):
        assert key in config


def test_mixing_blends_the_loss_targets_and_keeps_true_ones_for_metrics() -> None:
    """One training step of a CutMix/MixUp model: its loss is the cross-entropy against the
    blended labels (each row a distribution over two classes), its accuracy counts the batch's
    true labels."""
    torch.manual_seed(0)
    model = ImageClassifier(
        num_outputs=4, input_size=(1, 8, 8), backbone="small_cnn", mixup_alpha=0.4
    ).eval()  # no dropout: the same outputs twice
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.manual_seed(1)
    mixed, soft = model.mix(images, labels)
    assert mixed.dtype == torch.float32 and soft.shape == (6, 4)
    torch.testing.assert_close(soft.sum(1), torch.ones(6))
    assert not torch.equal(soft, F.one_hot(labels, 4).float())
    torch.manual_seed(1)
    loss = model.training_step((images, labels), 0)
    torch.testing.assert_close(loss, F.cross_entropy(model(mixed), soft))
    model.apply_training_metrics()  # training steps reach the metrics every few steps
    accuracy = model.stage_metrics["train_"]["train/acc"]
    assert accuracy.tp.sum() + accuracy.fn.sum() == len(labels)  # counted against 6 labels


@pytest.mark.slow
def test_no_decay_on_norms_and_biases_splits_every_group(workdir: Path) -> None:
    """With `decay_norms_and_biases: false`, every vector (bias, norm scale) trains without
    weight decay and every matrix with it, in the first groups and in the group a staged
    unfreezing adds mid-run."""
    adamw = ["--optimizer", "torch.optim.AdamW", "--optimizer.init_args.weight_decay", "0.05"]
    record = callback_flag("OptimizerSteps", path="steps.json")
    cli("fit", "-c", CONFIGS / "image" / "finetune_stage1.yaml", *adamw, *record, *QUIET,
        "--model.init_args.weights", "null", "--model.init_args.freeze", "backbone",
        "--model.init_args.unfreeze_at_epoch", "1", "--model.init_args.decay_norms_and_biases",
        "false", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1")  # fmt: skip
    groups = json.loads((workdir / "steps.json").read_text())["groups"]
    names = {g["name"] for g in groups}
    assert names == {"head", "head/no_decay", "backbone", "backbone/no_decay"}, names
    for group in groups:
        vectors = {len(shape) <= 1 for shape in group["shapes"]}
        assert vectors == {group["name"].endswith("no_decay")}, group["name"]
        assert group["weight_decay"] == (0.0 if group["name"].endswith("no_decay") else 0.05)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["-c", EMA, "--trainer.callbacks.init_args.decay", "1.5"], "decay must be in (0, 1)"),
        (["-c", EMA, "--trainer.callbacks.init_args.decay", "0"], "decay must be in (0, 1)"),
        (
            ["-c", EARLY_STOPPING, "--trainer.callbacks.init_args.patience", "-1"],
            "patience must be >= 0",
        ),  # fmt: skip
        (
            [
                "-c",
                RECIPE / "warmup_cosine.yaml",
                "--lr_scheduler.init_args.warmup_epochs",
                "3",
                "--trainer.max_epochs",
                "2",
            ],
            "is not shorter than the run",
        ),  # fmt: skip
        (
            ["-c", RECIPE / "warmup_cosine.yaml", "--lr_scheduler.init_args.final_lr_factor", "2"],
            "final_lr_factor must be in [0, 1]",
        ),  # fmt: skip
    ],
    ids=["ema-decay-above-1", "ema-decay-0", "negative-patience", "warmup-too-long", "floor"],
)
def test_bad_recipe_values_are_one_line(
    workdir: Path, capsys: pytest.CaptureFixture, flags: list, expected: str
) -> None:
    line = error_line(capsys, "fit", "-c", GRU, *flags, *TINY, *NO_VAL)
    assert line.startswith("error:") and expected in line, line
    assert not list(workdir.rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--data.init_args.policy", "trivial"], "trivial"),
        (["--data.init_args.random_erasing", "2"], "random_erasing must be a probability"),
        (["--model.init_args.mixup_alpha", "-1"], "must be >= 0"),
    ],
    ids=["unknown-policy", "erasing-above-1", "negative-alpha"],
)
def test_bad_image_recipe_values_are_one_line(
    workdir: Path, capsys: pytest.CaptureFixture, flags: list, expected: str
) -> None:
    line = error_line(capsys, "fit", "-c", SMALL_CNN, *flags)
    assert line.startswith("error:") and expected in line, line


def test_warmup_cosine_factor_is_continuous() -> None:
    """No jump where the warmup hands over to the decay: the step after the peak is within one
    cosine step of it."""
    from project.schedules import WarmupCosineLR

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosineLR(optimizer, warmup_epochs=2)
    schedule.size_to_run(total_steps=50, steps_per_epoch=5)
    factors = [schedule.factor(step) for step in range(50)]
    assert factors[10] == 1.0 and factors[11] == pytest.approx(0.5 * (1 + math.cos(math.pi / 39)))


def test_a_smoke_test_cuts_the_warmup_short(workdir: Path) -> None:
    """`fast_dev_run` (one batch) on a config with a warmup of an epoch runs instead of
    stopping on a warmup longer than the run: debug overlays stack on any experiment."""
    cli("fit", "-c", GRU, "-c", RECIPE / "warmup_cosine.yaml", "-c",
        CONFIGS / "debug" / "fast_dev_run.yaml", *TINY)  # fmt: skip
