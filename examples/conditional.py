"""Objective of examples/conditional.toml: a made-up training loss.

``params`` holds the suggested values and the fixed ``epochs``; ``momentum`` is only present in
trials where ``opt`` is ``"sgd"``. ``noise_floor`` comes from ``args`` in the spec.
"""

import math


def objective(params, noise_floor):
    lr_penalty = (math.log10(params["lr"]) + 2.5) ** 2  # best near lr = 10**-2.5
    batch_penalty = abs(params["batch_size"] - 96) / 256
    optimizer_penalty = 0.05  # adam
    if params["opt"] == "sgd":
        optimizer_penalty = (params["momentum"] - 0.9) ** 2  # only sgd trials have momentum
    return noise_floor + (lr_penalty + batch_penalty + optimizer_penalty) * 20 / params["epochs"]
