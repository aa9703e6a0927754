"""The search report's plots name the parameters as the HParams tab does (`model/hidden_size`),
never cut off ("model.init_args.c…"), whatever the space's keys."""

import matplotlib.pyplot as plt
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from project.search.report import PLOTS, plot_names, short_name, table, with_short_names

SPACE = {
    "optimizer.init_args.lr": FloatDistribution(1e-3, 3e-2, log=True),
    "model.init_args.hidden_size": IntDistribution(8, 64, step=8),
    "model.init_args.cell": CategoricalDistribution(["gru", "lstm"]),
    "data.init_args.batch_size": CategoricalDistribution([50, 100, 200]),
    "lr_scheduler.init_args.warmup_epochs": IntDistribution(0, 3),
}


def study_of(trials: int) -> optuna.Study:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("monitor", "val/loss")
    for number in range(trials):
        trial = study.ask(SPACE)
        if number % 4 == 3:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, trial.params["optimizer.init_args.lr"] * (1 + number % 3))
    study.ask()  # a running trial: left out of the plots
    return study


@pytest.mark.parametrize(
    ("flag", "name"),
    [
        ("model.init_args.hidden_size", "model/hidden_size"),
        ("optimizer.init_args.lr", "optimizer/lr"),
        ("trainer.max_epochs", "trainer/max_epochs"),
        ("model.init_args.backbone.init_args.depth", "model/backbone/depth"),
    ],
)
def test_a_flag_is_named_as_the_hparams_tab_names_it(flag: str, name: str) -> None:
    assert short_name(flag) == name


@pytest.mark.parametrize("trials", [3, 8])
def test_the_plots_and_the_table_show_short_whole_names(trials: int) -> None:
    study = study_of(trials)
    shown = with_short_names(study)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(shown.trials) == len(finished)
    assert [t.value for t in shown.trials] == [t.value for t in finished]
    names = set(plot_names(list(SPACE)).values())
    assert names == {"optimizer/lr", "model/hidden_size", "model/cell", "data/batch_size",
                     "warmup_epochs"}  # fmt: skip
    for name, plot in PLOTS.items():
        axes = plot(shown, target_name="val/loss")
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        texts = [t.get_text() for t in figure.findobj(plt.Text) if t.get_text()]
        plt.close(figure)
        assert not [t for t in texts if "init_args" in t or "…" in t or "..." in t], name
        if name == "parallel_coordinates":  # every parameter an axis, whole
            assert names <= set(texts), texts
    header = table(study).splitlines()[0]
    assert "init_args" not in header and "model/hidden_size" in header
