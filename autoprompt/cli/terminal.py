"""The CLI's listener: the core's progress events as tqdm bars (rate and ETA), warnings on stderr."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

from autoprompt.events import Listener


class Terminal(Listener):
    """Draws one bar per running job; a job started inside another (scoring inside a search) is
    drawn below it and removed when it ends."""

    def __init__(self) -> None:
        self._bars: dict[str, tqdm] = {}

    def started(self, job: str, total: int | None, unit: str, initial: int = 0) -> None:
        self._bars[job] = tqdm(total=total, desc=job, unit=unit, initial=initial, dynamic_ncols=True,
                               leave=not self._bars, file=sys.stderr)

    def advanced(self, job: str, done: int, info: dict[str, Any]) -> None:
        bar = self._bars.get(job)
        if bar is None:
            return
        bar.update(done - bar.n)
        if info:
            bar.set_postfix({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in info.items() if v is not None})

    def ended(self, job: str) -> None:
        bar = self._bars.pop(job, None)
        if bar is not None:
            bar.close()

    def warned(self, message: str) -> None:
        tqdm.write(f"warning: {message}", file=sys.stderr)
