"""The ranks that share one evaluation (exact re-ranking and metrics, `xfd.eval.score`): what crosses between them,
and how a failure ends the run.

A team is either `Solo` (one process: every exchange is the identity) or `RankTeam` (R processes of a
torch.distributed launch: `deepspeed`, `torchrun`; gloo on CPU, NCCL on GPUs). The evaluation code calls the same
methods on both, so one code path serves 1 and R ranks.

RankTeam exchanges only O(N·k) host arrays — partial neighbour lists, column maxima, rank lists and V rows — and
the per-query scores, over a gloo group of its own, even under NCCL: gloo takes a timeout per group, so a
collective never waits forever, and host arrays need no device copies.

Every step of the work ends with a check-in (`step`): each rank tells every other that it finished the step, and
whether it failed. A rank that died or did not arrive within the timeout is named, with the step, in the error every
other rank raises; a rank whose step raised (bad input found in its rows, say) makes every rank raise the same
error. Data collectives run only after a successful check-in, so no rank is left waiting in one.
"""

from __future__ import annotations

import datetime
import hashlib
from contextlib import contextmanager
from typing import Iterator

import numpy as np

DEFAULT_TIMEOUT_S = 1800.0  # as long as torch.distributed's own default: steps of large runs take minutes


class RankFailure(RuntimeError):
    """Another rank died, timed out or failed during a step of a distributed evaluation."""


class Solo:
    """A world of one process."""

    rank = 0
    world = 1

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        yield

    def verify_same(self, digest: str, description: str) -> None:
        pass

    def maximum(self, array: np.ndarray) -> np.ndarray:
        return array

    def gather_rows(self, arrays: list[np.ndarray], bounds: list[int]) -> list[list[np.ndarray]]:
        return [[array] for array in arrays]

    def all_gather(self, arrays: list[np.ndarray]) -> list[list[np.ndarray]]:
        return [[array] for array in arrays]

    def gather_objects(self, item) -> list:
        return [item]


class RankTeam:
    """This process as one of `world` ranks of an initialised torch.distributed process group."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, group=None):
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("RankTeam needs an initialised torch.distributed process group (deepspeed / torchrun)")
        self._dist = dist
        self.timeout_s = float(timeout_s)
        ranks = None if group is None else dist.get_process_group_ranks(group)
        # Collective: every rank of the default group creates it, in the same order.
        self.group = dist.new_group(ranks=ranks, backend="gloo",
                                    timeout=datetime.timedelta(seconds=self.timeout_s))
        self.rank = dist.get_rank(self.group)
        self.world = dist.get_world_size(self.group)
        self._step = "start"

    # --- failure detection -------------------------------------------------------------------------------------

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run one step of local work, then check in with every other rank (see the module docstring)."""
        self._step = name
        failure: BaseException | None = None
        try:
            yield
        except Exception as error:  # reported to the other ranks, then raised here too
            failure = error
        try:
            messages = self._check_in(name, failure)
        except RankFailure:
            if failure is not None:  # this rank's own error says more than the others' absence
                raise failure from None
            raise
        if failure is not None:
            raise failure
        if messages:
            rank, kind, text = messages[0]
            if kind == "ValueError":  # bad input seen by one rank: the same message everywhere
                raise ValueError(text)
            raise RankFailure(f"distributed evaluation, step '{name}': rank {rank} failed: {kind}: {text}")

    def _check_in(self, name: str, failure: BaseException | None) -> list[tuple[int, str, str]]:
        """Exchange a status token with every other rank (each wait bounded by the timeout); then, if any rank
        failed, their messages. Returns [(rank, exception type, message)] of the other ranks that failed."""
        import torch

        dist = self._dist
        status = torch.tensor([0 if failure is None else 1], dtype=torch.int64)
        peers = [r for r in range(self.world) if r != self.rank]
        received = {r: torch.zeros(1, dtype=torch.int64) for r in peers}
        sends, recvs, missing = [], {}, []
        for r in peers:
            peer = dist.get_global_rank(self.group, r)
            try:
                sends.append(dist.isend(status, peer, group=self.group))
                recvs[r] = dist.irecv(received[r], peer, group=self.group)
            except RuntimeError:  # its connection is already closed: it died
                missing.append(r)
        for r, work in recvs.items():
            try:
                work.wait(datetime.timedelta(seconds=self.timeout_s))
            except RuntimeError:  # closed connection (the peer died) or timeout (it is stuck or slow)
                missing.append(r)
        if missing:
            names = ", ".join(map(str, sorted(missing)))
            raise RankFailure(
                f"distributed evaluation, step '{name}': rank(s) {names} did not finish the step within "
                f"{self.timeout_s:g} s (died, stuck or out of memory); rank {self.rank} stops too")
        for work in sends:
            try:
                work.wait(datetime.timedelta(seconds=self.timeout_s))
            except RuntimeError:
                pass  # the peer answered, so it is alive; its own check-in reports any later problem
        if not any(int(t) for t in received.values()) and failure is None:
            return []
        mine = None if failure is None else (self.rank, type(failure).__name__, str(failure))
        reports = self.gather_objects(mine)
        return [report for report in reports if report is not None and report[0] != self.rank]

    # --- agreement on the inputs -------------------------------------------------------------------------------

    def verify_same(self, digest: str, description: str) -> None:
        """Refuse to start unless every rank computed the same `digest` of its inputs."""
        digests = self.gather_objects(digest)
        groups: dict[str, list[int]] = {}
        for rank, value in enumerate(digests):
            groups.setdefault(value, []).append(rank)
        if len(groups) > 1:
            parts = "; ".join(f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))} "
                              f"hold{'' if len(ranks) > 1 else 's'} {'one version' if i == 0 else 'another'}"
                              for i, ranks in enumerate(groups.values()))
            raise ValueError(f"distributed evaluation: the ranks were given different {description} ({parts}); "
                             "every rank must hold the same query and gallery features, dtype and parameters")

    # --- data exchange (only after a successful check-in) ------------------------------------------------------

    def maximum(self, array: np.ndarray) -> np.ndarray:
        """Element-wise maximum over ranks (exact: max does not round)."""
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(array).copy())
        self._collective(lambda: self._dist.all_reduce(tensor, op=self._dist.ReduceOp.MAX, group=self.group))
        return tensor.numpy()

    def gather_rows(self, arrays: list[np.ndarray], bounds: list[int]) -> list[list[np.ndarray]]:
        """Rank o receives rows bounds[o]:bounds[o+1] of every rank's arrays: for each array, the R slices that
        this rank owns, in rank order."""
        import torch

        lo, hi = bounds[self.rank], bounds[self.rank + 1]
        out: list[list[np.ndarray]] = []
        for array in arrays:
            mine = None
            for owner in range(self.world):
                piece = torch.from_numpy(np.ascontiguousarray(array[bounds[owner] : bounds[owner + 1]]))
                into = [torch.empty_like(piece) for _ in range(self.world)] if owner == self.rank else None
                dst = self._dist.get_global_rank(self.group, owner)
                self._collective(lambda: self._dist.gather(piece, into, dst=dst, group=self.group))
                if owner == self.rank:
                    mine = [t.numpy() for t in into]
            assert mine is not None and all(m.shape[0] == hi - lo for m in mine)
            out.append(mine)
        return out

    def all_gather(self, arrays: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Every rank's arrays (lengths may differ along axis 0), in rank order."""
        import torch

        lengths = torch.tensor([a.shape[0] for a in arrays], dtype=torch.int64)
        every = [torch.empty_like(lengths) for _ in range(self.world)]
        self._collective(lambda: self._dist.all_gather(every, lengths, group=self.group))
        out = []
        for position, array in enumerate(arrays):
            sizes = [int(t[position]) for t in every]
            padded = np.zeros((max(sizes),) + array.shape[1:], dtype=array.dtype)
            padded[: array.shape[0]] = array
            tensor = torch.from_numpy(padded)
            parts = [torch.empty_like(tensor) for _ in range(self.world)]
            self._collective(lambda: self._dist.all_gather(parts, tensor, group=self.group))
            out.append([part.numpy()[:size] for part, size in zip(parts, sizes)])
        return out

    def gather_objects(self, item) -> list:
        items: list = [None] * self.world
        self._collective(lambda: self._dist.all_gather_object(items, item, group=self.group))
        return items

    def _collective(self, call) -> None:
        try:
            call()
        except RuntimeError as error:
            raise RankFailure(f"distributed evaluation, step '{self._step}': a collective failed on rank "
                              f"{self.rank}; another rank died or timed out ({error})") from error


def input_digest(*arrays: np.ndarray, settings: dict) -> str:
    """Checksum of the inputs every rank must share: the arrays' bytes, shapes and dtypes, and the settings."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(sorted(settings.items())).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype.str}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
