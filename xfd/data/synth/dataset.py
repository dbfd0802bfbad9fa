"""Write a whole synthetic dataset: plan, render tracklets in worker processes, publish atomically.

Everything is rendered into a temporary sibling folder of OUT, `synth_truth.json` last; only then is the folder
renamed to OUT (an existing empty OUT, or with `overwrite` a previous xfd-synth output, is replaced). A crash or
Ctrl-C therefore never leaves a half-written dataset under OUT. Tracklets are handed to a process pool longest
first (better balance); each worker writes its own tracklet folder and returns the tracklet's ground truth, which
the parent sorts into a fixed order — so the bytes of every file, `synth_truth.json` included, depend only on
the configuration, not on the number of workers.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from ...atomic import write_json_atomic
from ...parallel import worker_results
from .plan import Person, SynthConfig, build_plan
from .tracklet import RenderSettings, render_tracklet

TRUTH_FILE = "synth_truth.json"
GENERATOR_VERSION = 1


class OutputExistsError(Exception):
    """OUT is not empty and may not (or cannot safely) be replaced."""


@dataclass
class SplitStats:
    identities: set = field(default_factory=set)
    tracklets: int = 0
    frames: int = 0
    bytes: int = 0


@dataclass
class Summary:
    """What was written, for the closing report."""

    splits: dict[str, SplitStats]
    seconds: float
    cpu_seconds: float
    workers: int

    @property
    def frames(self) -> int:
        return sum(stats.frames for stats in self.splits.values())

    @property
    def bytes(self) -> int:
        return sum(stats.bytes for stats in self.splits.values())

    @property
    def tracklets(self) -> int:
        return sum(stats.tracklets for stats in self.splits.values())


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty OUT unless `overwrite`, and even then unless it looks like an xfd-synth output."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a directory")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if not (out / TRUTH_FILE).is_file():
        raise OutputExistsError(f"{out} is not empty and has no {TRUTH_FILE}, so it does not look like an "
                                "xfd-synth output; refusing to delete it even with --overwrite")


def _render(job: tuple) -> dict:
    spec, settings, root = job
    return render_tracklet(spec, settings, root)


def _person_record(person: Person) -> dict:
    return {
        "split": person.split,
        "identity": asdict(person.identity),
        "sessions": {
            str(session): {"date": day.isoformat(), "location": location, "sunny": sun is not None,
                           "outfit": asdict(outfit)}
            for session, (outfit, day, location, sun)
            in enumerate(zip(person.outfits, person.days, person.locations, person.suns), start=1)
        },
    }


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished tmp folder to `out`, replacing an empty or previous output."""
    os.chmod(tmp, 0o755)
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, trash / out.name)
        os.replace(tmp, out)
        shutil.rmtree(trash)
    else:
        os.replace(tmp, out)


def generate(config: SynthConfig, out: str | os.PathLike, workers: int = 1, overwrite: bool = False,
             progress: bool = True) -> Summary:
    """Write the dataset described by `config` to `out`; return what was written."""
    out = Path(out).absolute()
    check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    people, specs = build_plan(config)
    settings = RenderSettings(config.seed, config.jpeg_quality, config.degraded_fraction, config.fps)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        # biggest first: ground tracklets have the largest frames, long ones the most
        jobs = sorted(((spec, settings, str(tmp)) for spec in specs),
                      key=lambda job: (-(job[0].frames * (3 if job[0].platform == "ground" else 1)), job[0].folder))
        records = []
        # the pool is opened before tqdm starts its monitor thread, so no thread is running when workers fork
        with worker_results(_render, jobs, workers) as results, \
                tqdm(total=sum(spec.frames for spec in specs), unit="frame", disable=None if progress else True,
                     desc="xfd-synth") as bar:  # disable=None: a bar on a terminal, none in logs
            for record in results:
                records.append(record)
                bar.update(record["frames"])
        records.sort(key=lambda record: record["folder"])
        write_json_atomic(tmp / TRUTH_FILE, {
            "generator": "xfd-synth",
            "version": GENERATOR_VERSION,
            "config": asdict(config),
            "notes": "Ground truth of the generator, not part of the DetReIDX layout. frame_quality is 1.0 for a "
                     "clean frame and the product of one factor per degradation otherwise (xfd.data.synth.degrade).",
            "identities": {f"{person.pid:04d}": _person_record(person) for person in people},
            "tracklets": records,
        })
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    splits: dict[str, SplitStats] = {}
    for record in records:
        key = record["split"] if record["role"] is None else f"{record['split']}/{record['role']}"
        stats = splits.setdefault(key, SplitStats())
        stats.identities.add(record["pid"])
        stats.tracklets += 1
        stats.frames += record["frames"]
        stats.bytes += record["bytes"]
    return Summary(splits, time.perf_counter() - started, _cpu_seconds() - cpu_started, max(1, workers))


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool's workers once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
