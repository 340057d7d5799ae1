"""Loading built-in tasks from the Hugging Face dataset hub (used when no local data folder is set)."""

from __future__ import annotations

from autoprompt.errors import AutopromptError
from autoprompt.tasks.base import Example, TaskData, carve_dev, unavailable
from autoprompt.tasks.builtin import BUILTIN

# task -> (dataset id, config, field -> column, label column, test split)
_HUB = {
    "sst2": ("nyu-mll/glue", "sst2", {"sentence": "sentence"}, "label", "validation"),
    "rte": ("nyu-mll/glue", "rte", {"premise": "sentence1", "hypothesis": "sentence2"}, "label", "validation"),
    "mrpc": ("nyu-mll/glue", "mrpc", {"sentence1": "sentence1", "sentence2": "sentence2"}, "label", "validation"),
    "qnli": ("nyu-mll/glue", "qnli", {"question": "question", "sentence": "sentence"}, "label", "validation"),
    "qqp": ("nyu-mll/glue", "qqp", {"question1": "question1", "question2": "question2"}, "label", "validation"),
    "cb": ("aps/super_glue", "cb", {"premise": "premise", "hypothesis": "hypothesis"}, "label", "validation"),
    "boolq": ("aps/super_glue", "boolq", {"passage": "passage", "question": "question"}, "label", "validation"),
}
_OFFLINE = "set AUTOPROMPT_DATA_DIR (or `data_dir`) to the local data folder"


def load_from_hub(name: str, shots: int | None, data_seed: int) -> TaskData:
    """Load the full protocol of a GLUE/SuperGLUE task through ``datasets``.

    Class indices follow the hub's label ids, which match this package's label order for the
    tasks listed in ``_HUB`` except MNLI (not offered here).
    """
    if name not in _HUB or shots is not None:
        raise AutopromptError(f"no local data for {name!r} and the hub offers only the full protocol of "
                              f"{', '.join(_HUB)}; {_OFFLINE}")
    try:
        import datasets  # noqa: PLC0415 - optional dependency, imported only when used
    except ImportError:
        raise AutopromptError(f"no local data folder and `datasets` is not installed; {_OFFLINE}") from None
    repo, config, columns, label_column, test_split = _HUB[name]
    try:
        dataset = datasets.load_dataset(repo, config)
    except Exception as err:
        raise AutopromptError(f"cannot load {repo}/{config} from the hub ({type(err).__name__}); {_OFFLINE}") from None

    def convert(split: str) -> list[Example]:
        return [Example({f: str(row[c]) for f, c in columns.items()}, int(row[label_column]))
                for row in dataset[split]]

    train, dev = carve_dev(convert("train"), data_seed)
    loaders = {"train": lambda: train, "dev": lambda: dev, "test": lambda: convert(test_split)}
    if not train:
        loaders["train"] = unavailable(f"the hub's {name} train split is empty")
    protocol = {"shots": None, "data_seed": data_seed, "sources": {"hub": f"{repo}/{config}"}}
    return TaskData(BUILTIN[name].task, protocol, loaders)
