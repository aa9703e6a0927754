"""Sequences larger than memory: a folder of `.npy` files (project/data/sequence_arrays.py) trains
to the weights of the same data in a `.npz`, is read by DataLoader workers, shared between DDP
ranks, and resumes mid-epoch exactly without reading the batches it skips. The 4 GB measurement
is scripts/big_sequences.py (README, "Data larger than memory")."""

import json
import os
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning import Callback, LightningModule, Trainer
from torch.utils.data import DistributedSampler

from project.data import SequenceFileDataModule
from project.data.batches import batch_loader
from project.data.sequence_arrays import SequenceArrays
from project.errors import UserError
from tests.callbacks import callback_flag, load_weights
from tests.conftest import CONFIGS, QUIET, cli, cli_process, run_dirs

# 110 samples, 11 held out for validation: 99 train, 7 batches of 16 (the last one of 3)
COUNT, BATCH = 110, 16


def write_folder(folder: Path, regression: bool = False, count: int = COUNT) -> Path:
    """`x`, `y` and `lengths` as `.npy` files in `folder`, and the same in `folder`.npz; with
    `regression`, `y` is each sample's row number, so a batch's targets name the rows read."""
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.standard_normal((count, 12, 3)).astype(np.float32),
        "y": np.arange(count, dtype=np.float32) if regression else rng.integers(0, 4, count),
        "lengths": rng.integers(1, 13, count),
    }
    folder.mkdir()
    for name, values in arrays.items():
        np.save(folder / f"{name}.npy", values)
    np.savez(folder.with_suffix(".npz"), **arrays)
    return folder


def config(workdir: Path, data: Path, regression: bool = False, workers: int = 0) -> Path:
    path = workdir / f"{data.name}-{workers}.yaml"
    path.write_text(
        "seed_everything: 3\n"
        "model:\n  class_path: SequenceClassifier\n  init_args: {hidden_size: 8, dropout: 0.0}\n"
        f"data:\n  class_path: SequenceFileDataModule\n  init_args:\n    train: {data}\n"
        f"    task: {'regression' if regression else 'classification'}\n"
        f"    batch_size: {BATCH}\n    num_workers: {workers}\n"
        "trainer:\n  max_epochs: 2\n"
    )
    return path


class RecordTargets(Callback):
    """Each rank appends the targets of every training batch to `<path>-rank<R>.jsonl`, one
    line a batch, as it goes: a run stopped and resumed writes one record of both."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: tuple, _: int
    ) -> None:
        with open(f"{self.path}-rank{trainer.global_rank}.jsonl", "a") as file:
            file.write(json.dumps(batch[1].tolist()) + "\n")


def recorded(path: Path) -> list[list[float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class CtrlCAtStep(Callback):
    """Sends this process SIGINT after optimizer step `step`: Ctrl-C, which `LastCheckpoint`
    turns into a mid-epoch `last.ckpt` and a stop."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: tuple, _: int
    ) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def here(name: str, **init_args: object) -> list[str]:
    """The CLI flags that add this module's callback `name` to a run."""
    spec = {"class_path": f"tests.test_big_sequences.{name}", "init_args": init_args}
    return ["--trainer.callbacks+", json.dumps(spec)]


def record(path: str) -> list[str]:
    return here("RecordTargets", path=path)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_folder_trains_to_the_weights_of_the_same_npz(workdir: Path, workers: int) -> None:
    data = write_folder(workdir / "seq")
    for name, source in (("npz", data.with_suffix(".npz")), ("folder", data)):
        cli("fit", "-c", config(workdir, source, workers=workers), "--experiment", name,
            *callback_flag("SaveWeights", folder=name), *QUIET)  # fmt: skip
    npz, folder = load_weights(workdir / "npz")[0], load_weights(workdir / "folder")[0]
    assert npz["weights"].keys() == folder["weights"].keys()
    for key, value in npz["weights"].items():
        assert torch.equal(value, folder["weights"][key]), key
    module = SequenceFileDataModule(train=str(data))
    assert isinstance(module.datasets["train"], SequenceArrays)
    assert (module.input_size, module.num_outputs, len(module.datasets["train"])) == (3, 4, 99)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: (f / "x.npy").unlink(), r"seq has no x.npy \(expected x.npy \(samples"),
        (lambda f: (f / "y.npy").unlink(), r"seq has no y.npy"),
        (lambda f: np.save(f / "x.npy", np.zeros(5)), r"x.npy: float64 \(5,\), expected"),
        (lambda f: np.save(f / "y.npy", np.zeros(3)), r"y has shape \(3,\), expected \(110,\)"),
        (lambda f: np.save(f / "y.npy", np.full(COUNT, 0.5)), r"needs integer labels"),
        (lambda f: np.save(f / "lengths.npy", np.full(COUNT, 13)), r"values in 1..12"),
        (lambda f: np.save(f / "x.npy", np.full((COUNT, 4), np.nan)), r"NaN or infinite"),
        (lambda f: np.save(f / "y.npy", np.array([{}] * COUNT)), r"could not be read"),
    ],
)
def test_a_bad_folder_is_one_line_naming_the_file(tmp_path: Path, change, message: str) -> None:  # noqa: ANN001
    folder = write_folder(tmp_path / "seq")
    change(folder)
    with pytest.raises(UserError, match=message):
        SequenceFileDataModule(train=str(folder))


class CountedReads(SequenceArrays):
    reads: list[int] = []  # in this process: the loader runs without workers here

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        self.reads.extend(indices)
        return super().__getitems__(indices)


@pytest.mark.parametrize("pure_reads", [True, False])
@pytest.mark.parametrize("skip", [0, 1, 3, 6])
def test_a_resume_skips_batches_without_reading_them(
    tmp_path: Path, pure_reads: bool, skip: int
) -> None:
    """The resumed pass gives the rest of the interrupted one; a dataset with pure reads is not
    asked for the skipped batches, any other is (its randomness then repeats)."""
    folder = write_folder(tmp_path / "seq", regression=True, count=100)
    dataset = CountedReads(folder, torch.arange(100.0), None)
    dataset.pure_reads = pure_reads
    whole = [b[1].tolist() for b in batch_loader(dataset, BATCH, shuffle=True)]
    loader = batch_loader(dataset, BATCH, shuffle=True)
    loader.load_state_dict({"epoch": 0, "batches": skip})
    CountedReads.reads = []
    assert [b[1].tolist() for b in loader] == whole[skip:]
    read = sum(whole[skip:] if pure_reads else whole, [])
    assert sorted(CountedReads.reads) == sorted(int(row) for row in read)
    assert len(loader) == len(whole) == 7


@pytest.mark.parametrize("persistent", [False, True])
def test_workers_resume_at_the_same_batch_on_each_rank(tmp_path: Path, persistent: bool) -> None:
    """With workers, each of 2 ranks' shares (the DistributedSampler Lightning puts under DDP)
    resumes at the batch where it stopped; the shares cover the rows once."""
    folder = write_folder(tmp_path / "seq", regression=True, count=100)
    dataset = SequenceArrays(folder, torch.arange(100.0), None)
    options = {"num_workers": 2, "persistent_workers": persistent}
    shares = []
    for rank in (0, 1):
        share = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=5)
        whole = [b[1].tolist() for b in batch_loader(dataset, 8, False, sampler=share)]
        loader = batch_loader(dataset, 8, False, sampler=share, **options)
        assert [b[1].tolist() for b in loader] == whole  # a first pass through the workers
        loader.load_state_dict({"epoch": 0, "batches": 4})
        assert [b[1].tolist() for b in loader] == whole[4:]
        shares.append(sum(whole, []))
        # persistent workers forked for the next loader would inherit this one's live iterator
        del loader
    assert len(shares[0]) == len(shares[1]) == 50
    assert sorted(shares[0] + shares[1]) == list(range(100))


def test_mid_epoch_resume_of_a_folder_run_is_exact(workdir: Path) -> None:
    """Ctrl-C at step 10 (epoch 1, batch 3), resumed: the same batches, bitwise the weights."""
    data = write_folder(workdir / "seq", regression=True)
    common = ["-c", config(workdir, data, regression=True, workers=2), *QUIET]
    cli("fit", *common, "--experiment", "whole", *record("whole"),
        *callback_flag("SaveWeights", folder="whole"))  # fmt: skip
    with pytest.raises(SystemExit, match="130"):
        cli("fit", *common, "--experiment", "cut", *record("cut"), *here("CtrlCAtStep", step=10))
    assert len(recorded(workdir / "cut-rank0.jsonl")) == 10
    (cut,) = run_dirs(workdir, "cut")
    # the run's config.yaml holds the callbacks above: the record goes on (a second Ctrl-C at
    # step 10 never comes)
    cli("fit", "-c", cut / "config.yaml", "--ckpt_path", "last",
        *callback_flag("SaveWeights", folder="rest"), *QUIET)  # fmt: skip
    batches = recorded(workdir / "whole-rank0.jsonl")
    assert len(batches) == 14 and recorded(workdir / "cut-rank0.jsonl") == batches
    whole, rest = load_weights(workdir / "whole")[0], load_weights(workdir / "rest")[0]
    for key, value in whole["weights"].items():
        assert torch.equal(value, rest["weights"][key]), key


@pytest.mark.slow
def test_ddp_ranks_read_their_own_share(workdir: Path) -> None:
    """Two CPU ranks, each with a DataLoader worker: every training row read once per epoch, by
    one rank only (but the one that pads the ranks to equal shares)."""
    data = write_folder(workdir / "seq", regression=True, count=75)  # 67 train, 8 val
    result = cli_process("fit", "-c", config(workdir, data, regression=True, workers=1),
        "-c", CONFIGS / "trainer" / "ddp_cpu.yaml", "--data.init_args.batch_size", "8",
        "--trainer.max_epochs", "1", *record(str(workdir / "ddp")), *QUIET,
        cwd=workdir)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [recorded(workdir / f"ddp-rank{r}.jsonl") for r in (0, 1)]
    rows = [sum(batches, []) for batches in ranks]
    train = SequenceFileDataModule(train=str(data), task="regression").datasets["train"]
    # DistributedSampler pads 67 rows to 68 by repeating the first of the order: one row twice
    assert len(rows[0]) == len(rows[1]) == 34
    reads = Counter(rows[0] + rows[1])
    assert set(reads) == set(train.targets.tolist())
    assert sorted(reads.values()) == [1] * 66 + [2]
