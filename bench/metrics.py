"""Benchmark: streaming exact metrics vs a dense argsort implementation on the same (Q, G) distances.

Distances are plain cosine distances of synthetic ReID features (identities + camera shifts + noise; `--noise`
sets how hard the problem is, and with it how deep each query's farthest match lies, which is what the streaming
form's cost depends on). Both implementations run in this process, best of `--repeat`; the numbers must be
identical.

    python bench/metrics.py                       # Q = 2k, G = 20k
    python bench/metrics.py --queries 500 --gallery 5000 --noise 2.6
"""

from __future__ import annotations

import argparse

import numpy as np

from xfd.eval.metrics import evaluate_distances
from xfd.eval.reference import dense_rank_metrics
from xfd.eval.distance import pairwise
from xfd.eval.synthetic import reid_features

from timing import best_time  # bench/timing.py: scripts run from bench/


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--gallery", type=int, default=20000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--ids", type=int, default=1000)
    p.add_argument("--noise", type=float, nargs="+", default=[1.8, 2.6])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    for noise in args.noise:
        data = reid_features(args.queries, args.gallery, args.dim, args.ids, noise=noise, seed=0)
        dist = pairwise(data.q_feats, data.g_feats, device="cpu")  # (Q, G) float32
        labels = (data.q_pids, data.q_camids, data.g_pids, data.g_camids)
        t_stream, got = best_time(lambda: evaluate_distances(dist, *labels), args.repeat)
        t_dense, ref = best_time(
            lambda: dense_rank_metrics(dist, data.q_pids, data.g_pids, data.q_camids, data.g_camids), args.repeat)
        diff = max(abs(got.mAP - ref["mAP"]), abs(got.mINP - ref["mINP"]), float(np.abs(got.cmc - ref["cmc"]).max()))
        print(f"Q={args.queries} G={args.gallery} noise={noise}: mAP {100 * got.mAP:.2f}%  R1 {100 * got.rank(1):.2f}%"
              f"  mINP {100 * got.mINP:.2f}% | dense argsort {t_dense:.3f} s  streaming {t_stream:.3f} s  "
              f"speed-up {t_dense / t_stream:.1f}x | max |difference| {diff:.1e} "
              f"({'identical' if diff == 0 else 'NOT identical'})", flush=True)


if __name__ == "__main__":
    main()
