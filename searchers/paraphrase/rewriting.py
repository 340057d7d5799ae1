"""Rewriting templates with a frozen LM: a causal LM is asked (whole template and each text piece),
a masked LM refills one template word at a time. The core charges the budget for both."""

from __future__ import annotations

from autoprompt import Template
from autoprompt.search import SearchContext, TextWriting

ANSWER = "[ANSWER]"  # how [P] is shown to a paraphrasing LM


def ask(ctx: SearchContext, gen: str | None, template: Template, salt: str, n: int, temperature: float) -> list[str]:
    """Causal LM: rewrite the whole template, and each of its text pieces on its own.

    Small models rarely keep placeholders through a whole-template rewrite; a text piece
    ("It was", "Sentiment (positive or negative):") is rewritten between the untouched slots,
    so those rewrites keep their slots by construction.
    """
    shown = template.source.replace("[P]", ANSWER)
    fields = ", ".join("{" + f + "}" for f in template.fields)
    whole = (f"Rewrite this prompt template in a different way. Keep {fields} and {ANSWER} exactly "
             f"as written, with {ANSWER} at the end. Reply with the new template only.\n\n{shown}")
    pieces = [i for i, s in enumerate(template.segments) if s.kind == "text" and any(c.isalpha() for c in s.value)]
    requests = [(whole, salt)] + [
        ("Rewrite the phrase in other words, keeping its meaning. Reply with the new phrase only.\n\n"
         f"Phrase: {template.segments[i].value.strip()}", f"{salt}:{i}") for i in pieces]
    base = ctx.rng().randrange(2**31)  # the step's seed; each request adds its own salt
    replies = ctx.ask(TextWriting).generate(gen, [(text, base + sum(map(ord, tag))) for text, tag in requests],
                           n, temperature)
    out = [t.replace(ANSWER, "[P]") for t in replies[0]]
    for i, rewrites in zip(pieces, replies[1:], strict=True):
        text = template.segments[i].value
        core = text.strip()
        for new in rewrites:
            new = new.splitlines()[0].strip().strip('"') if new.strip() else ""
            if new and new != core:
                segments = list(template.segments)
                segments[i] = type(segments[i])("text", text.replace(core, new))
                out.append(Template.from_segments(segments).source)
    return out


def refill(ctx: SearchContext, gen: str | None, template: Template, n: int) -> list[str]:
    """Masked LM: mask one template word at a time, refill with the top whole-word predictions."""
    words = template.source.split(" ")
    plain = [i for i, w in enumerate(words) if w.isalpha()]
    predict = next(i for i, w in enumerate(words) if "[P]" in w)
    mask = ctx.ask(TextWriting).other_model(gen).tokenizer.mask_token
    jobs = []
    for i in plain:
        text = " ".join(mask if j == i else w for j, w in enumerate(words)).replace("[P]", mask)
        for field in template.fields:  # a neutral filler: the template's own words are what change
            text = text.replace("{" + field + "}", "something")
        jobs.append((text, 1 if predict < i else 0))  # the [P] mask may come first
    fills = ctx.ask(TextWriting).fill_masks(gen, jobs, max(1, n // max(1, len(plain)) + 1))
    return [" ".join(word if j == i else w for j, w in enumerate(words))
            for i, found in zip(plain, fills, strict=True) for word in found]
