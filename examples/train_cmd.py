"""The program examples/command.toml runs for each trial; pure standard library.

optspec passes the parameters as arguments (see `command` in the spec) and sets OPTSPEC_RESULTS
to a file where the program appends JSON lines: ``{"step": k, "loss": ...}`` reports an
intermediate value, and a line without "step" holds the final metrics. Without OPTSPEC_RESULTS
(running it by hand), the lines go to standard output instead.
"""

import argparse
import json
import math
import os
import sys

STEPS = 5


def emit(record):
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
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--trial", type=int, default=0)
    args = parser.parse_args(argv)

    loss = 0.0
    for step in range(STEPS):
        # A made-up loss: best near lr = 0.01 and 3 layers, shrinking with every step.
        loss = (math.log10(args.lr) + 2) ** 2 + 0.1 * (args.layers - 3) ** 2 + 1 / (step + 1)
        emit({"step": step, "loss": loss})  # an intermediate value: lets the pruner stop us
    emit({"loss": loss})  # no "step": the final metrics
    return 0


if __name__ == "__main__":
    sys.exit(main())
