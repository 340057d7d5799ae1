"""Every built-in task loads from the real data folder with the documented row counts and labels."""

from __future__ import annotations

import pytest
import torch

from autoprompt import AutopromptError, load_task
from autoprompt.scoring import text_metrics
from autoprompt.scoring.scores import EvalResult
from autoprompt.tasks import BUILTIN, lama_relations
from autoprompt.tasks.base import Task
from autoprompt.tasks.kinds import KINDS, Ranking

# task, shots -> (train, dev, test) rows; None = the split does not exist locally
EXPECTED = {
    ("sst2", None): (66349, 1000, 872), ("sst2", 16): (32, 32, 872),
    ("sst5", None): (8544, 1101, 2210), ("sst5", 16): (80, 80, 2210),
    ("mr", None): (7866, 874, 2000), ("mr", 16): (32, 32, 2000),
    ("cr", None): (1598, 177, 2000), ("cr", 16): (32, 32, 2000),
    ("mpqa", None): (6795, 755, 2000), ("mpqa", 16): (32, 32, 2000),
    ("subj", None): (7246, 805, 2000), ("subj", 16): (32, 32, 2000),
    ("trec", None): (4907, 545, 500), ("trec", 16): (96, 96, 500),
    ("rte", None): (2241, 249, 277), ("rte", 16): (32, 32, 277), ("rte", 32): (32, 32, 277),
    ("cb", None): (225, 25, 56), ("cb", 32): (32, 32, 56),
    ("boolq", None): (32, 32, 3270), ("boolq", 32): (32, 32, 3270),
    ("mrpc", None): (3302, 366, 408), ("mrpc", 16): (32, 32, 408),
    ("qnli", None): (None, None, 5463), ("qnli", 16): (32, 32, 5463),
    ("mnli", 16): (48, 48, None), ("qqp", 16): (32, 32, None),
    ("agnews", None): (None, None, 7600), ("agnews", 16): (64, 64, 7600),
}


@pytest.mark.parametrize(("name", "shots"), sorted(EXPECTED, key=str))
def test_builtin_rows_and_labels(name, shots, data_dir):
    data = load_task(name, data_dir, shots=shots, data_seed=13)
    for split, expected in zip(("train", "dev", "test"), EXPECTED[(name, shots)]):
        if expected is None:
            with pytest.raises(AutopromptError, match=r"not available|no full training|no training"):
                data.split(split)
            continue
        examples = data.split(split)
        assert len(examples) == expected, split
        assert {e.label for e in examples} <= set(range(len(data.task.labels)))
        assert all(set(e.fields) == set(data.task.fields) for e in examples)
        # real data: CR holds a few empty reviews (custrev.all has 4), MPQA three empty phrases, nothing else
        assert sum(not v for e in examples for v in e.fields.values()) <= {"cr": 4, "mpqa": 3}.get(name, 0)
    if shots == 16:  # LM-BFF k-shot: 16 per class in train and dev
        counts = [sum(e.label == c for e in data.train) for c in range(len(data.task.labels))]
        assert counts == [16] * len(data.task.labels)


def test_every_builtin_is_covered():
    assert {name for name, _ in EXPECTED} == set(BUILTIN)


def test_label_sets_match_official_counts(data_dir):
    test = load_task("sst2", data_dir).test
    assert sum(e.label for e in test) == 444  # GLUE dev: 428 negative / 444 positive
    cb = load_task("cb", data_dir).test
    assert [sum(e.label == c for e in cb) for c in range(3)] == [23, 28, 5]
    trec = load_task("trec", data_dir).test
    assert [sum(e.label == c for e in trec) for c in range(6)] == [138, 94, 9, 65, 81, 113]


def test_glue_quotes_are_literal(data_dir):
    # RTE has rows starting with '"': QUOTE_NONE must keep them intact (2,490 train rows in all)
    data = load_task("rte", data_dir)
    assert len(data.train) + len(data.dev) == 2490
    assert any(e.fields["premise"].startswith('"') for e in data.train + data.dev)


def test_dev_slice_is_seeded(data_dir):
    a = load_task("rte", data_dir, data_seed=1).dev
    b = load_task("rte", data_dir, data_seed=1).dev
    c = load_task("rte", data_dir, data_seed=2).dev
    assert a == b and a != c


def test_kshot_seeds_differ_and_bad_seed(data_dir):
    assert load_task("sst2", data_dir, 16, 13).train != load_task("sst2", data_dir, 16, 21).train
    with pytest.raises(AutopromptError, match="no LM-BFF split"):
        load_task("sst2", data_dir, 16, 7).train  # noqa: B018
    with pytest.raises(AutopromptError, match="not available for cb"):
        load_task("cb", data_dir, 16)


def test_lama_relation(data_dir):
    assert len(lama_relations(data_dir)) == 41
    data = load_task("lama:P19", data_dir)
    assert (len(data.train), len(data.dev), len(data.test)) == (800, 200, 944)
    assert len(data.task.labels) == 899 and data.task.metric == "lama" and data.task.kind == "ranking"
    assert data.task.template == "{subject} was born in [P]"
    assert load_task("lama:P37", data_dir).protocol["sources"]["test"].endswith("pararel_trex_lms_vocab/P37.jsonl")
    assert load_task("lama:P27", data_dir).task.template.endswith("[P]")
    with pytest.raises(AutopromptError, match="unknown LAMA relation"):
        load_task("lama:P99999", data_dir)


def test_unknown_task_and_missing_dir(tmp_path):
    with pytest.raises(AutopromptError, match="unknown task 'nope'"):
        load_task("nope", tmp_path)
    with pytest.raises(AutopromptError, match="AUTOPROMPT_DATA_DIR"):
        load_task("sst2", tmp_path / "missing")
    with pytest.raises(AutopromptError, match=r"data file .* is missing"):
        load_task("sst2", tmp_path).test  # noqa: B018


def test_offline_hub_error_names_env(monkeypatch):
    monkeypatch.delenv("AUTOPROMPT_DATA_DIR", raising=False)
    with pytest.raises(AutopromptError, match="AUTOPROMPT_DATA_DIR"):
        load_task("sst2")
    with pytest.raises(AutopromptError, match="AUTOPROMPT_DATA_DIR"):
        load_task("trec")


def test_custom_task_toml(tmp_path):
    (tmp_path / "train.csv").write_text("review,label\ngreat film,pos\nawful film,neg\nfine,pos\nbad,neg\n")
    (tmp_path / "test.jsonl").write_text('{"review": "lovely", "label": "pos"}\n{"review": "dull", "label": "neg"}\n')
    spec = tmp_path / "task.toml"
    spec.write_text(
        'name = "reviews"\nfields = {text = "review"}\nlabel_column = "label"\nlabels = ["neg", "pos"]\n'
        'template = "{text} It was [P]"\n[files]\ntrain = "train.csv"\ntest = "test.jsonl"\n'
        '[verbalizer]\nneg = ["bad"]\npos = ["good"]\n'
    )
    data = load_task(str(spec))
    assert data.task.name == "reviews" and data.task.fields == ("text",)
    assert len(data.train) + len(data.dev) == 4
    assert [e.label for e in data.test] == [1, 0]
    (tmp_path / "empty.csv").write_text("review,label\n")
    spec.write_text(spec.read_text().replace('test = "test.jsonl"', 'test = "empty.csv"'))
    with pytest.raises(AutopromptError, match="split 'test' of task reviews is empty"):
        load_task(str(spec)).test  # noqa: B018
    spec.write_text(spec.read_text().replace("{text} It was [P]", "{review} It was [P]"))
    with pytest.raises(AutopromptError, match="unknown field"):
        load_task(str(spec))


def _task_toml(folder, files: str, extra: str = "", fields: str = '["sentence"]', labels: str = '["0", "1"]') -> object:
    spec = folder / "task.toml"
    spec.write_text(f'fields = {fields}\nlabel_column = "label"\nlabels = {labels}\n'
                    f'template = "{{sentence}} It was [P]"\n{extra}[files]\n{files}\n'
                    '[verbalizer]\n"0" = ["bad"]\n"1" = ["good"]\n')
    return spec


def test_custom_readers_on_the_real_files(data_dir, tmp_path):
    """Headerless CSV with named columns (LM-BFF's files), <label> <text> lines (MPQA), JSONL."""
    lmbff = data_dir / "lm-bff-16shot" / "mpqa" / "16-13"
    csv = load_task(_task_toml(tmp_path, f'train = "{lmbff}/train.csv"\ntest = "{lmbff}/test.csv"',
                               'columns = ["label", "sentence"]\ndata_outside = true\n'))
    builtin = load_task("mpqa", data_dir, shots=16, data_seed=13)
    assert [(e.fields, e.label) for e in csv.test] == [(e.fields, e.label) for e in builtin.test]
    lines = load_task(_task_toml(tmp_path, f'test = "{data_dir}/mpqa/mpqa.all"',
                                 'format = "label-first"\ndata_outside = true\n',
                                 fields='{sentence = "text"}'))
    assert len(lines.test) == 10606 and sum(e.label for e in lines.test) == 3312  # the README's counts
    (tmp_path / "t.jsonl").write_text('{"sentence": "fine", "label": 1}\n{"sentence": "awful", "label": 0}\n')
    jsonl = load_task(_task_toml(tmp_path, 'test = "t.jsonl"'))
    assert [(e.fields["sentence"], e.label) for e in jsonl.test] == [("fine", 1), ("awful", 0)]


def test_k_shot_sampling_from_a_custom_task_is_class_balanced_and_seeded(data_dir, tmp_path):
    spec = _task_toml(tmp_path, f'train = "{data_dir}/subj/subj.all"\ntest = "{data_dir}/subj/subj.all"',
                      'format = "label-first"\ndata_outside = true\n', fields='{sentence = "text"}')
    a, again, other = (load_task(spec, shots=8, data_seed=s) for s in (13, 13, 21))
    assert [sum(e.label == c for e in a.train) for c in (0, 1)] == [8, 8]
    assert [sum(e.label == c for e in a.dev) for c in (0, 1)] == [8, 8]
    assert not {e.fields["sentence"] for e in a.train} & {e.fields["sentence"] for e in a.dev}
    assert a.train == again.train and a.train != other.train
    assert a.protocol["shots"] == 8
    with pytest.raises(AutopromptError, match="20000 examples of every class"):
        _ = load_task(spec, shots=10000).train


def test_limit_is_a_stratified_seeded_sample():
    from autoprompt.tasks.base import Example, stratified_sample  # noqa: PLC0415

    sorted_by_label = [Example({"s": str(i)}, int(i >= 70)) for i in range(100)]  # 70 of class 0, then 30
    sample = stratified_sample(sorted_by_label, 10)
    assert [e.label for e in sample].count(1) == 3 and len(sample) == 10
    assert sample == stratified_sample(sorted_by_label, 10) != stratified_sample(sorted_by_label, 10, seed=1)


def test_a_model_with_its_own_train_choice_gets_its_manual_prompt(data_dir):
    default = load_task("sst2", data_dir)
    gemma = load_task("sst2", data_dir, model="gemma3-270m")
    assert "Is this review positive or negative?" in gemma.task.template != default.task.template
    assert gemma.protocol["manual_prompt"] == "chosen on train for gemma3-270m"
    assert load_task("sst2", data_dir, model="smollm2-135m").task == default.task
    assert "manual_prompt" not in default.protocol
    assert load_task("rte", data_dir, model="gemma3-270m").task == load_task("rte", data_dir).task  # same choice


# ---- task kinds ---------------------------------------------------------------------------------

def _task(metric="accuracy", kind="", labels=("no", "yes")):
    return Task("t", ("x",), labels, "{x} [P]", {label: [label] for label in labels}, metric, kind=kind)


def test_a_task_takes_the_kind_of_its_metric_and_refuses_a_metric_of_another_kind():
    assert _task().kind == "classification" and _task("macro_f1").kind_spec is KINDS["classification"]
    assert _task("lama").kind == "ranking" and isinstance(_task("lama").kind_spec, Ranking)
    generation = Task("g", ("mr",), (), "{mr} [P]", {}, "bleu")
    assert generation.kind == "generation" and generation.is_generation
    with pytest.raises(AutopromptError, match=r"^task t: a ranking task cannot use metric 'accuracy'; ranking tasks "
                                              r"use lama$"):
        _task("accuracy", kind="ranking")
    with pytest.raises(AutopromptError, match=r"^task t: unknown kind 'regression'; use one of classification, "
                                              r"ranking, generation$"):
        _task(kind="regression")
    with pytest.raises(AutopromptError, match=r"^task t: unknown metric 'auc'; use one of accuracy, f1, macro_f1, "
                                              r"lama, bleu$"):
        _task("auc")
    with pytest.raises(AutopromptError, match="a generation task has no labels or label words"):
        _task("bleu")


def test_each_kind_reads_its_own_statistic_and_result_fields():
    # class log-probs [4, 3]: the argmax is class 0, 1, 2, 2; the gold labels 0, 1, 1, 2
    logprobs = torch.tensor([[0.0, -1, -2], [-1, 0.0, -2], [-3, -1, 0.0], [-2, -1, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    classification = EvalResult("accuracy", 0.75, logprobs, labels)
    rows = torch.tensor([0, 2, 2])
    assert KINDS["classification"].statistic(classification, rows) == pytest.approx(1 / 3)  # right, wrong, wrong
    fields = KINDS["classification"].result_fields(classification, ("a", "b", "c"))
    assert fields == {"per_class": {"a": {"gold": 1, "predicted": 1, "correct": 1},
                                    "b": {"gold": 2, "predicted": 1, "correct": 1},
                                    "c": {"gold": 1, "predicted": 2, "correct": 1}}}
    assert KINDS["classification"].search_fields(classification, classification) == {}

    ranked = EvalResult("lama", 0.75, logprobs, labels, extra={"p@10": 1.0, "mrr": 0.875})
    assert KINDS["ranking"].statistic(ranked, rows) == pytest.approx(1 / 3)  # P@1 on the resampled rows
    assert KINDS["ranking"].result_fields(ranked, ("a", "b", "c")) == {"lama": {"p@10": 1.0, "mrr": 0.875},
                                                                       "per_class": None}
    assert KINDS["ranking"].search_fields(ranked, ranked)["lama"]["found"] == {"p@10": 1.0, "mrr": 0.875}
    assert KINDS["ranking"].metric("lama").ranks_gold and not KINDS["ranking"].metric("lama").calibratable

    # generation: corpus BLEU of the resampled outputs, from their summed statistics (not a mean of sentences)
    outputs, refs = ["the cat sat on the mat", "a dog ran far away"], [["the cat sat on the mat"], ["no match"]]
    stats = text_metrics.bleu_stats(outputs, refs)
    generated = EvalResult("bleu", 0.0, torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), bleu_stats=stats)
    both = torch.tensor([0, 1])
    assert KINDS["generation"].statistic(generated, both) == pytest.approx(text_metrics.corpus_bleu(outputs, refs))
    assert KINDS["generation"].statistic(generated, torch.tensor([0, 0])) == pytest.approx(100.0)
    assert KINDS["generation"].result_fields(generated, ()) == {"per_class": None}
