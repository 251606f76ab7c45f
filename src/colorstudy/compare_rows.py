"""What a comparison of two runs reports: one :class:`Row` per compared value, and the
:class:`Comparison` that prints them (table, failure reasons, summary).

Apart from :mod:`colorstudy.compare` (the rules) so that the seed-mean rule
(:mod:`colorstudy.compare_seeds`) builds the same rows without importing the rules back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Value = int | float | str  # what dvc keeps of a metrics file (bool is an int)
Metrics = dict[str, Value]  # one file, flattened to dotted names: {"psnr.mean": 16.5}
Status = Literal["ok", "moved", "FAIL"]
Rule = Literal["data", "deterministic", "interval", "other_machine", "seed_mean", "informational", "presence"]
# the rules that compare a number of a metrics file (the others: data hashes, presence)
METRIC_RULES = ("deterministic", "interval", "other_machine", "seed_mean", "informational")

TRAINED_ON = "checkpoint.trained_on"


@dataclass(frozen=True)
class Row:
    """One compared value; ``allowed`` is the tolerance as a reader should see it."""

    path: str
    metric: str
    committed: Value | None
    reproduced: Value | None
    allowed: str
    rule: Rule
    status: Status
    reason: str = ""  # why it failed, in words, for the log

    @property
    def change(self) -> float | None:
        a, b = self.committed, self.reproduced
        return b - a if is_number(a) and is_number(b) else None


@dataclass(frozen=True)
class Comparison:
    rows: list[Row]
    notes: tuple[str, ...] = ()  # lines the summary ends with: how the seed-means were judged

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == "FAIL"]

    @property
    def passed(self) -> bool:
        return not self.failed

    def table(self) -> str:
        """The rows that changed, `dvc metrics diff`-style, failures first."""
        changed = sorted((r for r in self.rows if r.status != "ok"),
                         key=lambda r: (r.status != "FAIL", r.path, r.metric))
        if not changed:
            return ""
        head = ("Path", "Metric", "HEAD", "workspace", "Change", "Allowed", "Status")
        body = [(r.path, r.metric, fmt(r.committed), fmt(r.reproduced),
                 "" if r.change is None else f"{r.change:+.4g}", r.allowed, r.status)
                for r in changed]
        widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                         for line in (head, *body))

    def reasons(self) -> list[str]:
        """One self-contained line per failure: what differs and why that matters."""
        return [f"FAIL {r.reason}" for r in self.failed]

    def summary(self) -> str:
        metrics = [r for r in self.rows if r.rule in METRIC_RULES]
        data = [r for r in self.rows if r.rule == "data"]
        other = sum(r.status == "FAIL" for r in self.rows if r.rule == "presence")

        def moved(*rules: str) -> int:
            return sum(r.status == "moved" and r.rule in rules for r in metrics)

        line = (f"{len(metrics)} metrics compared: "
                f"{sum(r.status == 'ok' for r in metrics)} identical, "
                f"{moved('interval', 'deterministic')} within tolerance, "
                f"{moved('seed_mean')} seed-means within their bound, "
                f"{moved('other_machine')} per-seed values moved on another machine kind (judged through "
                f"their model's seed-mean), "
                f"{moved('informational')} informational moved, "
                f"{sum(r.status == 'FAIL' for r in metrics)} failed; "
                f"{sum(r.status == 'ok' for r in data)} of {len(data)} data outputs byte-identical")
        line += f"; {other} missing files or stages" if other else ""
        kinds: dict[tuple[str, str], int] = {}
        for r in self.rows:
            if r.metric == TRAINED_ON and r.committed != r.reproduced:
                pair = (str(r.committed), str(r.reproduced))
                kinds[pair] = kinds.get(pair, 0) + 1
        for (committed, reproduced), n in sorted(kinds.items()):
            line += (f"\n{n} trained run(s) (model, seed) are from another kind of machine than the committed "
                     f"run ({reproduced} here, {committed} committed): bitwise-repeatable training holds on one "
                     f"kind only, so their metrics were judged through their model's seed-mean, not per seed")
        return "\n".join([line, *self.notes])


def is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fmt(value: Value | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."
