"""The trainer examples/training.toml runs for each trial; a stand-in for a real one.

It trains nothing: the "validation loss" is a made-up curve, best near lr = 0.01 and batch size
64. Everything around it is what a real trainer does under optspec:

- it trains on ``--device``, which optspec also put in ``CUDA_VISIBLE_DEVICES`` (a framework
  then sees only that GPU, as device 0);
- it writes a checkpoint into ``--out``, the trial's directory, after every epoch;
- it reports ``{"step": epoch, "val_loss": ...}`` to ``OPTSPEC_RESULTS`` after every epoch, so
  the pruner can stop it early (optspec then terminates the process), and the final metrics
  as a line without ``step``.

Pure standard library; run it by hand with ``python trainer.py --lr 0.01 --out /tmp/t``.
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path


def report(record):
    """Append one JSON line to OPTSPEC_RESULTS (standard output when run by hand)."""
    line = json.dumps(record)
    results = os.environ.get("OPTSPEC_RESULTS")
    if results is None:
        print(line, flush=True)
        return
    with open(results, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--device", default="")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    print(f"training on device {args.device or 'cpu'} (CUDA_VISIBLE_DEVICES={visible!r})")
    args.out.mkdir(parents=True, exist_ok=True)
    floor = (math.log10(args.lr) + 2) ** 2 + 0.2 * abs(math.log2(args.batch_size / 64))
    val_loss = math.inf
    for epoch in range(args.epochs):
        time.sleep(0.05)  # an epoch's work
        val_loss = floor + 2.0 / (epoch + 1)
        checkpoint = {"epoch": epoch, "lr": args.lr, "val_loss": val_loss, "device": args.device}
        (args.out / "checkpoint.json").write_text(json.dumps(checkpoint))
        report({"step": epoch, "val_loss": val_loss})
    report({"val_loss": val_loss, "device": args.device, "epochs": args.epochs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
