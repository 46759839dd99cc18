"""Objective of examples/quadratic.toml: the minimum is at x = 2."""


def objective(params):
    # `params` holds the values optspec suggested for this trial, by parameter name.
    return (params["x"] - 2) ** 2
