"""Patient-level splits: a patient is never on both sides of a train/test split.

A patient may come with several kinds of data (its labelled ED/ES frames and its
whole cine); every kind is keyed by the same patient id, and every split is made
on patient ids, then checked by :func:`check_disjoint`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError


def stratified_folds(groups: Mapping[str, str], n_folds: int, seed: int = 0,
                     spread: Sequence[str] = ()) -> list[list[str]]:
    """``n_folds`` lists of patient ids, each pathology group dealt evenly over the folds.

    ``groups`` maps patient id -> group. Patients in ``spread`` (e.g. those with a whole
    cine) are dealt first, one per fold, so each fold holds at most one of them while
    there are enough folds. Within a group the order is a seeded shuffle; dealing goes on
    round-robin across groups, so fold sizes differ by at most one.
    """
    if n_folds < 2 or n_folds > len(groups):
        raise InputError(f"{n_folds} folds for {len(groups)} patients: choose 2..{len(groups)} folds.")
    unknown = sorted(set(spread) - set(groups))
    if unknown:
        raise InputError(f"Patients {', '.join(unknown)} are to be spread over folds but have no group.")
    rng = np.random.default_rng([int(seed), 11])
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    k = 0
    order = sorted(set(groups.values()), key=lambda g: (-sum(1 for p in spread if groups[p] == g), g))
    for group in order:
        first = sorted(p for p in spread if groups[p] == group)
        rest = sorted(p for p, g in groups.items() if g == group and p not in spread)
        for pid in first + [rest[i] for i in rng.permutation(len(rest))]:
            folds[k % n_folds].append(pid)
            k += 1
    return folds


def check_disjoint(train: Iterable[str], test: Iterable[str], what: str = "split") -> None:
    """Raise :class:`InputError` when a patient id is on both sides."""
    both = sorted(set(train) & set(test))
    if both:
        raise InputError(f"Patients {', '.join(both)} are on both sides of the {what}; a patient's "
                         "data (ED/ES frames and whole cine alike) must stay on one side.")
