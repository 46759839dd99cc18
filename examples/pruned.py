"""Objective of examples/pruned.toml: a fake training loop that optuna may cut short.

Naming a parameter ``trial`` gives the function the optuna.Trial, to report intermediate values.
"""

import math

import optuna

STEPS = 10


def objective(trial, params):
    loss = 1.0
    for step in range(STEPS):
        # A made-up loss curve: it falls faster for lr near 0.1 and a high decay.
        rate = params["decay"] * math.exp(-abs(math.log10(params["lr"]) + 1))
        loss = loss * (1 - 0.5 * rate)
        trial.report(loss, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return loss
