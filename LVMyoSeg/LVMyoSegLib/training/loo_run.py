"""The files of a leave-one-out run folder, named once for the run that writes them
(:func:`LVMyoSegLib.training.experiments.run_loo`) and the commands that read them.

Layout::

    RUN/
      settings.json               the run's settings; ``cases`` lists the held-out cases in order
      fold_<case>.json            the scores of the fold that held ``case`` out; the fold is done once it exists
      fold_<case>/                its checkpoints, wall time, and per scored model (a variant, or
                                  "before"/"after" when fine-tuning) ``labels_<model>.npz``: label map
                                  and probabilities on the input grid
      loo_results.json, loo_table.md, loo_scores.png, loo_examples.png   the summary
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import read_json

_PREDICTIONS = "labels_"  # + model name + ".npz" in a fold's folder


@dataclass(frozen=True)
class LooRun:
    """Paths in the leave-one-out run folder ``folder`` (module doc)."""

    folder: Path

    @property
    def settings(self) -> Path:
        return self.folder / "settings.json"

    @property
    def results(self) -> Path:
        return self.folder / "loo_results.json"

    @property
    def table(self) -> Path:
        return self.folder / "loo_table.md"

    @property
    def scores_figure(self) -> Path:
        return self.folder / "loo_scores.png"

    @property
    def examples_figure(self) -> Path:
        return self.folder / "loo_examples.png"

    def fold_record(self, case: str) -> Path:
        return self.folder / f"fold_{case}.json"

    def fold_dir(self, case: str) -> Path:
        return self.folder / f"fold_{case}"

    def predictions(self, case: str, model: str) -> Path:
        return self.fold_dir(case) / f"{_PREDICTIONS}{model}.npz"

    def saved_predictions(self, case: str) -> dict[str, Path]:
        """Model name -> predictions file of every model the fold of ``case`` saved, by file name."""
        return {p.stem.removeprefix(_PREDICTIONS): p
                for p in sorted(self.fold_dir(case).glob(f"{_PREDICTIONS}*.npz"))}

    def read_settings(self) -> dict[str, Any]:
        """The run's settings; :class:`~LVMyoSegLib.errors.InputError` when there are none to read."""
        return read_json(self.settings, "Is this a leave-one-out run folder? Give the folder "
                                        "`lvmyoseg loo -o` wrote.")

    def read_folds(self, cases: list[str]) -> list[dict[str, Any]]:
        """The records of the finished folds among ``cases``, in that order."""
        return [read_json(self.fold_record(c), "Delete it to run that fold again.")
                for c in cases if self.fold_record(c).is_file()]
