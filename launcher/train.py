"""What `deepspeed` launches on every rank: `deepspeed launcher/train.py --deepspeed ds_configs/zero2.json ...`.

Thin on purpose: argument handling and the run live in `xfd.cli.train` / `xfd.engine`. Options:
`python -m xfd.cli.train --help`.
"""

import sys

from xfd.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
