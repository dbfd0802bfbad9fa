"""The per-split summary table printed by `xfd-shard`, `xfd-shard --verify` and the demo."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SplitReport:
    split: str
    identities: int | None  # None: an unlabelled split (identities unknown)
    tracklets: int
    frames: int
    shards: int
    bytes: int
    problems: list[str]
    skipped: int = 0


def rows_from_manifests(manifests: dict[str, dict]) -> list[SplitReport]:
    """Summary rows straight from freshly written manifests (no re-reading of shards)."""
    rows = []
    for split in sorted(manifests):
        totals = manifests[split]["totals"]
        skipped = manifests[split]["skipped"]["count"]
        rows.append(SplitReport(split, totals["identities"], totals["samples"], totals["frames"], totals["shards"],
                                totals["bytes"], [], skipped))
    return rows


def format_summary(rows: list[SplitReport]) -> str:
    """A per-split table: identities, tracklets, frames, shards, bytes."""
    header = f"{'split':<34} {'ids':>5} {'tracklets':>9} {'frames':>8} {'shards':>6} {'MB':>9}  status"
    lines = [header, "-" * len(header)]
    for row in rows:
        status = f"{len(row.problems)} problem(s)" if row.problems else "ok"
        if row.skipped:
            status += f" ({row.skipped} tracklets skipped by --on-error skip)"
        if row.identities is None:
            status += " (unlabelled)"
        identities = "-" if row.identities is None else row.identities
        lines.append(f"{row.split:<34} {identities:>5} {row.tracklets:>9} {row.frames:>8} {row.shards:>6} "
                     f"{row.bytes / 1e6:>9.2f}  {status}")
    totals = SplitReport("total", 0, *(sum(getattr(r, f) for r in rows) for f in ("tracklets", "frames", "shards", "bytes")), [])
    lines.append(f"{'total':<34} {'':>5} {totals.tracklets:>9} {totals.frames:>8} {totals.shards:>6} {totals.bytes / 1e6:>9.2f}")
    return "\n".join(lines)
