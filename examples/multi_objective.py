"""Objective of examples/multi_objective.toml: a made-up model whose size trades accuracy for speed.

Bigger models are more accurate, slower and use more memory; nothing here is random, so the same
parameters always give the same metrics.
"""

import math


def objective(params):
    width, depth, dropout = params["width"], params["depth"], params["dropout"]
    capacity = math.log2(width) * depth
    accuracy = 1 - math.exp(-capacity / 12) - 0.3 * (dropout - 0.2) ** 2
    return {
        "accuracy": accuracy,  # picked by the first [[study.objectives]]
        "latency_ms": 0.05 * width * depth,  # picked by the second
        "memory_mb": width * depth * 0.06 + 2,  # read by [[constraints]]
    }
