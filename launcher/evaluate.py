"""What `deepspeed` runs on every rank to evaluate a model, or plain `python` on one device:

    deepspeed --num_gpus 2 launcher/evaluate.py --checkpoint RUN --data SHARDS --output RUN/eval [--rerank]
    python launcher/evaluate.py --checkpoint RUN/model.safetensors --data SHARDS --output RUN/eval [--rerank]

Thin on purpose: the work is in `xfd.cli.evaluate` / `xfd.eval.shard_protocols` / `xfd.eval.model_report`. Options:
`python launcher/evaluate.py --help`.
"""

import sys

from xfd.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
