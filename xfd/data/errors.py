"""Errors for bad input data, and the record of what `--on-error skip` skipped.

Every problem names the file (or tracklet) and the rule it broke. Under the default policy (`raise`) the first
problem stops the run; under `skip` the offending tracklet is left out, counted and listed in the manifest, so
nothing is ever lost silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """A problem with an input item: `item` names the file or tracklet, `rule` says what is wrong."""

    def __init__(self, item: str, rule: str):
        super().__init__(f"{item}: {rule}")
        self.item = str(item)
        self.rule = rule

    def __reduce__(self):  # pickled by its fields, so that it crosses process pools intact
        return DataError, (self.item, self.rule)

    def relative_to(self, root: str | os.PathLike | None) -> "DataError":
        """The same error with its item given relative to the dataset root, when it lies under it."""
        if root is None:
            return self
        try:
            relative = Path(self.item).relative_to(root)
        except ValueError:
            return self
        return DataError(relative.as_posix(), self.rule)


ON_ERROR_POLICIES = ("raise", "skip")


@dataclass
class SkipLog:
    """Items left out under `--on-error skip`; written into the manifest."""

    policy: str = "raise"
    skipped: list[dict] = field(default_factory=list)
    root: str | None = None  # items under it are given relative to it (the dataset root)

    def __post_init__(self):
        if self.policy not in ON_ERROR_POLICIES:
            raise ValueError(f"on-error policy must be one of {ON_ERROR_POLICIES}, got {self.policy!r}")

    def handle(self, error: DataError, split: str | None = None) -> None:
        """Re-raise under `raise`; record (with the split it came from, when known) and continue under `skip`.
        Either way the item is named relative to the dataset root."""
        error = error.relative_to(self.root)
        if self.policy == "raise":
            raise error
        self.skipped.append({"item": error.item, "rule": error.rule, "split": split})

    def for_split(self, split: str) -> list[dict]:
        return [record for record in self.skipped if record["split"] == split]

    def as_manifest(self) -> dict:
        ordered = sorted(self.skipped, key=lambda entry: (str(entry["split"]), entry["item"], entry["rule"]))
        return {"policy": self.policy, "count": len(ordered), "items": ordered}
