"""xfd.engine: the two-stage CLIP-ReID training run on a DeepSpeed ZeRO engine.

    deepspeed launcher/train.py --deepspeed ds_configs/zero2.json --config xfd_vitl14.yaml --data SHARDS --output RUN

`train.run_training` is the whole run read top to bottom: checks → run folder → stage 1 (cache image features,
learn the identity text prompts) → stage 2 (train the image side) → export. Both stages run the one loop,
`loop.fit`, which owns the step; `stage1` / `stage2` supply batches, losses and hooks. `batching` turns the
config's global batches into micro-batches and accumulation for the world size; `gather` brings every rank's rows
to every rank for the batch losses; `deepspeed_config` merges the engine JSON with what the experiment config
owns (batch sizes, clipping, precision, monitor paths); `checkpoint` saves, resumes, prunes and exports;
`schedule` is the warm-up + cosine LR; `objectives` the two stages' losses; `progress` the rank-0 bar and scalar
logging.
"""
