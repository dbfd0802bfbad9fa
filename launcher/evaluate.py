"""Evaluate a trained model on a shard root's test protocols: `python launcher/evaluate.py --checkpoint RUN
--data SHARDS --output RUN/eval`. Thin: the work is in `xfd.cli.evaluate` / `xfd.eval.model_eval`."""

import sys

from xfd.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
