"""Mining templates from a corpus (LPAQA's middle words)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from autoprompt import AutopromptError
from autoprompt.search import SearchContext


def mine(ctx: SearchContext, corpus: str | None, num_mined: int) -> list[str]:
    """Middle-word templates from the corpus, most frequent first."""
    if corpus:
        if not Path(corpus).is_file():
            raise AutopromptError(f"paraphrase: corpus file {corpus} does not exist")
        lines = Path(corpus).read_text(errors="replace").splitlines()
    else:
        lines = [" ".join(ex.fields.values()) for ex in ctx.train]
    counts: Counter[str] = Counter()
    if ctx.task.fields == ("subject",):  # relation: the words between subject and object
        pairs = [(ex.fields["subject"], ctx.task.labels[ex.label]) for ex in ctx.train]
        for line in lines:
            for subject, obj in pairs:
                i, j = line.find(subject), line.find(obj)
                if 0 <= i < j:
                    middle = line[i + len(subject) : j].strip()
                    if middle and len(middle.split()) <= 6 and not re.search(r"[\[\]{}]", middle):
                        counts[middle] += 1
        head = "{subject}"
    else:  # classification: the words before a label word
        manual = ctx.start
        words = {w.lower() for ws in manual.verbalizer.words.values() for w in ws}
        for line in lines:
            tokens = line.split()
            for k, token in enumerate(tokens):
                if token.lower().strip(".,!?") in words and k >= 1:
                    context = " ".join(tokens[max(0, k - 3) : k])
                    if not re.search(r"[\[\]{}]", context):
                        counts[context] += 1
        last = max(i for i, s in enumerate(manual.template.segments) if s.kind == "field")
        head = "".join(s.value if s.kind == "text" else s.space + "{" + s.value + "}"
                       for s in manual.template.segments[: last + 1]).replace("[", "[[")
    return [f"{head} {middle} [P]" for middle, _ in counts.most_common(num_mined)]
