"""Every file under configs/ and the tests that exercise it, in one table.

A config without an entry fails here, and so does an entry whose config or test is gone, or a
config that only slow tests run (`make test` exercises every config). Moving configs (into
configs/sequence/, say) means updating their paths in EXERCISED_BY, nothing else here.
"""

import ast
from functools import cache

import pytest

from tests.conftest import CONFIGS, ROOT

HERE = "tests/test_coverage.py"
CONFIG_TESTS = "tests/test_configs.py"
IMAGE_TESTS = "tests/test_image_configs.py"
SCALING = "tests/test_scaling.py"
RECIPE = "tests/test_recipe.py"
LOGGERS = "tests/test_loggers.py"
MLFLOW = "test_mlflow_holds_params_metrics_per_step_images_and_the_checkpoint"

# the generic tests, run over every file of a folder (they find the files themselves)
EXPERIMENT = (
    f"{CONFIG_TESTS}::test_experiment_prints_its_config",
    f"{CONFIG_TESTS}::test_experiment_runs_one_batch",
)
DEBUG = (
    f"{CONFIG_TESTS}::test_overlay_prints_its_config",
    f"{CONFIG_TESTS}::test_debug_overlay_runs",
)
IMAGE = (
    f"{IMAGE_TESTS}::test_image_config_prints",
    f"{IMAGE_TESTS}::test_image_config_fits_one_batch",
)
TRAINER = (f"{SCALING}::test_trainer_overlay_prints_its_config",)  # each overlay's keys resolve
GPU_ONLY = (*TRAINER, f"{SCALING}::test_gpu_overlay_without_gpu_is_one_line")
SEARCH = ("tests/test_search.py::test_a_shipped_space_is_checked_against_its_experiment",)
# the baselines' floors on seeds other than 42 (slow: whole trainings)
BASELINE = (
    *EXPERIMENT,
    "tests/test_baselines.py::test_each_shipped_sequence_config_reaches_its_floor_on_other_seeds",
)

# each config (its path under configs/) and the tests that exercise it ("file::function")
EXERCISED_BY: dict[str, tuple[str, ...]] = {
    "sequence/gru.yaml": BASELINE,
    "sequence/lstm.yaml": BASELINE,
    "sequence/rnn.yaml": BASELINE,
    "sequence/signal_frequency.yaml": EXPERIMENT,
    "debug/fast_dev_run.yaml": DEBUG,
    "debug/limit_batches.yaml": DEBUG,
    "debug/overfit_batches.yaml": DEBUG,
    "debug/profiler.yaml": DEBUG,
    "image/finetune_stage1.yaml": IMAGE,
    "image/finetune_stage2.yaml": IMAGE,
    "image/inception_v3.yaml": IMAGE,
    "image/resnet18_cifar10.yaml": IMAGE,
    "image/resnet50_staged.yaml": IMAGE,
    "image/resnet50_throughput.yaml": IMAGE,
    "image/small_cnn.yaml": IMAGE,
    "image/vgg16.yaml": IMAGE,
    "recipe/image_augment.yaml": (f"{RECIPE}::test_image_recipe_trains_with_true_label_metrics",),
    "recipe/warmup_cosine.yaml": (
        f"{RECIPE}::test_warmup_cosine_ends_with_the_run",
        f"{RECIPE}::test_warmup_cosine_resumes_on_its_curve",
    ),
    "logger/tensorboard.yaml": (f"{LOGGERS}::test_the_tensorboard_overlay_is_the_default",),
    "logger/csv.yaml": (f"{LOGGERS}::test_csv_writes_metrics_params_and_image_files",),
    "logger/mlflow.yaml": (f"{LOGGERS}::{MLFLOW}",),
    "logger/tensorboard_mlflow.yaml": (f"{LOGGERS}::{MLFLOW}",),
    "logger/wandb.yaml": (f"{LOGGERS}::test_wandb_offline_run_holds_config_history_and_images",),
    "search/finetune_stage2.yaml": SEARCH,
    "search/gru.yaml": SEARCH,
    "trainer/accumulate.yaml": (*TRAINER, f"{SCALING}::test_accumulation_matches_one_large_batch"),
    "trainer/bf16.yaml": (*TRAINER, f"{SCALING}::test_bf16_mixed_trains_on_cpu"),
    "trainer/clip_gradients.yaml": (
        *TRAINER,
        f"{SCALING}::test_clip_gradients_overlay_bounds_the_applied_norm",
    ),
    "trainer/compile.yaml": (
        *TRAINER,
        f"{SCALING}::test_compile_overlay_trains_and_keeps_checkpoint_keys",
    ),
    "trainer/cpu.yaml": (*TRAINER, f"{SCALING}::test_cpu_overlay_trains"),
    "trainer/ddp_cpu.yaml": (
        *TRAINER,
        f"{SCALING}::test_two_ddp_processes_match_one_process_with_twice_the_batch",
        f"{SCALING}::test_torchrun_launcher_starts_one_process_per_device",
    ),
    "trainer/early_stopping.yaml": (
        *TRAINER,
        f"{SCALING}::test_early_stopping_resumed_stops_where_an_uninterrupted_run_stops",
        f"{RECIPE}::test_ema_and_early_stopping_agree_on_every_ddp_rank",
    ),
    "trainer/ema.yaml": (
        *TRAINER,
        f"{RECIPE}::test_ema_checkpoints_hold_the_average_that_validation_measured",
        f"{RECIPE}::test_ema_resumed_ends_with_the_weights_of_an_uninterrupted_run",
        f"{RECIPE}::test_ema_and_early_stopping_agree_on_every_ddp_rank",
    ),
    "trainer/fp16.yaml": (*TRAINER, f"{SCALING}::test_fp16_on_cpu_says_it_uses_bf16"),
    # the GPU overlays need GPUs to run: here they parse, and without a GPU stop in one line
    "trainer/ddp.yaml": GPU_ONLY,
    "trainer/gpu.yaml": (*GPU_ONLY, f"{SCALING}::test_gpu_overlay_speedups_apply_on_cpu"),
    "trainer/multi_node.yaml": (
        *GPU_ONLY,  # and on 2 nodes of CPU processes:
        "tests/test_two_nodes.py::test_two_torchrun_nodes_match_one_process_with_twice_the_batch",
        "tests/test_two_nodes.py::test_two_node_slurm_job_matches_one_process",
    ),
    "trainer/slurm.yaml": (
        *TRAINER,
        f"{SCALING}::test_slurm_overlay_outside_slurm_is_one_line",
        "tests/test_slurm.py::test_preempted_job_resumes_mid_epoch_to_the_same_weights",
    ),
}


@cache
def slow_marks(path: str) -> dict[str, bool]:
    """The test functions of a file, each with whether it is marked slow (itself, or its
    whole module through `pytestmark`)."""
    tree = ast.parse((ROOT / path).read_text())
    module_slow = any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
        and "slow" in ast.unparse(node.value)
        for node in tree.body
    )
    return {
        node.name: module_slow or any("mark.slow" in ast.unparse(d) for d in node.decorator_list)
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def test_every_config_has_an_entry_and_every_entry_a_config() -> None:
    configs = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.y*ml")}
    if missing := sorted(configs - set(EXERCISED_BY)):
        pytest.fail(f"{missing} without a test: add them to EXERCISED_BY in {HERE}")
    if stale := sorted(set(EXERCISED_BY) - configs):
        pytest.fail(f"{stale} are gone: remove or update their paths in EXERCISED_BY in {HERE}")


def test_every_named_test_exists_and_every_config_runs_in_the_everyday_tier() -> None:
    unknown, only_slow = [], []
    for config, tests in EXERCISED_BY.items():
        unknown += [test for test in tests if not exists(test)]
        if all(is_slow(test) for test in tests if exists(test)):
            only_slow.append(config)
    if unknown:
        pytest.fail(f"{unknown} do not exist: fix their names in EXERCISED_BY in {HERE}")
    if only_slow:
        pytest.fail(f"only slow tests run {only_slow}: name an everyday one in {HERE}")


def exists(test: str) -> bool:
    path, name = test.split("::")
    return (ROOT / path).is_file() and name in slow_marks(path)


def is_slow(test: str) -> bool:
    path, name = test.split("::")
    return slow_marks(path)[name]
