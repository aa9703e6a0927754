"""What a search leaves beside its trials (`make search-report`, and at the end of a search):
`trials.md` (every trial, best first), `best.yaml` (the best trial's config: `fit -c` repeats
it), Optuna's plots as PNG files in `report/` and as images in TensorBoard
(`logs/<exp>/search/<study>/`)."""

import io
import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import yaml  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from optuna.visualization import matplotlib as plots  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from project.runs import CONFIG  # noqa: E402

PLOTS = {
    "history": plots.plot_optimization_history,
    "importances": plots.plot_param_importances,
    "parallel_coordinates": plots.plot_parallel_coordinate,
}


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials best first, then pruned ones (by their last value), then the rest."""
    sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1

    def key(trial: FrozenTrial) -> tuple:
        value = trial.value
        if value is None and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]
        order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}.get(trial.state, 2)
        return order, sign * value if value is not None else math.inf, trial.number

    return sorted(study.get_trials(deepcopy=False), key=key)


def short_name(flag: str) -> str:
    """`model.init_args.hidden_size` → `model/hidden_size`: a space's key as TensorBoard's
    HParams tab names it (project/hparams.py)."""
    return "/".join(part for part in flag.split(".") if part != "init_args")


def plot_names(flags: list[str]) -> dict[str, str]:
    """Each flag's name on a plot's axis: `short_name`, or its last part (`hidden_size`) when
    that is under Optuna's 20 characters, past which its parallel-coordinate plot cuts a name
    ("lr_scheduler/warm..."), and no other flag ends the same way."""
    names = {flag: short_name(flag) for flag in flags}
    lasts = [name.rpartition("/")[2] for name in names.values()]
    for flag, name in names.items():
        last = name.rpartition("/")[2]
        if len(name) >= 20 and lasts.count(last) == 1:
            names[flag] = last
    return names


def with_short_names(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of the study's finished trials with `plot_names` parameters, for
    Optuna's plots, which label axes with the names as they are and cut long ones."""
    copy = optuna.create_study(direction=study.direction)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    names = plot_names(sorted({flag for trial in trials for flag in trial.params}))
    for trial in trials:
        copy.add_trial(
            optuna.trial.create_trial(
                state=trial.state,
                value=trial.value,
                params={names[k]: v for k, v in trial.params.items()},
                distributions={names[k]: v for k, v in trial.distributions.items()},
                intermediate_values=trial.intermediate_values,
            )
        )
    return copy


def table(study: optuna.Study) -> str:
    trials = ranked(study)
    names = sorted({name for trial in trials for name in trial.params})
    monitor = study.user_attrs.get("monitor", "value")
    head = ["trial", "state", monitor, "epochs", *map(short_name, names), "run"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for trial in trials:
        value = trial.value
        shown = f"{value:.4f}" if value is not None else ""
        if value is None and trial.state == TrialState.PRUNED and trial.intermediate_values:
            shown = f"({trial.intermediate_values[max(trial.intermediate_values)]:.4f})"
        epochs = (
            trial.user_attrs.get("epochs")
            if trial.state == TrialState.COMPLETE
            else len(trial.intermediate_values) or ""
        )
        values = [format_value(trial.params.get(name, "")) for name in names]
        cells = [str(trial.number), trial.state.name.lower(), shown, str(epochs), *values]
        rows.append("| " + " | ".join([*cells, trial.user_attrs.get("run", "")]) + " |")
    return "\n".join(rows) + "\n"


def format_value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_best(study: optuna.Study, folder: Path) -> Path | None:
    """The best complete trial's `config.yaml` as `best.yaml`, run under `<study>_best`."""
    complete = [t for t in ranked(study) if t.state == TrialState.COMPLETE]
    run = Path(complete[0].user_attrs.get("run", "")) if complete else None
    if run is None or not (run / CONFIG).exists():
        return None
    config = yaml.safe_load((run / CONFIG).read_text())
    config["experiment"] = f"{study.study_name}_best"
    header = (
        f"# The best trial of study {study.study_name} (trial {complete[0].number}, "
        f"{study.user_attrs.get('monitor', 'value')} {complete[0].value:.6g}), from {run}.\n"
        "# python -m project fit -c this file (add --test_after_fit true to test it)\n"
    )
    path = folder / "best.yaml"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path


def write_plots(study: optuna.Study, folder: Path) -> list[str]:
    """Each plot Optuna can draw from these trials, as a PNG and a TensorBoard image; a plot
    it cannot draw yet (importances need two complete trials) is named in the returned notes."""
    notes = []
    shown = with_short_names(study)
    writer = SummaryWriter(str(folder / "report"))
    for name, plot in PLOTS.items():
        try:
            with warnings.catch_warnings():  # "experimental", and notes on too few trials
                warnings.simplefilter("ignore")
                axes = plot(shown, target_name=study.user_attrs.get("monitor", "Objective Value"))
        except Exception as error:  # noqa: BLE001 (too few trials, one value only, …)
            notes.append(f"no {name} plot: {' '.join(str(error).split())}")
            continue
        figure = (axes.flat[0] if isinstance(axes, np.ndarray) else axes).figure
        figure.set_size_inches(10, 6)
        figure.tight_layout()
        figure.savefig(folder / "report" / f"{name}.png", dpi=100)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        image = np.array(Image.open(buffer).convert("RGB"))
        writer.add_image(f"search/{name}", image, len(study.trials), dataformats="HWC")
        plt.close(figure)
    writer.close()
    return notes


def write_report(study: optuna.Study, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = table(study)
    (folder / "trials.md").write_text(text)
    best = write_best(study, folder)
    notes = write_plots(study, folder)
    states = [t.state for t in study.trials]
    counts = ", ".join(f"{states.count(s)} {s.name.lower()}" for s in TrialState if s in states)
    print(f"\nstudy {study.study_name}: {counts}\n{text}")
    for note in notes:
        print(f"note: {note}")
    print(f"report: {folder}/trials.md, report/*.png; TensorBoard: tensorboard --logdir {folder}")
    if best is not None:
        print(f"best:   python -m project fit -c {best}")
    if study.user_attrs:
        journal = folder / "journal.log"
        if journal.exists():
            print(f"dashboard (pip install optuna-dashboard): optuna-dashboard {journal}")
