"""Assigning images to train/val/test: duplicates grouped first, then a seeded stratified split.

Identical images (same bytes) form one group and always land in the same split, so evaluation
never sees an image that training saw. Stratification is iterative (Sechidis et al., 2011):
groups are placed rarest class first into the split that still needs that class most, with
defect-free images stratified as their own class so every split keeps backgrounds for the
false-reject rate.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yolodefect.data.records import SPLITS, Note
from yolodefect.errors import UsageError

BACKGROUND = "<background>"


@dataclass(frozen=True)
class SplitItem:
    """What the splitter needs of one image: its content hash, classes and source split."""

    key: str  # content hash
    class_names: frozenset[str]
    source_split: str | None
    name: str  # for messages


@dataclass
class SplitResult:
    splits: list[str]  # one per item, same order
    notes: list[Note]


def parse_fractions(text: str) -> dict[str, float]:
    """'0.8,0.1,0.1' -> {'train': .8, 'val': .1, 'test': .1}; two values mean no test split."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--split {text!r}: expected fractions like 0.8,0.1,0.1") from None
    if not 2 <= len(values) <= 3 or any(v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise UsageError(f"--split {text!r}: give 2 or 3 non-negative fractions that sum to 1")
    if values[0] == 0 or values[1] == 0:
        raise UsageError(f"--split {text!r}: train and val need a non-zero share")
    return {split: value for split, value in zip(SPLITS, values) if value > 0}


def assign_splits(
    items: Sequence[SplitItem],
    fractions: dict[str, float],
    *,
    seed: int,
    keep_source_split: bool,
) -> SplitResult:
    groups = _group_duplicates(items)
    notes = [
        Note(items[members[0]].name, f"{len(members)} identical images kept together: "
             + ", ".join(items[m].name for m in members[1:]))
        for members in groups if len(members) > 1
    ]
    if keep_source_split:
        group_splits = [_source_split_of(items, members, notes) for members in groups]
    else:
        group_splits = _stratify(items, groups, fractions, seed)
    splits = [""] * len(items)
    for members, split in zip(groups, group_splits):
        for member in members:
            splits[member] = split
    return SplitResult(splits, notes)


def _group_duplicates(items: Sequence[SplitItem]) -> list[list[int]]:
    by_key: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_key[item.key].append(index)
    return list(by_key.values())


def _source_split_of(items: Sequence[SplitItem], members: list[int], notes: list[Note]) -> str:
    """The source split; images without one train; duplicates across source splits train too."""
    source_splits = {items[m].source_split or "train" for m in members}
    if len(source_splits) == 1:
        return source_splits.pop()
    notes.append(Note(items[members[0]].name,
                      f"identical images sit in source splits {sorted(source_splits)}: all moved to train to avoid leakage"))
    return "train"


def _stratify(
    items: Sequence[SplitItem], groups: list[list[int]], fractions: dict[str, float], seed: int
) -> list[str]:
    labels_of = [_group_labels(items, members) for members in groups]
    label_counts = Counter(label for labels in labels_of for label in labels)
    split_names = list(fractions)
    wanted = {
        split: {label: fractions[split] * count for label, count in label_counts.items()}
        for split in split_names
    }
    capacity = {split: fractions[split] * len(groups) for split in split_names}

    order = np.random.default_rng(seed).permutation(len(groups))
    # Rarest label first: the rare classes decide the split, the common ones fill in.
    order = sorted(order, key=lambda g: min(label_counts[label] for label in labels_of[g]))
    assigned = [""] * len(groups)
    for group in order:
        rarest = min(labels_of[group], key=lambda label: (label_counts[label], label))
        split = max(split_names, key=lambda s: (wanted[s][rarest], capacity[s]))
        assigned[group] = split
        capacity[split] -= 1
        for label in labels_of[group]:
            wanted[split][label] -= 1
    _ensure_every_label_in_every_split(assigned, labels_of, split_names)
    return assigned


def _group_labels(items: Sequence[SplitItem], members: list[int]) -> frozenset[str]:
    labels = frozenset().union(*(items[m].class_names for m in members))
    return labels or frozenset({BACKGROUND})


def _ensure_every_label_in_every_split(
    assigned: list[str], labels_of: list[frozenset[str]], split_names: list[str]
) -> None:
    """Move one group into any split missing a label, taken from the split richest in it."""
    for label in sorted({label for labels in labels_of for label in labels}):
        holders = [g for g, labels in enumerate(labels_of) if label in labels]
        if len(holders) < len(split_names):
            continue  # too rare to be everywhere; check reports it
        for split in split_names:
            if any(assigned[g] == split for g in holders):
                continue
            per_split = Counter(assigned[g] for g in holders)
            donor = per_split.most_common(1)[0][0]
            # Move the donor's group that carries the fewest other labels, to disturb least.
            candidates = sorted((g for g in holders if assigned[g] == donor), key=lambda g: (len(labels_of[g]), g))
            assigned[candidates[0]] = split
