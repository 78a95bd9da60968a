"""Renaming, merging and dropping classes (``--classes 'a,b=defect' --drop c``)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from yolodefect.errors import UsageError


@dataclass(frozen=True)
class ClassMap:
    """Source class name -> output class name (None = dropped), and the output order."""

    mapping: dict[str, str | None]
    output_names: list[str]

    def __call__(self, source_name: str) -> str | None:
        return self.mapping[source_name]


def _unknown(name: str, known: Sequence[str]) -> UsageError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UsageError(f"class {name!r} is not in the source{hint}; its classes are: {', '.join(known)}")


def build_class_map(source_names: Sequence[str], rules: Sequence[str] = (), drop: Sequence[str] = ()) -> ClassMap:
    """Apply rename/merge rules ``'old1,old2=new'`` (several per string, ';'-separated) and drops.

    Output classes keep the order in which the source lists them, a merged class taking the
    place of its first member, so the same source always gives the same class ids.
    """
    mapping: dict[str, str | None] = {name: name for name in source_names}
    for rule in (part.strip() for text in rules for part in text.split(";")):
        if not rule:
            continue
        if rule.count("=") != 1:
            raise UsageError(f"--classes {rule!r}: write 'old=new' or 'old1,old2=new'")
        olds, new = rule.split("=")
        new = new.strip()
        if not new:
            raise UsageError(f"--classes {rule!r}: the new class name is empty")
        for old in (o.strip() for o in olds.split(",")):
            if old not in mapping:
                raise _unknown(old, source_names)
            mapping[old] = new
    for name in drop:
        if name not in mapping:
            raise _unknown(name, source_names)
        mapping[name] = None
    output_names = list(dict.fromkeys(new for new in mapping.values() if new is not None))
    if not output_names:
        raise UsageError("every class was dropped: nothing would be left to detect")
    return ClassMap(mapping, output_names)
