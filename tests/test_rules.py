"""Decision rules (`Rule`): channel and centroid scoring, exact against hand computations, saved with
the prompt, honoured by evaluate/predict/the API and by searches; bad combinations are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autoprompt.errors import AutopromptError
from autoprompt.prompts import Demonstration, Demonstrations, Prompt, Rule, load_prompt, save_prompt
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.scoring.rules import RuleScorer, centroid_logprobs, distances
from autoprompt.tasks.base import Example

WORDS = {"negative": ["bad"], "positive": ["good", "great"]}


def teacher_forced(lm, prefix, query) -> float:
    """log p(query | prefix), one forward of the whole sequence, no cache."""
    ids = torch.tensor([list(prefix) + list(query)])
    with torch.no_grad():
        logp = lm.model(input_ids=ids).logits[0].log_softmax(-1)
    return sum(float(logp[len(prefix) - 1 + j, tok]) for j, tok in enumerate(query))


@pytest.mark.parametrize("with_demos", [False, True])
def test_channel_equals_the_teacher_forced_likelihood_of_the_input_after_each_label(causal, task, with_demos):
    prompt = Prompt("{sentence} It was [P].", WORDS, rule="channel")
    if with_demos:
        prompt = prompt.with_demos(Demonstrations((Demonstration({"sentence": "the cat was nice"}, "positive"),
                                                   Demonstration({"sentence": "the dog was dull"}, "negative"))))
    examples = task.test[:5]
    result = Evaluator(causal, task.task).score(prompt, examples)
    for e, ex in enumerate(examples):
        enc = causal.encode_channel(prompt, ex, task.task.labels)
        text = causal.decode(enc.prefixes[1][1])
        assert text.endswith("It was great.") and causal.decode(enc.query) == " " + ex.fields["sentence"]
        if with_demos:
            assert "It was good. the cat was nice" in text and "It was bad. the dog was dull" in text
        per_word = [[teacher_forced(causal, p, enc.query) for p in per] for per in enc.prefixes]
        # a class with several words: the log of their mean likelihood; then a softmax over classes
        classes = torch.tensor([torch.logsumexp(torch.tensor(ws), 0).item() - torch.log(torch.tensor(len(ws))).item()
                                for ws in per_word], dtype=torch.double)
        assert torch.allclose(result.logprobs[e].double(), classes.log_softmax(-1), atol=1e-5)


def test_channel_reads_the_label_part_first_and_keeps_glued_punctuation_with_the_input(causal):
    prompt = Prompt("{premise} Question: {hypothesis}? Answer: [P]", {"no": ["No"], "yes": ["Yes"]}, rule="channel")
    enc = causal.encode_channel(prompt, Example({"premise": "a cat sat", "hypothesis": "a cat is here"}, 1),
                                ("no", "yes"))
    assert causal.decode(enc.prefixes[1][0]) == "Answer: Yes"
    assert causal.decode(enc.query) == " a cat sat Question: a cat is here?"
    newline = Prompt("Review: {sentence}\nSentiment: [P]", WORDS, rule="channel")
    enc = causal.encode_channel(newline, Example({"sentence": "fine"}, 1), ("negative", "positive"))
    assert causal.decode(enc.prefixes[0][0]) == "Sentiment: bad" and causal.decode(enc.query) == "\nReview: fine"


def test_a_fitted_channel_rule_divides_the_class_scores_by_its_temperature(causal, task):
    from autoprompt.scoring.rules import fit_temperature  # noqa: PLC0415

    ev = Evaluator(causal, task.task)
    raw = Prompt("{sentence} It was [P]", {"negative": ["bad"], "positive": ["good"]}, rule="channel")
    fitted = ev.fit_rule([raw.with_rule("direct")], "channel", task.train)[0]
    scores, _ = ev.rules.channel_scores(raw, task.train, None)
    labels = torch.tensor([ex.label for ex in task.train])
    assert fitted.rule.scale == pytest.approx(fit_temperature(scores.double(), labels)) and fitted.rule.fitted
    a, b = ev.score(raw, task.test), ev.score(fitted, task.test)
    assert torch.allclose(b.logprobs, (a.logprobs * 1.0 / fitted.rule.scale).log_softmax(-1), atol=1e-4)
    assert a.preds.tolist() == b.preds.tolist()  # a temperature never changes a prediction


def test_channel_length_norm_divides_by_the_input_tokens(causal, task):
    plain = Prompt("{sentence} It was [P]", {"negative": ["bad"], "positive": ["good"]}, rule="channel")
    normed = plain.with_rule(Rule("channel", length_norm=True))
    ev = Evaluator(causal, task.task)
    a, b = ev.score(plain, task.test[:4]), ev.score(normed, task.test[:4])
    for e, ex in enumerate(task.test[:4]):
        n = len(causal.encode_channel(plain, ex, task.task.labels).query)
        margin_a = a.logprobs[e, 1] - a.logprobs[e, 0]
        assert float(b.logprobs[e, 1] - b.logprobs[e, 0]) == pytest.approx(float(margin_a) / n, abs=1e-5)


def test_centroid_equals_a_hand_computed_nearest_centroid_on_planted_states():
    rule = Rule("centroid", distance="euclidean", normalise=False, standardise=False,
                centroids={"a": (0.0, 0.0), "b": (4.0, 0.0), "c": (0.0, 4.0)}, scale=2.0)
    hidden = torch.tensor([[0.5, 0.2], [3.9, 1.0], [0.1, 3.0], [2.1, 0.0]])
    logprobs = centroid_logprobs(rule, hidden, ("a", "b", "c"))
    cents = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    hand = torch.stack([-((hidden - c) ** 2).sum(-1).sqrt() / 2.0 for c in cents], dim=1).log_softmax(-1)
    assert torch.allclose(logprobs, hand, atol=1e-6) and logprobs.argmax(-1).tolist() == [0, 1, 2, 1]
    cosine = Rule("centroid", distance="cosine", standardise=False, centroids={"a": (1.0, 0.0), "b": (0.0, 1.0)},
                  scale=1.0)
    assert centroid_logprobs(cosine, torch.tensor([[3.0, 1.0], [1.0, 2.0]]), ("a", "b")).argmax(-1).tolist() == [0, 1]
    # an exact tie goes to the class the direct scores prefer
    tied = centroid_logprobs(cosine, torch.tensor([[1.0, 1.0]]), ("a", "b"), torch.tensor([[-2.0, -0.1]]))
    assert tied.argmax(-1).item() == 1


def test_centroids_are_the_class_means_of_the_hidden_state_at_the_slot(causal, task):
    prompt = Prompt("{sentence} It was [P]", {"negative": ["bad"], "positive": ["good"]})
    ev = Evaluator(causal, task.task)
    fitted = ev.fit_rule([prompt], Rule("centroid", distance="cosine", standardise=False), task.train)[0]
    assert isinstance(fitted, Prompt) and fitted.rule.fitted and fitted.fingerprint != prompt.fingerprint
    hidden = causal.head_features([causal.encode(prompt, ex) for ex in task.train]).detach()
    unit = torch.nn.functional.normalize(hidden, dim=-1)
    labels = torch.tensor([ex.label for ex in task.train])
    for y, label in enumerate(task.task.labels):
        assert torch.allclose(torch.tensor(fitted.rule.centroids[label]), unit[labels == y].mean(0), atol=1e-5)
    cents = torch.stack([unit[labels == y].mean(0) for y in range(2)])
    # the temperature maximises the labels' likelihood on leave-one-out distances (own centroid without the example)
    loo = distances(unit.double(), cents.double(), "cosine")
    for i, y in enumerate(labels.tolist()):
        others = unit[(labels == y) & (torch.arange(len(labels)) != i)].mean(0)
        loo[i, y] = distances(unit[i : i + 1].double(), others[None].double(), "cosine")[0, 0]

    smooth = 1 / (len(labels) + 2)  # Laplace-smoothed targets, two classes

    def likelihood(t: float) -> float:
        logp = (-loo / t).log_softmax(-1)
        gold = logp[torch.arange(len(labels)), labels]
        return float(((1 - smooth) * gold + smooth * (logp.sum(-1) - gold)).mean())

    best = fitted.rule.scale
    assert likelihood(best) >= max(likelihood(best * 1.5), likelihood(best / 1.5)) - 1e-9
    test_hidden = causal.head_features([causal.encode(prompt, ex) for ex in task.test]).detach()
    nearest = distances(torch.nn.functional.normalize(test_hidden, dim=-1), cents, "cosine").argmin(-1)
    assert ev.score(fitted, task.test).preds.tolist() == nearest.tolist()


def test_standardised_centroids_measure_in_units_of_the_pooled_within_class_deviation(causal, task):
    prompt = Prompt("{sentence} It was [P]", {"negative": ["bad"], "positive": ["good"]})
    ev = Evaluator(causal, task.task)
    fitted = ev.fit_rule([prompt], "centroid", task.train)[0]
    rule = fitted.rule
    assert rule.distance == "euclidean" and rule.normalise and rule.standardise
    unit = torch.nn.functional.normalize(causal.head_features([causal.encode(prompt, ex) for ex in task.train]),
                                         dim=-1).double()
    labels = torch.tensor([ex.label for ex in task.train])
    within = torch.cat([unit[labels == y] - unit[labels == y].mean(0) for y in range(2)])
    sd = within.pow(2).mean(0).sqrt()
    z = (unit - unit.mean(0)) / sd
    assert torch.allclose(torch.tensor(rule.spread, dtype=torch.double), sd, rtol=1e-6)
    for y, label in enumerate(task.task.labels):
        assert torch.allclose(torch.tensor(rule.centroids[label], dtype=torch.double), z[labels == y].mean(0),
                              atol=1e-6)
    test = torch.nn.functional.normalize(causal.head_features([causal.encode(prompt, ex) for ex in task.test]),
                                         dim=-1).double()
    cents = torch.stack([z[labels == y].mean(0) for y in range(2)])
    nearest = torch.cdist((test - unit.mean(0)) / sd, cents).argmin(-1)
    assert ev.score(fitted, task.test).preds.tolist() == nearest.tolist()


def test_centroid_composes_with_demonstrations_and_works_on_a_masked_lm(causal, masked, task):
    shot = Prompt("{sentence} It was [P]", {"negative": ["bad"], "positive": ["good"]},
                  demos=Demonstrations((Demonstration({"sentence": "the cat was nice"}, "positive"),)))
    a = Evaluator(causal, task.task).fit_rule([shot], "centroid", task.train)[0]
    b = Evaluator(causal, task.task).fit_rule([shot.with_demos(None)], "centroid", task.train)[0]
    assert a.rule.centroids != b.rule.centroids
    m = Evaluator(masked, task.task).fit_rule([task.task.default_prompt], "centroid", task.train)[0]
    assert Evaluator(masked, task.task).score(m, task.test).n == len(task.test)


@pytest.mark.parametrize("rule", ["channel", "centroid"])
def test_a_saved_prompt_with_a_rule_predicts_the_same_through_evaluate_predict_and_the_api(causal, task, tmp_path,
                                                                                           rule):
    from autoprompt.api import predict  # noqa: PLC0415

    ev = Evaluator(causal, task.task)
    prompt = ev.calibrate(ev.fit_rule([task.task.default_prompt], rule, task.train), "prior", task.train)[0]
    path = tmp_path / "prompt.json"
    save_prompt(prompt, path)
    back = load_prompt(path)
    assert back == prompt and back.fingerprint == prompt.fingerprint and json.loads(path.read_text())["rule"]["name"]
    rows = tmp_path / "new.jsonl"
    rows.write_text("\n".join(json.dumps({"sentence": ex.fields["sentence"]}) for ex in task.test[:6]))
    expected = Evaluator(causal, task.task, cache=False).score(back, task.test[:6])
    out = predict(path, rows, model=causal)
    assert [r["label"] for r in out] == [task.task.labels[i] for i in expected.preds.tolist()]
    probs = expected.logprobs.softmax(-1)
    assert [r["probs"][task.task.labels[1]] for r in out] == pytest.approx(probs[:, 1].tolist(), abs=1e-5)


def test_a_direct_prompt_keeps_its_json_and_fingerprint(task):
    prompt = task.task.default_prompt
    assert "rule" not in prompt.to_json() and prompt.with_rule("direct").fingerprint == prompt.fingerprint
    assert Prompt.from_json({**prompt.to_json(), "rule": "channel"}).rule.name == "channel"


def test_bad_rules_are_one_line_errors(causal, masked, task):
    prompt = task.task.default_prompt
    with pytest.raises(AutopromptError, match=r"needs a causal LM.*use rule direct or centroid"):
        Evaluator(masked, task.task).fit_rule([prompt], "channel")
    with pytest.raises(AutopromptError, match="unknown decision rule 'nearest'"):
        prompt.with_rule("nearest")
    with pytest.raises(AutopromptError, match="no centroids; fit them"):
        Evaluator(causal, task.task).score(prompt.with_rule("centroid"), task.test)
    with pytest.raises(AutopromptError, match="needs at least one labelled example of every class"):
        Evaluator(causal, task.task).fit_rule([prompt], "centroid", [ex for ex in task.train if ex.label == 0])
    with pytest.raises(AutopromptError, match=r"prompt file x: field 'rule\.scale"):
        Prompt.from_json({**prompt.to_json(), "rule": {"name": "centroid", "scale": "big"}}, "prompt file x")
    wrong = Rule("centroid", standardise=False, centroids={"negative": (1.0, 0.0), "positive": (0.0, 1.0)}, scale=1.0)
    with pytest.raises(AutopromptError, match=r"width 2 but .* have 32; fit them on this model"):
        Evaluator(causal, task.task).score(prompt.with_rule(wrong), task.test)
    with pytest.raises(AutopromptError, match="one finite centroid"):
        Rule("centroid", centroids={"a": (float("nan"),)}, scale=1.0)
    with pytest.raises(AutopromptError, match="needs 1 finite spread values"):
        Rule("centroid", centroids={"a": (1.0,)}, scale=1.0, center=(0.0,), spread=(0.0,))


def test_channel_budget_counts_one_forward_per_label_word(causal, task):
    from autoprompt.scoring.budget import Budget  # noqa: PLC0415

    budget = Budget(10_000)
    prompt = Prompt("{sentence} It was [P]", WORDS, rule="channel")
    Evaluator(causal, task.task, budget=budget).score(prompt, task.dev)
    assert budget.forwards == 3 * len(task.dev)
    assert RuleScorer(causal, task.task, 32, 8192, __import__("collections").Counter()).forwards(prompt) == 3


@pytest.mark.parametrize(("strategy", "params", "rule"), [
    ("gradient", {"num_candidates": 3, "batch_size": 6, "rescore_examples": 8}, "centroid"),
    ("verbalizer", {}, "channel"),
    ("manual", {}, "centroid"),
])
def test_a_search_reads_every_candidate_by_its_rule_and_reports_it(causal, task, tmp_path, strategy, params, rule):
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    spec = SearchSpec(task="tiny", strategy=strategy, params={**params, "rule": rule, "gate": False}, budget=1500,
                      out=str(tmp_path))
    result = run_search(spec, lm=causal, data=task)
    found = load_prompt(Path(result.run_dir) / "prompt.json")
    assert isinstance(found, Prompt) and found.rule.name == rule and found.rule.fitted
    # the reported test score is the saved prompt's, read by its rule
    assert Evaluator(causal, task.task).score(found, task.test).score == pytest.approx(result.scores.test)
    assert result.variant.count(f"rule={rule}") == 1
    from autoprompt.results.leaderboard import row_from_result  # noqa: PLC0415

    assert row_from_result(result)["rule"] == rule


def test_a_warm_start_keeps_its_rule_unless_the_search_names_one(causal, task, tmp_path):
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    ev = Evaluator(causal, task.task)
    start = ev.fit_rule([task.task.default_prompt], "channel")[0]
    save_prompt(start, tmp_path / "start.json")
    spec = SearchSpec(task="tiny", strategy="verbalizer", params={"gate": False}, budget=1500,
                      out=str(tmp_path / "runs"), start=str(tmp_path / "start.json"))
    kept = load_prompt(Path(run_search(spec, lm=causal, data=task).run_dir) / "prompt.json")
    assert kept.rule.name == "channel"
    spec = SearchSpec(task="tiny", strategy="verbalizer", params={"gate": False, "rule": "direct"}, budget=1500,
                      out=str(tmp_path / "runs"), start=str(tmp_path / "start.json"))
    assert load_prompt(Path(run_search(spec, lm=causal, data=task).run_dir) / "prompt.json").rule.name == "direct"


def test_a_rule_a_search_cannot_use_is_refused_before_any_work(causal, masked, task, tmp_path):
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    with pytest.raises(AutopromptError, match="ptuning trains a soft prompt and rule 'channel' reads discrete"):
        run_search(SearchSpec(task="tiny", strategy="ptuning", params={"rule": "channel"}, budget=1500,
                              out=str(tmp_path)), lm=causal, data=task)
    with pytest.raises(AutopromptError, match="needs a causal LM"):
        run_search(SearchSpec(task="tiny", strategy="manual", params={"rule": "channel"}, budget=1500,
                              out=str(tmp_path)), lm=masked, data=task)
    with pytest.raises(AutopromptError, match=r"rule='nearest' is not a valid direct\|channel\|centroid"):
        run_search(SearchSpec(task="tiny", strategy="manual", params={"rule": "nearest"}, budget=1500,
                              out=str(tmp_path)), lm=causal, data=task)
    assert not any(tmp_path.iterdir())


def test_the_rule_strategy_cross_fits_each_rule_and_reports_the_best_fitted_on_all_of_train(causal, masked, task,
                                                                                            tmp_path):
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    result = run_search(SearchSpec(task="tiny", strategy="rule", params={"gate": False}, budget=3000,
                                   out=str(tmp_path)), lm=causal, data=task)
    ranked = result.details["rules"]
    assert {(r["rule"], r["calibration"]) for r in ranked} == {(r, c) for r in ("direct", "channel", "centroid")
                                                              for c in ("none", "prior")}
    assert all(len(r["folds"]) == 2 for r in ranked)
    assert ranked == sorted(ranked, key=lambda r: -r["cross_fitted_objective"])
    found = load_prompt(Path(result.run_dir) / "prompt.json")
    assert found.rule.name == ranked[0]["rule"] and found.rule.fitted
    pair = next(r for r in ranked if (r["rule"], r["calibration"]) == (found.rule.name, found.calibration.method))
    assert pair["cross_fitted_objective"] == pytest.approx(ranked[0]["cross_fitted_objective"], abs=1e-5)  # or a tie
    if found.rule.name == "centroid":  # fitted on all of train, not on one half
        again = Evaluator(causal, task.task).fit_rule([found.with_rule("direct")], found.rule, task.train)[0]
        assert again.rule.centroids == found.rule.centroids
    on_masked = run_search(SearchSpec(task="tiny", strategy="rule", params={"gate": False}, budget=3000,
                                      out=str(tmp_path)), lm=masked, data=task)
    assert {r["rule"] for r in on_masked.details["rules"]} == {"direct", "centroid"}


def test_rules_are_for_classification(causal):
    from autoprompt.testing.tiny import tiny_generation_task  # noqa: PLC0415

    data = tiny_generation_task()
    with pytest.raises(AutopromptError, match="generation task's outputs are decoded: use rule direct"):
        Evaluator(causal, data.task).score(data.task.default_prompt.with_rule("channel"), data.test[:2])


def test_evaluate_rule_on_the_command_line(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner  # noqa: PLC0415

    from autoprompt.cli import app  # noqa: PLC0415
    from autoprompt.testing.tiny import toy_task_file  # noqa: PLC0415

    spec = toy_task_file(tmp_path)
    runner = CliRunner()
    out = runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir), "--rule", "centroid",
                              "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output[out.output.index("{"):])
    assert result["rule"]["name"] == "centroid" and "centroids" not in result["rule"]
    shown = runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir), "--rule", "channel"])
    assert shown.exit_code == 0 and "rule: channel" in shown.output
    bad = runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir), "--rule", "nearest"])
    assert bad.exit_code == 2 and "unknown decision rule 'nearest'" in bad.output and "Traceback" not in bad.output


def test_channel_word_logliks_are_each_words_teacher_forced_likelihood(causal, task):
    from autoprompt.scoring.budget import Budget  # noqa: PLC0415

    prompt = Prompt("{sentence} It was [P].", WORDS)  # a direct prompt: read by the channel rule here
    budget = Budget(10_000)
    examples = task.test[:4]
    raw = Evaluator(causal, task.task, budget=budget).channel_word_logliks(prompt, examples)
    assert raw.shape == (4, 3) and budget.forwards == 3 * 4
    for e, ex in enumerate(examples):
        enc = causal.encode_channel(prompt.with_rule("channel"), ex, task.task.labels)
        hand = [teacher_forced(causal, p, enc.query) for per in enc.prefixes for p in per]  # bad, good, great
        assert torch.allclose(raw[e].double(), torch.tensor(hand, dtype=torch.double), atol=1e-5)


def test_the_verbalizer_search_under_channel_ranks_words_by_how_they_read_before_their_class(causal, task,
                                                                                             tmp_path):
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    spec = SearchSpec(task="tiny", strategy="verbalizer", params={"rule": "channel", "k": 3, "gate": False},
                      budget=3000, out=str(tmp_path))
    result = run_search(spec, lm=causal, data=task)
    trace = [json.loads(line) for line in (Path(result.run_dir) / "trace.jsonl").read_text().splitlines()]
    ranked = next(t["ranked"] for t in trace if t.get("phase") == "rank")
    manual = task.task.default_prompt
    examples, labels = task.train, torch.tensor([ex.label for ex in task.train])
    shortlist = list(dict.fromkeys(w for row in ranked for w in row))

    def loglik(word: str, ex: Example) -> float:  # the input after the word's label prefix, by hand
        others = [w for w in ("zebra", "quartz") if w != word]
        single = Prompt(manual.template, dict(zip(task.task.labels, [[word], [others[0]]], strict=True)),
                        rule="channel")
        enc = causal.encode_channel(single, ex, task.task.labels)
        return teacher_forced(causal, enc.prefixes[0][0], enc.query)

    raw = torch.tensor([[loglik(w, ex) for w in shortlist] for ex in examples], dtype=torch.double)
    centred = raw - raw.mean(1, keepdim=True)
    means = torch.stack([centred[labels == c].mean(0) for c in range(2)])
    contrast = means - means.flip(0)                                  # the class's mean minus the other class's
    for c, row in enumerate(ranked):
        values = [float(contrast[c, shortlist.index(w)]) for w in row]
        assert values == sorted(values, reverse=True), (row, values)
