"""`ragtune quickstart` with a setting the command line does not offer: another seed (the hold-out split, the sample
of training pairs and the training's own randomness), another cap on the `--docs` training pairs, another batch size
(in-batch negatives grow with it), or another temperature for the training loss (`ragtune finetune --temperature`).
Measures how far a result moves from one run of the same recipe to the next. Every step runs in this process.

    python bench/bench_quickstart_variant.py --seed 43 -- --docs /tmp/scifact-docs --out /tmp/qs/scifact-seed43 \
        --epochs 1 --generator none

then score the run on real questions with `bench/bench_selection.py`.
"""

from __future__ import annotations

import argparse
import functools
import sys

import ragtune.quickstart
from ragtune.cli import app
from ragtune.quickstart import pipeline
from ragtune.training import finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-pairs", type=int, default=pipeline.DOCS_TRAIN_PAIRS)
    parser.add_argument("--batch-size", type=int, default=pipeline.QuickstartConfig.batch_size)
    parser.add_argument("--temperature", type=float, default=None, help="default: the loss's own")
    args, quickstart_args = parser.parse_known_args()
    pipeline.DOCS_TRAIN_PAIRS = args.train_pairs
    if args.temperature is not None:  # the quickstart imports FinetuneConfig from its module when it trains
        with_temperature = functools.partial(finetune.FinetuneConfig, temperature=args.temperature)
        finetune.FinetuneConfig = with_temperature  # type: ignore[misc]
    with_settings = functools.partial(pipeline.QuickstartConfig, seed=args.seed, batch_size=args.batch_size)
    ragtune.quickstart.QuickstartConfig = with_settings  # type: ignore[misc]
    sys.argv = ["ragtune", "quickstart", *[a for a in quickstart_args if a != "--"], "--in-process"]
    app()


if __name__ == "__main__":
    main()
