"""Which dataset class is which model class: matching label names (pure, lists of strings in, an order out).

A dataset whose class names are the model's in another order would otherwise be scored against the
wrong rows of W (1-2 % "accuracy", no warning). Names are compared normalised (case, spaces,
underscores and commas do not matter), then by their first synonym ("tench, Tinca tinca" ~
"tench"), and by ImageNet WordNet ids when both sides know them. Names that repeat (ImageNet has
two "crane" classes) are paired in order of appearance and reported as such.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.errors import DecompFileError, DecompValueError

__all__ = ["LabelMatch", "normalise_name", "first_synonym", "is_placeholder_names", "match_label_names",
           "order_from_label_map", "read_label_map", "model_class_index"]

_SEPARATORS = re.compile(r"[\s_,]+")
_PLACEHOLDER = re.compile(r"(\D*?)[_ -]?(\d+)")


@dataclass(frozen=True)
class LabelMatch:
    """``order[j]`` is the model's class index of the dataset's class ``j``.

    ``how`` says what matched ("names", "first synonyms", "wnids", "label map");
    ``ambiguous`` lists names that occur more than once and were paired in order of appearance.
    """

    order: list[int]
    how: str
    ambiguous: list[str] = field(default_factory=list)

    @property
    def is_identity(self) -> bool:
        return self.order == list(range(len(self.order)))

    def moved(self, dataset_names: list[str] | None, model_names: list[str], limit: int = 5) -> list[str]:
        """A few 'dataset name (j) -> model name (i)' lines for the classes that change index."""
        out = []
        for j, i in enumerate(self.order):
            if i != j:
                source = dataset_names[j] if dataset_names else str(j)
                out.append(f"{source} ({j}) -> {model_names[i]} ({i})")
        return out[:limit]


def normalise_name(name: str) -> str:
    """Lower case; runs of spaces, underscores and commas become one space."""
    return _SEPARATORS.sub(" ", str(name).strip().lower()).strip()


def first_synonym(name: str) -> str:
    """The normalised first comma-separated part ("tench, Tinca tinca" -> "tench")."""
    return normalise_name(str(name).split(",")[0])


def is_placeholder_names(names: list[str] | None) -> bool:
    """True for names that only number the classes in order: "0", "1", ...; LABEL_0, LABEL_1, ...; c0, c1, ...

    (one prefix shared by all, then the class index): they say nothing about which class is which.
    """
    if not names:
        return True
    prefixes = set()
    for i, name in enumerate(names):
        found = _PLACEHOLDER.fullmatch(str(name).strip())
        if found is None or int(found.group(2)) != i:
            return False
        prefixes.add(found.group(1).lower())
    return len(prefixes) == 1


def _pair(dataset_keys: list[str], model_keys: list[str]) -> tuple[list[int], list[str]] | None:
    """Each dataset key to an unused model index with the same key (first free one); None if impossible."""
    free: dict[str, list[int]] = {}
    for i, key in enumerate(model_keys):
        free.setdefault(key, []).append(i)
    ambiguous = sorted({k for k, v in free.items() if len(v) > 1} | {k for k, n in Counter(dataset_keys).items() if n > 1})
    order = []
    for key in dataset_keys:
        if not free.get(key):
            return None
        order.append(free[key].pop(0))
    return order, ambiguous


def match_label_names(dataset_names: list[str], model_names: list[str], dataset_wnids: list[str] | None = None,
                      model_wnids: list[str] | None = None, *, dataset: str = "the dataset",
                      model: str = "the model") -> LabelMatch:
    """The model index of every dataset class, matching names; a clear error when they are different classes.

    Args:
        dataset_names / model_names: one name per class, in index order.
        dataset_wnids / model_wnids: ImageNet WordNet ids per class, where known (matched first).
        dataset / model: how to call them in the error message.
    """
    attempts = []
    if dataset_wnids is not None and model_wnids is not None:
        attempts.append(("wnids", [normalise_name(w) for w in dataset_wnids], [normalise_name(w) for w in model_wnids]))
    attempts.append(("names", [normalise_name(n) for n in dataset_names], [normalise_name(n) for n in model_names]))
    attempts.append(("first synonyms", [first_synonym(n) for n in dataset_names], [first_synonym(n) for n in model_names]))
    if len(dataset_names) == len(model_names):
        for how, dataset_keys, model_keys in attempts:
            paired = _pair(dataset_keys, model_keys)
            if paired is not None:
                return LabelMatch(order=paired[0], how=how, ambiguous=paired[1])
    model_keys = {first_synonym(n) for n in model_names}
    dataset_keys = {first_synonym(n) for n in dataset_names}
    only_dataset = [n for n in dataset_names if first_synonym(n) not in model_keys]
    only_model = [n for n in model_names if first_synonym(n) not in dataset_keys]
    raise DecompValueError(
        f"{dataset} has {len(dataset_names)} classes but {model} has {len(model_names)}, and their label names "
        f"differ: only in the dataset {_shorten(only_dataset)}; only in the model {_shorten(only_model)}. "
        f"Decompose a model trained on this dataset, or state which dataset class is which model class with "
        f"--label-map FILE.json (label_map=...: {{\"dataset name\": \"model name\"}} or {{\"3\": 0}})."
        if len(dataset_names) != len(model_names) else
        f"The label names of {dataset} are not those of {model}: only in the dataset {_shorten(only_dataset)}; "
        f"only in the model {_shorten(only_model)}. State which dataset class is which model class with "
        f"--label-map FILE.json (label_map=...: {{\"dataset name\": \"model name\"}} or {{\"3\": 0}})."
    )


def _shorten(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{f', ... ({len(names)} in all)' if len(names) > limit else ''}]"


def read_label_map(path: str | Path) -> dict:
    """The JSON object of a ``--label-map`` file."""
    path = Path(path)
    if not path.is_file():
        raise DecompFileError(f"--label-map file {str(path)!r} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DecompValueError(f"--label-map file {str(path)!r} is not valid JSON ({e}); write an object such as "
                               f"{{\"dataset name\": \"model name\"}} or {{\"3\": 0}}.") from e
    if not isinstance(data, dict) or not data:
        raise DecompValueError(f"--label-map file {str(path)!r} must hold a non-empty JSON object "
                               f"(dataset label -> model label), not {type(data).__name__}.")
    return data


def _resolve(value, names: list[str] | None, count: int | None, side: str) -> int:
    """A label given by name or index -> its index on ``side`` ("dataset" / "model")."""
    if isinstance(value, bool):
        raise DecompValueError(f"--label-map: {value!r} is not a {side} label (give a name or an index)")
    if isinstance(value, str) and names is not None:
        wanted = normalise_name(value)
        hits = [i for i, n in enumerate(names) if normalise_name(n) == wanted]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DecompValueError(f"--label-map: {value!r} names {len(hits)} {side} classes {hits}; use their indices")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if count is not None and not 0 <= index < count:
            raise DecompValueError(f"--label-map: {side} index {index} is outside [0, {count})")
        return index
    known = f"; its names start {names[:10]}" if names else ""
    raise DecompValueError(f"--label-map: {value!r} is not a {side} label name or index{known}")


def order_from_label_map(label_map: dict, dataset_names: list[str] | None, model_names: list[str]) -> dict[int, int]:
    """{dataset index: model index} from a ``{dataset label: model label}`` map (names or indices).

    With dataset names, every dataset class must be mapped; two dataset classes may not share a model class.
    """
    mapping = {}
    for key, value in label_map.items():
        j = _resolve(key, dataset_names, len(dataset_names) if dataset_names else None, "dataset")
        i = _resolve(value, model_names, len(model_names), "model")
        if j in mapping and mapping[j] != i:
            raise DecompValueError(f"--label-map maps dataset class {key!r} twice")
        mapping[j] = i
    targets = list(mapping.values())
    doubled = sorted({model_names[i] for i in targets if targets.count(i) > 1})
    if doubled:
        raise DecompValueError(f"--label-map sends several dataset classes to the model classes {doubled}; "
                               f"each model class can take one dataset class")
    if dataset_names:
        missing = [n for j, n in enumerate(dataset_names) if j not in mapping]
        if missing:
            raise DecompValueError(f"--label-map does not say which model class the dataset classes "
                                   f"{_shorten(missing)} are; map every dataset class")
    return mapping


def model_class_index(value, label_names: list[str]) -> int:
    """A class of the model given by its exact label name or by its index (an int or a digit string)."""
    if isinstance(value, str) and not value.isdigit():
        if value not in label_names:
            close = [n for n in label_names if value.lower() in n.lower()][:5]
            raise DecompValueError(f"class {value!r} is not one of the model's labels{'; close: ' + str(close) if close else ''}")
        return label_names.index(value)
    if not 0 <= int(value) < len(label_names):
        raise DecompValueError(f"class index {value} is outside the model's {len(label_names)} classes")
    return int(value)
