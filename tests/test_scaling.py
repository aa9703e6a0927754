"""configs/trainer/ overlays on a CPU: accumulation and DDP change the schedule, not the result;
mixed precision trains; a signalled run resumes mid-epoch exactly; launch mistakes are one line.

The GPU overlays (gpu, ddp, multi_node) only parse here; tests/test_slurm.py runs slurm.yaml.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from project.launch_checks import check_launch
from tests.callbacks import callback_flag, load_weights
from tests.conftest import CONFIGS, QUIET, ROOT, SEQUENCE, cli, cli_process

GRU = SEQUENCE / "gru.yaml"
TRAINER = CONFIGS / "trainer"
# small and quick: 3500 training samples in batches of 250 (14 batches, or 7 per rank with 2)
TINY = ["--model.init_args.hidden_size", "16", "--data.init_args.batch_size", "250", *QUIET]
# largest weight differences measured on a 2-core CPU: 2.8e-7 and 4.3e-7 (the tests print them,
# shown by `pytest -rA`): float32 sums taken in another order, nothing systematic
ACCUMULATION_TOLERANCE = 1e-5
DDP_TOLERANCE = 1e-5


def weight_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize("overlay", sorted(TRAINER.glob("*.yaml")), ids=lambda p: p.stem)
def test_trainer_overlay_prints_its_config(overlay: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit:
        cli("fit", "-c", GRU, "-c", overlay, "--print_config")
    assert exit.value.code in (0, None)
    printed = capsys.readouterr().out
    # every key the overlay sets shows up in the resolved config
    for key in yaml.safe_load(overlay.read_text())["trainer"]:
        assert f"  {key.rstrip('+')}:" in printed, key


def test_cpu_overlay_trains(workdir: Path) -> None:
    cli("fit", "-c", GRU, "-c", TRAINER / "cpu.yaml", *TINY, "--trainer.max_steps", "2")
    assert list((workdir / "logs" / "gru").glob("version_0/checkpoints/last.ckpt"))


@pytest.mark.slow
def test_accumulation_matches_one_large_batch(workdir: Path) -> None:
    """4 accumulated batches of 50 make the same 3 Adam steps as batches of 200."""
    common = [
        "fit",
        "-c",
        GRU,
        *TINY,
        "--trainer.max_steps",
        "3",
        "--trainer.limit_val_batches",
        "0",
    ]
    cli(
        *common,
        "-c",
        TRAINER / "accumulate.yaml",
        "--data.init_args.batch_size",
        "50",
        *callback_flag("SaveWeights", folder="accumulated"),
    )
    cli(*common, "--data.init_args.batch_size", "200", *callback_flag("SaveWeights", folder="big"))
    accumulated, big = load_weights(workdir / "accumulated")[0], load_weights(workdir / "big")[0]
    difference = weight_difference(accumulated["weights"], big["weights"])
    assert difference < ACCUMULATION_TOLERANCE, f"max |Δw| = {difference:.2e}"
    # the same start, and far from it: 3 Adam steps of lr 0.01 move weights by about 0.03
    assert weight_difference(accumulated["initial"], big["initial"]) == 0
    assert weight_difference(big["initial"], big["weights"]) > 100 * ACCUMULATION_TOLERANCE
    print(f"accumulation: max |Δw| = {difference:.2e}")


@pytest.mark.slow
def test_two_ddp_processes_match_one_process_with_twice_the_batch(workdir: Path) -> None:
    """2 gloo processes with batch 100 each end where 1 process with batch 200 ends."""
    common = [
        "fit",
        "-c",
        GRU,
        *TINY,
        *"--trainer.max_epochs 1 --trainer.limit_val_batches 0".split(),
    ]
    ddp_flags = ["-c", TRAINER / "ddp_cpu.yaml", "--data.init_args.batch_size", "100"]
    save = callback_flag("SaveWeights", folder="ddp")
    ddp = cli_process(*common, *ddp_flags, *save, cwd=workdir)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    cli(*common, "--data.init_args.batch_size", "200", *callback_flag("SaveWeights", folder="one"))

    ranks, (one,) = load_weights(workdir / "ddp"), load_weights(workdir / "one").values()
    assert sorted(ranks) == [0, 1] and {r["world_size"] for r in ranks.values()} == {2}
    assert ranks[0]["pid"] != ranks[1]["pid"]
    # DDP broadcasts the initial weights and averages the gradients: the ranks never drift apart
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key
    difference = weight_difference(ranks[0]["weights"], one["weights"])
    assert difference < DDP_TOLERANCE, f"max |Δw| = {difference:.2e}"
    print(f"ddp: max |Δw| = {difference:.2e} after 18 steps")


def test_bf16_mixed_trains_on_cpu(workdir: Path) -> None:
    """The sine-frequency regression (padded, packed sequences) under bf16 autocast: the
    network computes in bf16 and the loss falls (from about 2.5: the targets are 0.5 to 2.5)."""
    small = "--data.init_args.num_train 500 --data.init_args.num_val 100 --trainer.max_epochs 3"
    record = callback_flag("TrainingRecord", path="record.json")
    config = SEQUENCE / "signal_frequency.yaml"
    cli(
        "fit", "-c", config, "-c", TRAINER / "bf16.yaml", *TINY[:2], *QUIET, *small.split(), *record
    )
    record = json.loads((workdir / "record.json").read_text())
    assert record["precision"] == "bf16-mixed"
    assert record["net_output_dtypes"] == ["torch.bfloat16"]  # the network ran in bf16
    losses = record["train_loss"]
    assert len(losses) == 3 and losses[-1] < losses[0] / 2, losses


def summary_of(run: subprocess.CompletedProcess) -> list[str]:
    """The lines of the summary `fit` prints at its end (between its two rules)."""
    lines = run.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("fit took"))
    return [line for line in lines[start:] if not line.startswith("─")]


@pytest.mark.slow
def test_ddp_fork_and_spawn_end_as_ddp_does(workdir: Path) -> None:
    """`ddp_fork` and `ddp_spawn` train in processes they start, which send back the weights but
    not the steps or the best score: the run still has one folder, the same weights as `ddp`,
    and a summary that counts its steps and names that folder."""
    common = ["fit", "-c", GRU, *TINY, "--trainer.max_epochs", "2", "-c", TRAINER / "ddp_cpu.yaml"]
    summaries, weights = {}, {}
    for number, strategy in enumerate(("ddp", "ddp_fork", "ddp_spawn")):
        run = cli_process(*common, "--trainer.strategy", strategy, cwd=workdir)
        assert run.returncode == 0, run.stderr[-3000:]
        folder = workdir / "logs" / "gru" / f"version_{number}"
        assert sorted(p.name for p in (workdir / "logs" / "gru").iterdir()) == [
            f"version_{n}" for n in range(number + 1)
        ]  # no empty folder from the process that started the ranks
        summaries[strategy] = [
            line.replace(f"version_{number}", "version_N") for line in summary_of(run)[1:]
        ]
        assert summary_of(run)[0].endswith("(2 epochs, 14 steps)"), summary_of(run)
        assert f"run folder: logs/gru/version_{number}  (metrics.json" in run.stdout
        weights[strategy] = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert summaries["ddp_fork"] == summaries["ddp_spawn"] == summaries["ddp"]
    assert any(line.startswith("best val/loss: ") for line in summaries["ddp"])
    for strategy in ("ddp_fork", "ddp_spawn"):
        for key, value in weights["ddp"]["state_dict"].items():
            assert torch.equal(value, weights[strategy]["state_dict"][key]), (strategy, key)


@pytest.mark.slow
def test_fp16_on_cpu_says_it_uses_bf16(workdir: Path) -> None:
    result = cli_process(
        "fit",
        "-c",
        GRU,
        "-c",
        TRAINER / "fp16.yaml",
        *TINY,
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "0",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "precision='16-mixed')` but AMP with fp16 is not supported on CPU" in output
    assert "Using `precision='bf16-mixed'` instead" in output
    assert "Using bfloat16 Automatic Mixed Precision (AMP)" in output


def test_compile_overlay_trains_and_keeps_checkpoint_keys(workdir: Path) -> None:
    cli(
        "fit",
        "-c",
        GRU,
        "-c",
        TRAINER / "compile.yaml",
        *TINY,
        "--trainer.max_steps",
        "3",
        "--trainer.limit_val_batches",
        "2",
    )
    (last,) = (workdir / "logs" / "gru").glob("version_0/checkpoints/last.ckpt")
    keys = torch.load(last, weights_only=True)["state_dict"].keys()
    assert "net.head.weight" in keys and not [k for k in keys if "_orig_mod" in k]


def test_compile_network_compiles_the_net() -> None:
    """The callback hands `net` to torch.compile in place: a backend that counts graphs sees it,
    and the parameter names stay. (Dynamo skips frames that hold an RNN module, so a GRU's net
    compiles to nothing; a CNN's, as here, does.)"""
    from lightning import LightningModule
    from torch._dynamo import reset
    from torch._dynamo.backends.registry import register_backend

    from project.callbacks.compile_network import CompileNetwork

    graphs = []

    def counting(graph_module: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(graph_module)
        return graph_module.forward

    register_backend(counting, name="counting_for_test")
    reset()
    model = LightningModule()
    model.net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    names = set(model.state_dict())
    before = model.net(torch.ones(2, 1, 8, 8))
    CompileNetwork(backend="counting_for_test").setup(None, model, "fit")  # type: ignore[arg-type]
    after = model.net(torch.ones(2, 1, 8, 8))
    assert len(graphs) == 1, "torch.compile never saw the network"
    assert torch.equal(before, after) and set(model.state_dict()) == names


@pytest.mark.slow
def test_signalled_run_resumes_mid_epoch_exactly(workdir: Path) -> None:
    """Outside Slurm, SIGUSR1 saves hpc_ckpt_1.ckpt after the current batch and stops; resuming
    from it (DataLoader workers > 0) ends with the weights of a run never stopped."""
    # batches of 500: 7 per epoch; the signal comes in the second epoch
    run = "--trainer.max_epochs 2 --data.init_args.batch_size 500 --data.init_args.num_workers 2"
    common = ["fit", "-c", GRU, *TINY, *run.split(), "--trainer.default_root_dir", "run"]
    whole = cli_process(*common, *callback_flag("SaveWeights", folder="whole"), cwd=workdir)
    assert whole.returncode == 0, whole.stderr[-3000:]

    progress = workdir / "progress"
    slow = callback_flag("SlowBatches", seconds=0.2, progress=str(progress))
    command = [
        "-m",
        "project",
        *map(str, common),
        "--trainer.callbacks+",
        "project.callbacks.Requeue",
    ]
    stopped = subprocess.Popen(
        [sys.executable, *command, *slow],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not (progress.exists() and progress.read_text() and int(progress.read_text()) >= 9):
        assert stopped.poll() is None and time.monotonic() < deadline, "never reached step 9"
        time.sleep(0.05)
    stopped.send_signal(signal.SIGUSR1)
    output, _ = stopped.communicate(timeout=120)
    assert stopped.returncode == 0, output[-3000:]
    assert "Stopped on SIGUSR1 after step" in output
    hpc = workdir / "run" / "hpc_ckpt_1.ckpt"
    done = torch.load(hpc, weights_only=False)["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert 0 < done["current"]["processed"] < 7, f"not mid-epoch: {done}"

    resumed = cli_process(
        *common, "--ckpt_path", hpc, *callback_flag("SaveWeights", folder="resumed"), cwd=workdir
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (
        load_weights(workdir / "whole")[0]["weights"],
        load_weights(workdir / "resumed")[0]["weights"],
    )
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key}: max |Δ| {weight_difference(a, b):.2e}"


@pytest.mark.slow
def test_torchrun_launcher_starts_one_process_per_device(workdir: Path) -> None:
    """scripts/torchrun.sh without Slurm: 2 CPU processes, ranks from torchrun's variables."""
    short = "--trainer.max_steps 2 --trainer.limit_val_batches 0"
    with socket.socket() as probe:  # a port nobody else uses now
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NPROC_PER_NODE": "2", "MASTER_PORT": port}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    command = [ROOT / "scripts" / "torchrun.sh", GRU, "-c", TRAINER / "ddp_cpu.yaml", *TINY]
    command += [*short.split(), *callback_flag("SaveWeights", folder="ranks")]
    result = subprocess.run(
        list(map(str, command)), cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = load_weights(workdir / "ranks")
    assert sorted(ranks) == [0, 1] and {r["world_size"] for r in ranks.values()} == {2}


# --- launch mistakes: one line, exit code 2, before any work -------------------------------

LAUNCH_VARIABLES = ("SLURM_", "TORCHELASTIC_", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "CUDA_VISIBLE")


@pytest.fixture
def clean_launch_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No Slurm or torchrun variables, even when the tests run inside a Slurm job."""
    for name in list(os.environ):
        if name.startswith(LAUNCH_VARIABLES):
            monkeypatch.delenv(name)
    return monkeypatch


SLURM_TWO_TASKS = {
    "SLURM_JOB_ID": "7",
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "2",
    "SLURM_NNODES": "1",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_TASKS_PER_NODE": "2",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}
IN_SRUN = {**SLURM_TWO_TASKS, "SLURM_STEP_ID": "0"}


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        (
            {},
            ["--trainer.accelerator", "cpu", "--trainer.devices", "64"],
            "trainer.devices=64 CPU processes but this machine offers",
        ),
        (SLURM_TWO_TASKS, ["-c", TRAINER / "ddp_cpu.yaml"], "python was started without srun"),
        (
            IN_SRUN,
            ["--trainer.accelerator", "cpu", "--trainer.devices", "1"],
            "trainer.devices=1 but Slurm runs 2 task(s) per node",
        ),
        (
            {**IN_SRUN, "SLURM_NNODES": "2", "SLURM_NTASKS": "4"},
            ["-c", TRAINER / "ddp_cpu.yaml"],
            "trainer.num_nodes=1 but the Slurm job runs on 2 node(s)",
        ),
        (
            {**IN_SRUN, "SLURM_NTASKS_PER_NODE": "", "SLURM_TASKS_PER_NODE": "2,1"},
            ["-c", TRAINER / "ddp_cpu.yaml"],
            "unevenly",
        ),
        (
            {"TORCHELASTIC_RUN_ID": "x", "LOCAL_WORLD_SIZE": "1", "WORLD_SIZE": "1"},
            ["-c", TRAINER / "ddp_cpu.yaml"],
            "torchrun started 1 process(es) per node",
        ),
        ({}, ["-c", TRAINER / "slurm.yaml"], "needs a Slurm job"),
    ],
    ids=[
        "too-many-cpu-processes",
        "slurm-without-srun",
        "devices-vs-tasks",
        "nodes",
        "uneven-tasks",
        "torchrun",
        "slurm-overlay-outside-slurm",
    ],
)
def test_launch_mistake_is_one_line(
    env: dict,
    args: list,
    expected: str,
    clean_launch_env: pytest.MonkeyPatch,
    workdir: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    for name, value in env.items():
        if value:
            clean_launch_env.setenv(name, value)
    with pytest.raises(SystemExit) as exit:
        cli("fit", "-c", GRU, *args)
    assert exit.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and expected in line
    assert not (workdir / "logs").exists()


def test_slurm_overlay_outside_slurm_is_one_line(clean_launch_env: pytest.MonkeyPatch) -> None:
    from project.errors import UserError

    plugins = [{"class_path": "lightning.pytorch.plugins.environments.SLURMEnvironment"}]
    with pytest.raises(UserError, match="needs a Slurm job"):
        check_launch({"accelerator": "cpu", "devices": 1, "plugins": plugins})
    clean_launch_env.setenv("SLURM_NTASKS", "1")
    check_launch({"accelerator": "cpu", "devices": 1, "plugins": plugins})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_overlay_without_gpu_is_one_line(
    clean_launch_env: pytest.MonkeyPatch, workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    for overlay in ("gpu", "ddp", "multi_node"):
        with pytest.raises(SystemExit) as exit:
            cli("fit", "-c", GRU, "-c", TRAINER / f"{overlay}.yaml")
        assert exit.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "no GPU is visible here" in line, overlay


def test_gpu_overlay_speedups_apply_on_cpu(workdir: Path) -> None:
    # the overlay's settings, run with the CPU: TF32 allowed, channels-last CNN weights, cuDNN
    # benchmark mode; its test on a GPU is `scripts/bench/benchmark.py --gpu`
    from project.cli import make_cli

    config = CONFIGS / "image" / "resnet50_throughput.yaml"
    tiny = ["--data.init_args.num_samples", "8", "--data.init_args.image_size", "32"]
    tiny += ["--model.init_args.image_size", "32", "--data.init_args.batch_size", "2"]
    tiny += ["--trainer.max_steps", "1"]
    settings = torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark
    try:
        args = ["fit", "-c", config, "-c", TRAINER / "gpu.yaml", *tiny, *QUIET]
        run = make_cli([*map(str, args), "--trainer.accelerator", "cpu"])
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.benchmark
    finally:
        torch.set_float32_matmul_precision(settings[0])
        torch.backends.cudnn.benchmark = settings[1]
    conv = run.model.net.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not conv.is_contiguous()  # NHWC, not NCHW
    assert run.trainer.global_step == 1  # and it trained


def test_consistent_launches_pass(clean_launch_env: pytest.MonkeyPatch) -> None:
    check_launch(
        {"accelerator": "cpu", "devices": 2, "num_nodes": 1}
    )  # no Slurm: Lightning starts 2
    for name, value in IN_SRUN.items():
        clean_launch_env.setenv(name, value)
    check_launch({"accelerator": "cpu", "devices": 2, "num_nodes": 1})
    clean_launch_env.setenv("SLURM_JOB_NAME", "interactive")  # Lightning ignores Slurm then
    check_launch({"accelerator": "cpu", "devices": 1, "num_nodes": 1})


def test_clip_gradients_overlay_bounds_the_applied_norm(workdir: Path) -> None:
    """With a learning rate high enough for large gradients, every step the optimizer takes
    uses gradients of norm at most 1.0, and some were larger before clipping."""
    record = callback_flag("GradientNorms", path="norms.json")
    cli("fit", "-c", GRU, "-c", TRAINER / "clip_gradients.yaml", *TINY, *record,
        "--trainer.max_steps", "8", "--trainer.limit_val_batches", "0",
        "--optimizer.init_args.lr", "0.5")  # fmt: skip
    norms = json.loads((workdir / "norms.json").read_text())
    assert len(norms["applied"]) == len(norms["before"]) == 8
    assert max(norms["applied"]) <= 1.0 + 1e-5, norms["applied"]
    assert max(norms["before"]) > 1.0, norms["before"]  # the overlay had something to clip


@pytest.mark.slow
def test_early_stopping_resumed_stops_where_an_uninterrupted_run_stops(workdir: Path) -> None:
    """The overlay's patience is in the checkpoints: a run stopped after 2 epochs and resumed
    stops at the same epoch as a run never stopped, not `patience` epochs later."""
    # a learning rate so small that val/loss never improves by min_delta after the first epoch
    stalled = [
        "-c", TRAINER / "early_stopping.yaml", *TINY, "--optimizer.init_args.lr", "1e-9",
        "--trainer.callbacks.init_args.patience", "2", "--trainer.callbacks.init_args.min_delta",
        "0.01", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
    ]  # fmt: skip
    cli("fit", "-c", GRU, *stalled, "--trainer.max_epochs", "10", "--experiment", "whole")
    cli("fit", "-c", GRU, *stalled, "--trainer.max_epochs", "2", "--experiment", "cut")
    cut = workdir / "logs" / "cut" / "version_0"
    cli("fit", "-c", cut / "config.yaml", "--ckpt_path", "last", "--trainer.max_epochs", "10",
        *QUIET)  # fmt: skip
    whole = workdir / "logs" / "whole" / "version_0"
    stopped = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert stopped < 9, "the uninterrupted run must stop early for this test to mean anything"
    resumed = torch.load(cut / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert resumed == stopped, (resumed, stopped)
    print(f"early stopping: stopped at epoch {stopped}, resumed run too")
