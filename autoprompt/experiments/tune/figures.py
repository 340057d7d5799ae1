"""A study as a report section: its summary and optuna's plots (history, importances)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, cast

from autoprompt.errors import AutopromptError

if TYPE_CHECKING:  # for annotations only: optuna and matplotlib are imported lazily, where used

    from matplotlib.figure import Figure

from autoprompt.experiments.tune.config import TuneConfig
from autoprompt.experiments.tune.study import open_study, summary


def study_section(name: str, storage: str) -> tuple[str, str, dict[str, bytes]]:
    """A report section for a stored study: (title, Markdown, PNGs)."""
    import optuna  # noqa: PLC0415

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise AutopromptError(f"no study {name!r} in {storage}; check `study` and `storage`") from None
    attrs = study.user_attrs
    config = TuneConfig(task=attrs.get("task", "?"), strategy=attrs.get("strategy", "?"), n_trials=0, space={},
                        storage=storage, study=name, model=attrs.get("model", "?"), shots=attrs.get("shots"),
                        data_seeds=tuple(attrs.get("data_seeds", (13,))), seed=attrs.get("seed", 0),
                        budget=attrs.get("budget"), fixed=attrs.get("fixed", {}))
    body, images = study_figures(config)
    return f"Tuning: {name}", body, images


def study_figures(config: TuneConfig) -> tuple[str, dict[str, bytes]]:
    """Markdown and PNGs for the report: optimisation history and parameter importances."""
    import io  # noqa: PLC0415

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import optuna  # noqa: PLC0415
    import optuna.visualization.matplotlib as vis  # noqa: PLC0415

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = open_study(config)
    info = summary(config)
    images: dict[str, bytes] = {}
    lines = [f"Study `{config.study}` ({config.strategy} on {config.task}): trial states {info['states']}."]
    if "best" in info:
        best = info["best"]
        lines.append(f"Best trial #{best['number']}: dev {best['dev']:.4f}, test (recorded, not optimised) "
                     f"{best['test_mean']:.4f}; reproduce: `{best['command']}`")
    for name, plot in (("history", vis.plot_optimization_history), ("importances", vis.plot_param_importances)):
        try:
            ax = plot(study)
        except (ValueError, RuntimeError) as err:  # e.g. importances need two complete trials
            lines.append(f"({name}: {err})")
            continue
        buffer = io.BytesIO()
        figure = cast("Figure", ax.figure)  # optuna draws on a top-level figure, never a subfigure
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        file = f"tune-{name}-{''.join(c if c.isalnum() else '_' for c in config.study)}.png"
        images[file] = buffer.getvalue()
        lines.append(f"![{name} of {config.study}]({file})")
    return "\n\n".join(lines), images
