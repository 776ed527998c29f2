"""When a label set changes (artifacts.LabelSetChange): whether new labels are old classes under other names.

Data labelled `0/1` where production says `negative/positive` is the same two
classes named otherwise; data with a `neutral` class is a real change. The
production model tells the two apart: run it on the rows of each unknown label
and see which of its labels it gives them. The pairing that agrees best
(scipy's assignment solver: each production label taken at most once) is
proposed as a `data.label_map` for a person to confirm; it is never applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict

# A pairing is proposed only when the production model gives at least this share of the
# label's rows the paired label (a majority), judged on at least MIN_ROWS rows, and gives
# it to the rows of every other unknown label at least MIN_MARGIN less often (a model
# that calls everything `positive` is no evidence that `1` means positive).
MIN_SHARE = 0.5
MIN_MARGIN = 0.2
MIN_ROWS = 10
# Rows per unknown label the production model classifies (a seeded sample): enough for
# shares to a few points, cheap on a CPU.
SAMPLE_ROWS = 200


class LabelPairing(BaseModel):
    """One unknown label and the production label the production model gives most of its rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str
    target: str
    share: float  # of the label's sampled rows, classified as `target`
    rows: int  # sampled rows of the label


class LabelMapProposal(BaseModel):
    """How the production model classifies the rows of each unknown label, and the pairing it suggests."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_version: str
    shares: dict[str, dict[str, float]]  # unknown label -> production label -> share of its rows
    rows: dict[str, int]
    pairs: list[LabelPairing]  # the confident pairings (MIN_SHARE, MIN_ROWS)

    @property
    def unpaired(self) -> list[str]:
        paired = {pair.source for pair in self.pairs}
        return [label for label in self.shares if label not in paired]

    @property
    def complete(self) -> bool:
        """Every unknown label pairs with a distinct production label: the same classes, renamed."""
        return not self.unpaired

    def label_map(self, existing: Mapping[str, str]) -> dict[str, str]:
        """`existing` (data.label_map) with the pairings applied: source labels map straight to production's."""
        renamed = {pair.source: pair.target for pair in self.pairs}
        composed = {source: renamed.get(target, target) for source, target in existing.items()}
        return {**composed, **{source: target for source, target in renamed.items() if source not in composed}}

    def table(self) -> list[str]:
        """Markdown: per unknown label, its rows and what the production model calls them."""
        targets = sorted({target for found in self.shares.values() for target in found})
        lines = [
            f"| label in the data | rows classified | {' | '.join(targets)} | proposed |",
            "|---" * (len(targets) + 3) + "|",
        ]
        proposed = {pair.source: pair.target for pair in self.pairs}
        for source, found in self.shares.items():
            cells = " | ".join(f"{found.get(target, 0.0):.0%}" for target in targets)
            lines.append(f"| {source} | {self.rows[source]} | {cells} | {proposed.get(source, '(none)')} |")
        return lines


def propose_label_map(
    texts_by_label: Mapping[str, Sequence[str]],
    targets: Sequence[str],
    classify: Callable[[list[str]], list[str]],
    model_version: str,
    seed: int = 0,
) -> LabelMapProposal:
    """Pair each unknown label with the production label its rows are mostly classified as.

    Args:
        texts_by_label: unknown label -> the texts labelled so.
        targets: the production model's labels (the names a pairing may use).
        classify: the production model: texts -> one of `targets` per text.
        model_version: named in the proposal (which model judged).
        seed: the sample of SAMPLE_ROWS texts per label.
    """
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(seed)
    sources = list(texts_by_label)
    shares = np.zeros((len(sources), len(targets)))
    rows: dict[str, int] = {}
    for i, source in enumerate(sources):
        texts = list(texts_by_label[source])
        if len(texts) > SAMPLE_ROWS:
            texts = [texts[j] for j in sorted(rng.choice(len(texts), SAMPLE_ROWS, replace=False))]
        rows[source] = len(texts)
        predicted = classify(texts) if texts else []
        for j, target in enumerate(targets):
            shares[i, j] = sum(label == target for label in predicted) / max(len(predicted), 1)
    chosen = zip(*linear_sum_assignment(shares, maximize=True), strict=True)
    pairs = [
        LabelPairing(source=sources[i], target=targets[j], share=round(float(shares[i, j]), 4), rows=rows[sources[i]])
        for i, j in chosen
        if shares[i, j] >= MIN_SHARE
        and rows[sources[i]] >= MIN_ROWS
        and all(shares[i, j] - shares[k, j] >= MIN_MARGIN for k in range(len(sources)) if k != i)
    ]
    return LabelMapProposal(
        model_version=model_version,
        shares={s: {t: round(float(shares[i, j]), 4) for j, t in enumerate(targets)} for i, s in enumerate(sources)},
        rows=rows,
        pairs=sorted(pairs, key=lambda pair: sources.index(pair.source)),
    )


def params_snippet(labels: Sequence[str], label_map: Mapping[str, str]) -> str:
    """The `data:` lines of params.yaml that confirm a proposal."""
    return yaml.safe_dump({"data": {"labels": list(labels), "label_map": dict(label_map)}}, sort_keys=False)


def explain(proposal: LabelMapProposal, labels: Sequence[str], existing: Mapping[str, str]) -> str:
    """Markdown for a person: the evidence, and the params.yaml change to confirm (never applied here)."""
    lines = [
        f"Production model {proposal.model_version} classified a sample of the rows of each label it does not know:",
        "",
        *proposal.table(),
        "",
    ]
    if proposal.complete:
        lines.append(
            "These look like the production model's classes under other names. If that is so, confirm it "
            "in params.yaml (nothing is applied until you do):"
        )
    elif proposal.pairs:
        lines.append(
            f"Some labels look renamed; {proposal.unpaired} match no production label (a new class?). "
            "To keep production's names for the renamed ones, confirm in params.yaml:"
        )
    else:
        lines.append(
            "No label pairs clearly with a production label, so no map is proposed. If they are production's "
            "classes under other names, write data.label_map yourself; if they are new classes, production "
            "accepts them only with gate.label_set_change: allow."
        )
        return "\n".join(lines)
    label_map = proposal.label_map(existing)
    renamed = list(dict.fromkeys(label_map.get(label, label) for label in labels))
    lines += ["", "```yaml", params_snippet(renamed, label_map).rstrip(), "```"]
    return "\n".join(lines)
