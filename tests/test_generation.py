"""Generation tasks: the E2E protocol, teacher-forced scoring, decoding, metrics, training and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from autoprompt import AutopromptError, Evaluator, Prompt
from autoprompt.backends import Encoded, weights_checksum
from autoprompt.backends.decoding import Decoding, generate_ids, stop_tokens, target_logprobs
from autoprompt.cli import app
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.scoring.generation import target_context
from autoprompt.scoring.scores import EvalResult
from autoprompt.scoring.text_metrics import bleu_from_stats, bleu_stats, corpus_bleu, rouge_l
from autoprompt.search import SearchSpec, create, run_search
from autoprompt.search.selection import bootstrap_delta, objective_values
from autoprompt.tasks import load_task
from autoprompt.testing import tiny_generation_task
from autoprompt.testing.conformance import check_minimum_budget, check_strategy

runner = CliRunner()
FAST = {"steps": 4, "eval_every": 2, "batch_size": 4}


@pytest.fixture(scope="module")
def gen():
    return tiny_generation_task()


def _prefix(lm, text="the movie was fine"):
    return SoftPrompt(prefix=lm.prefix_from_text(lm.tokenize(text)))


def _by_hand(lm, before, prompt, target):
    """Teacher-forced log-prob of ``target`` after ``before + prompt``: one plain forward of the whole row."""
    ids = torch.tensor([[*before, *prompt, *target]])
    with torch.no_grad():
        logp = lm.model(ids).logits[0].log_softmax(-1)
    start = len(before) + len(prompt)
    return float(sum(logp[start - 1 + i, t] for i, t in enumerate(target)))


# ---- the E2E protocol -------------------------------------------------------------------------------

@pytest.mark.parametrize("shots", [50, 100, 500, None])
@pytest.mark.parametrize("seed", [13, 21])
def test_e2e_never_puts_one_mr_in_two_splits(shots, seed, data_dir):
    data = load_task("e2e", data_dir, shots, seed)
    mrs = {split: {ex.fields["mr"] for ex in data.split(split)} for split in ("train", "dev", "test")}
    assert not mrs["train"] & mrs["dev"] and not mrs["train"] & mrs["test"] and not mrs["dev"] & mrs["test"]
    if shots is not None:
        assert len(data.train) == shots and all(len(ex.targets) == 1 for ex in data.train)
        assert sum(len(ex.targets) for ex in data.dev) >= 0.3 * shots
    assert len(data.test) == 630 and sum(len(ex.targets) for ex in data.test) == 4693  # every reference kept
    assert load_task("e2e", data_dir, shots, seed).train == data.train  # seeded
    assert data.protocol["split"].startswith("by input")


def test_e2e_seeds_draw_different_mrs_and_too_many_shots_is_a_clear_error(data_dir):
    a, b = load_task("e2e", data_dir, 50, 13), load_task("e2e", data_dir, 50, 21)
    assert {ex.fields["mr"] for ex in a.train} != {ex.fields["mr"] for ex in b.train}
    with pytest.raises(AutopromptError, match="use fewer shots"):
        _ = load_task("e2e", data_dir, 10_000, 13).train


# ---- scoring ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["causal", "gpt2"])
@pytest.mark.parametrize("part", ["none", "prefix", "slots"])
def test_reference_logprobs_equal_a_hand_written_teacher_forced_computation(arch, part, request):
    lm = request.getfixturevalue(arch)
    before = list(lm.tokenize("the movie was fine")) if part == "prefix" else []
    soft = _prefix(lm) if part == "prefix" else None
    prompts = [list(lm.tokenize(t)) for t in [" a good film and", " bad", " the plot of the story was"]]
    batch = [Encoded(tuple(p), len(p)) for p in prompts]
    if part == "slots":  # soft slots holding a token's embedding score like that token
        vectors = lm.embedding_matrix()[list(lm.tokenize(" film"))[:1]].detach().clone()
        soft = SoftPrompt(slots=vectors)
        batch = [Encoded((*p, 0), len(p) + 1, soft_at=(len(p),)) for p in prompts]
        prompts = [[*p, lm.tokenize(" film")[0]] for p in prompts]
    targets = [[list(lm.tokenize(" good day")), list(lm.tokenize(" bad"))], [list(lm.tokenize(" the end of it"))],
               [list(lm.tokenize(" x y z w"))]]
    got = target_logprobs(lm, batch, targets, soft)
    for prompt, refs, values in zip(prompts, targets, got, strict=True):
        for ref, value in zip(refs, values, strict=True):
            assert float(value) == pytest.approx(_by_hand(lm, before, prompt, ref), abs=1e-5)


def test_the_evaluator_scores_likelihood_per_token_over_every_reference(causal, gen):
    ev = Evaluator(causal, gen.task, batch_size=3, decoding=Decoding(max_new_tokens=6))
    prompt = gen.task.default_prompt
    result = ev.score(prompt, gen.dev)
    before, space = target_context(prompt)
    assert (before, space) == ("\nDescription:", " ")
    for e, ex in enumerate(gen.dev):
        query = list(causal.encode(prompt, ex).ids)
        per_token = []
        for ref in ex.targets:
            ids = [*causal.continuation(before, " " + ref), causal.tokenizer.eos_token_id]
            per_token.append(_by_hand(causal, [], query, ids) / len(ids))
        assert float(result.logprobs[e, 0]) == pytest.approx(sum(per_token) / len(per_token), abs=1e-5)
    assert result.metric == "bleu" and len(result.outputs) == len(gen.dev)
    assert result.extra["loglik_per_token"] == pytest.approx(float(result.logprobs[:, 0].mean()))
    assert ev.score(prompt, gen.dev) is result  # cached


# ---- decoding -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["causal", "gpt2"])
@pytest.mark.parametrize("beams", [1, 3])
def test_decoding_with_a_prefix_equals_generate_of_the_full_prompt(arch, beams, request):
    lm = request.getfixturevalue(arch)
    text = list(lm.tokenize("the movie was fine"))
    stops = stop_tokens(lm)
    prompts = [list(lm.tokenize(t)) for t in [" a good film and", " bad", " the plot of the story was"]]
    got = generate_ids(lm, [Encoded(tuple(p), len(p)) for p in prompts], Decoding(beams, 10), _prefix(lm))
    for prompt, ours in zip(prompts, got, strict=True):
        ids = torch.tensor([text + prompt])
        full = lm.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=beams,
                                 max_new_tokens=10, pad_token_id=lm.pad_id)[0, ids.shape[1]:].tolist()
        cut = next((i for i, t in enumerate(full) if stops[t]), len(full))
        assert ours == full[:cut]


def test_beam_search_with_stops_equals_transformers_beam_search(gpt2):
    """Random stop sets make hypotheses finish at every step: the finished/live bookkeeping is exercised."""
    vocab = gpt2.output_embedding_matrix().shape[0]
    saved = stop_tokens(gpt2)
    try:
        for seed in range(12):
            gen = torch.Generator().manual_seed(seed)
            stops = [*torch.randperm(vocab, generator=gen)[:40].tolist(), 260, 103, 36, 154, 261]
            mask = torch.zeros(vocab, dtype=torch.bool)
            mask[stops] = True
            object.__setattr__(gpt2, "_stop_tokens", mask)
            prompt = torch.randint(5, vocab, (6,), generator=gen).tolist()
            ours = generate_ids(gpt2, [Encoded(tuple(prompt), 6)], Decoding(3, 10))[0]
            ids = torch.tensor([prompt])
            full = gpt2.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=3,
                                       max_new_tokens=10, pad_token_id=gpt2.pad_id, eos_token_id=stops,
                                       length_penalty=1.0)[0, 6:].tolist()
            assert ours == full[: next((i for i, t in enumerate(full) if mask[t]), len(full))], seed
    finally:
        object.__setattr__(gpt2, "_stop_tokens", saved)


def test_greedy_outputs_end_before_the_first_stop_token(causal):
    newline = causal.tokenize("\n")[0]
    stops = stop_tokens(causal)
    assert bool(stops[newline]) and bool(stops[causal.tokenizer.eos_token_id])
    prompts = [list(causal.tokenize(t)) for t in [" a good film and", " bad", " the plot of the story was"]]
    batch = [Encoded(tuple(p), len(p)) for p in prompts]
    try:  # the stop set is cached on the model: plant one the random-weight model is sure to emit
        object.__setattr__(causal, "_stop_tokens", torch.zeros_like(stops))
        free = generate_ids(causal, batch, Decoding(1, 8))
        planted = free[0][3]
        object.__setattr__(causal, "_stop_tokens", torch.arange(len(stops)) == planted)
        stopped = generate_ids(causal, batch, Decoding(1, 8))
    finally:
        object.__setattr__(causal, "_stop_tokens", stops)
    assert all(len(row) == 8 for row in free) and len(stopped[0]) <= 3
    for row, out in zip(free, stopped, strict=True):  # every row cut at its own first stop, not the batch's
        assert out == row[: row.index(planted) if planted in row else len(row)]


# ---- metrics --------------------------------------------------------------------------------------------

def test_bleu_statistics_give_sacrebleus_corpus_score_on_any_resample():
    hyps = ["the cat sat on the mat", "a dog", "there is a small pub in the centre"]
    refs = [["the cat sat on a mat", "a cat sat"], ["a dog barks"], ["a small pub is in the city centre", "x", "y"]]
    stats = bleu_stats(hyps, refs)
    assert bleu_from_stats(stats) == pytest.approx(corpus_bleu(hyps, refs))
    idx = torch.tensor([0, 0, 2])
    picked = [hyps[i] for i in idx.tolist()], [refs[i] for i in idx.tolist()]
    assert bleu_from_stats(stats[idx]) == pytest.approx(corpus_bleu(*picked))
    assert rouge_l(["the cat sat"], [["a dog", "the cat sat"]]).tolist() == [100.0]  # the best reference counts


def test_a_bleu_gain_interval_scores_each_resample_as_sacrebleus_corpus_bleu():
    refs = [["the cat sat on a mat", "a cat sat"], ["a dog barks"], ["a small pub is in the city centre", "a pub"],
            ["cheap food near the river"], ["a family friendly place", "kids are welcome"], ["it is expensive"]]
    found = ["the cat sat on the mat", "a dog barks", "a small pub in the centre", "food near the river",
             "a family place", "it is very expensive"]
    base = ["a cat", "the dog", "a pub is in the city", "cheap food", "a place for kids", "expensive"]

    def result(hyps: list[str]) -> EvalResult:
        n = len(hyps)
        return EvalResult("bleu", corpus_bleu(hyps, refs), torch.zeros(n, 1), torch.zeros(n, dtype=torch.long),
                          outputs=hyps, bleu_stats=bleu_stats(hyps, refs))

    delta = bootstrap_delta(result(found), result(base), n_boot=200, seed=7)
    idx = torch.randint(0, len(refs), (200, len(refs)), generator=torch.Generator().manual_seed(7)).tolist()
    by_hand = torch.tensor([corpus_bleu([found[i] for i in row], [refs[i] for i in row])
                            - corpus_bleu([base[i] for i in row], [refs[i] for i in row]) for row in idx])
    low, high = torch.quantile(by_hand.double(), torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    assert delta["delta"] == pytest.approx(corpus_bleu(found, refs) - corpus_bleu(base, refs)) and low < high
    assert delta["ci95"] == pytest.approx([low, high], abs=1e-5)
    assert delta["se"] == pytest.approx(float(by_hand.std()), rel=1e-4)


def test_gain_intervals_resample_corpus_bleu(causal, gen):
    ev = Evaluator(causal, gen.task, decoding=Decoding(max_new_tokens=5))
    manual = gen.task.default_prompt
    other = Prompt("{mr} [P]", manual.verbalizer)
    found, base = ev.score(other, gen.test), ev.score(manual, gen.test)
    delta = bootstrap_delta(found, base, n_boot=50)
    assert delta["delta"] == pytest.approx(found.score - base.score)
    assert objective_values(found, "margin").tolist() == found.sentence_scores.tolist()
    assert objective_values(found, "loglik").tolist() == found.logprobs[:, 0].tolist()


# ---- strategies ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["prompt_tuning", "prefix", "ptuning"])
def test_continuous_strategies_conform_on_a_generation_task(strategy, causal, gen, weights_kept):
    with weights_kept(causal):
        result = check_strategy(strategy, {**FAST, "lr": 0.05}, budget=400, lm=causal, data=gen)
    assert result.metric == "bleu" and result.generation["decoding"]["num_beams"] == 1


@pytest.mark.parametrize("strategy", ["prompt_tuning", "prefix"])
def test_the_minimum_budget_counts_dev_references_and_buys_one_step(strategy, causal, gen):
    from autoprompt.scoring.generation import scoring_forwards  # noqa: PLC0415

    params = {"steps": 4, "eval_every": 2, "batch_size": 4}
    dev_cost = scoring_forwards(gen.dev)
    assert dev_cost == len(gen.dev) + sum(len(ex.targets) for ex in gen.dev) > len(gen.dev)
    check_minimum_budget(strategy, params, causal, gen, dev_cost)


def test_a_dry_run_on_a_generation_task_times_reference_forwards_not_decoding(causal, gen, monkeypatch):
    from autoprompt.scoring.generation import GenerationScorer  # noqa: PLC0415
    from autoprompt.search.estimate import estimate  # noqa: PLC0415

    def no_decoding(*args, **kwargs):
        raise AssertionError("a dry run decoded")

    monkeypatch.setattr(GenerationScorer, "generate", no_decoding)
    plan = estimate(SearchSpec(task="tiny-gen", strategy="prefix", params={"steps": 4, "eval_every": 2}), causal, gen)
    assert plan["dev"] == len(gen.dev) and plan["seconds_per_forward"] > 0
    assert "decoding dev and test outputs comes on top" in plan["note"]


def test_a_generation_step_lowers_the_reference_loss(causal, gen):
    searcher = create("prefix", {"steps": 30, "eval_every": 30, "lr": 0.05, "batch_size": 12})
    from autoprompt.scoring.budget import Budget  # noqa: PLC0415
    from autoprompt.search import SearchContext  # noqa: PLC0415

    ctx = SearchContext(causal, gen.task, gen.train, gen.dev, Evaluator(causal, gen.task, budget=Budget()), Budget(),
                        0)
    before = weights_checksum(causal.model)
    state = searcher.step(ctx, searcher.start(ctx))
    assert state["losses"][-1] < state["losses"][0] - 0.05  # the prefix learns the references
    assert weights_checksum(causal.model) == before


def test_select_loglik_keeps_the_manual_prompt_by_dev_likelihood_from_the_start(causal, gen):
    from autoprompt.scoring.budget import Budget  # noqa: PLC0415
    from autoprompt.search import SearchContext  # noqa: PLC0415
    from autoprompt.searchers.continuous.readout import dev_loss  # noqa: PLC0415

    ctx = SearchContext(causal, gen.task, gen.train, gen.dev, Evaluator(causal, gen.task, budget=Budget(),
                        decoding=Decoding(max_new_tokens=4)), Budget(), 0)
    state = create("prefix", {"select": "loglik", "keep_manual": True}).start(ctx)
    scored = list(ctx.evaluator.generation._cache.values())  # the start prompt and the manual one, on dev
    assert len(scored) == 2 and state["best_dev_loss"] == min(dev_loss(r) for r in scored)


def test_a_search_writes_outputs_and_records_generation_figures(causal, gen, tmp_path):
    result = run_search(SearchSpec(task="tinygen", strategy="prompt_tuning", params={**FAST, "gate": False},
                                   budget=400, out=str(tmp_path)), lm=causal, data=gen)
    rows = [json.loads(line) for line in open(result.generation["outputs"])]
    assert len(rows) == len(gen.test) and set(rows[0]) == {"input", "output", "manual_output", "references"}
    assert set(result.generation["found"]) == {"rougeL", "loglik_per_token"}
    assert result.lama is None and "lama" not in result.to_json() and result.deltas["test"]["n"] == len(gen.test)


def test_a_restored_paid_set_recomputes_generation_scores_without_charging_them_again(causal, gen):
    # what a resumed search does: its fresh cache is empty, its restored `paid` set is not
    from autoprompt.scoring.budget import Budget  # noqa: PLC0415

    prompt, decoding = gen.task.default_prompt, Decoding(max_new_tokens=4)
    first = Evaluator(causal, gen.task, budget=Budget(), decoding=decoding)
    before = first.score(prompt, gen.dev)
    assert first.budget.used == len(gen.dev) + sum(len(ex.targets) for ex in gen.dev)
    resumed = Evaluator(causal, gen.task, budget=Budget(), decoding=decoding)
    resumed.paid.update(first.paid)
    again = resumed.score(prompt, gen.dev)
    assert torch.equal(again.logprobs, before.logprobs) and again.outputs == before.outputs
    assert resumed.budget.used == 0
    resumed.score(prompt, gen.test)  # new examples are charged
    assert resumed.budget.used == len(gen.test) + sum(len(ex.targets) for ex in gen.test)


def test_without_a_cache_generation_scores_again_alike_and_charges_the_tokens_it_encoded(causal, gen):
    from autoprompt.scoring.budget import Budget  # noqa: PLC0415

    prompt = gen.task.default_prompt
    ev = Evaluator(causal, gen.task, budget=Budget(), cache=False, decoding=Decoding(max_new_tokens=4))
    first, again = ev.score(prompt, gen.dev), ev.score(prompt, gen.dev)
    assert again is not first and again.outputs == first.outputs and torch.equal(again.logprobs, first.logprobs)
    assert ev.budget.used == len(gen.dev) + sum(len(ex.targets) for ex in gen.dev)  # paid once
    assert ev.budget.tokens == sum(len(causal.encode(prompt, ex)) for ex in gen.dev)


@pytest.mark.parametrize("strategy", ["gradient", "verbalizer", "random", "paraphrase", "demos"])
def test_label_word_strategies_say_they_do_not_search_generation_tasks(strategy, causal, gen, tmp_path):
    with pytest.raises(AutopromptError, match=rf"strategy {strategy} does not search generation tasks.*manual"):
        run_search(SearchSpec(task="tinygen", strategy=strategy, out=str(tmp_path)), lm=causal, data=gen)


def test_calibration_on_a_generation_task_is_a_clear_error(causal, gen):
    with pytest.raises(AutopromptError, match="calibration is for classification tasks"):
        Evaluator(causal, gen.task).calibrate([gen.task.default_prompt], "contextual")


def test_a_masked_lm_cannot_generate(masked, gen):
    with pytest.raises(AutopromptError, match="needs a causal LM"):
        Evaluator(masked, gen.task)


# ---- files and the CLI -------------------------------------------------------------------------------

def _generation_spec(folder):
    rows = ["mr,ref"] + [f'"name[{n}], food[{f}]",the {n} serves {f} food' for n in ("cafe", "pub", "inn", "bar")
                         for f in ("thai", "french", "cheap")]
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    (folder / "test.csv").write_text("\n".join([rows[0], *rows[1:4], rows[1].replace("the", "a")]) + "\n")
    spec = folder / "gen.toml"
    spec.write_text('name = "gen"\nfields = ["mr"]\ntarget_column = "ref"\ntemplate = "{mr}\\nDescription: [P]"\n'
                    '[files]\ntrain = "train.csv"\ntest = "test.csv"\n')
    return spec


def test_a_custom_generation_task_groups_references_by_input(tmp_path):
    data = load_task(_generation_spec(tmp_path))
    assert data.task.is_generation and len(data.test) == 3
    assert data.test[0].targets == ("the cafe serves thai food", "a cafe serves thai food")  # two rows, one input
    assert not {ex.fields["mr"] for ex in data.train} & {ex.fields["mr"] for ex in data.dev}
    bad = tmp_path / "bad.toml"
    bad.write_text(_generation_spec(tmp_path).read_text() + '[verbalizer]\n"0" = ["a"]\n"1" = ["b"]\n')
    with pytest.raises(AutopromptError, match=r"generation task .* has no labels, verbalizer"):
        load_task(bad)


@pytest.mark.parametrize("shots", [None, 4])
def test_a_given_dev_file_is_the_dev_set_and_train_holds_no_dev_or_test_input(tmp_path, shots):
    spec = _generation_spec(tmp_path)
    rows = (tmp_path / "train.csv").read_text().splitlines()
    (tmp_path / "dev.csv").write_text("\n".join([rows[0], *rows[4:7]]) + "\n")  # the pub's three MRs
    spec.write_text(spec.read_text() + 'dev = "dev.csv"\n')
    data = load_task(spec, shots=shots)
    mrs = {split: {ex.fields["mr"] for ex in data.split(split)} for split in ("train", "dev", "test")}
    assert mrs["dev"] == {f"name[pub], food[{f}]" for f in ("thai", "french", "cheap")}
    assert not mrs["train"] & (mrs["dev"] | mrs["test"])
    assert len(data.train) == (6 if shots is None else shots)  # the inn's and the bar's six MRs, or a draw


def test_evaluate_and_predict_generate_text_from_the_cli(tmp_path, tiny_model_dir):
    spec = _generation_spec(tmp_path)
    scored = runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir),
                                 "--max-new-tokens", "4", "--num-beams", "2", "--json"])
    assert scored.exit_code == 0, scored.output
    result = json.loads(scored.output[scored.output.index("{"):])
    assert result["metric"] == "bleu" and len(result["outputs"]) == 3
    assert result["generation"]["decoding"] == {"num_beams": 2, "max_new_tokens": 4, "length_penalty": 1.0}
    table = runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir),
                                "--max-new-tokens", "4"])
    assert table.exit_code == 0 and "rougeL=" in table.output
    prompt = tmp_path / "prompt.json"
    from autoprompt import save_prompt  # noqa: PLC0415

    save_prompt(load_task(spec).task.default_prompt, prompt)
    (tmp_path / "in.jsonl").write_text('{"mr": "name[cafe], food[thai]"}\n')
    made = runner.invoke(app, ["predict", "--prompt", str(prompt), "--input", str(tmp_path / "in.jsonl"),
                               "--model", str(tiny_model_dir), "--max-new-tokens", "3"])
    assert made.exit_code == 0, made.output
    line = json.loads(made.output.strip().splitlines()[-1])
    assert line["mr"] == "name[cafe], food[thai]" and isinstance(line["output"], str)
