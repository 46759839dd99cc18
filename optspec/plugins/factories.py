"""Calling the factories plugins register, with spec options checked against their signatures.

A factory gets the options of its spec table as keyword arguments. Options it cannot take become
spec errors at their TOML path, before any study exists. Context arguments (``seed``,
``search_space``, ``directions``, ``spec``) are passed only to factories that name them, the way
pluggy passes a hook implementation only the arguments it asks for.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from optspec.errors import SpecError
from optspec.util import did_you_mean


class LazyFactory:
    """A factory named ``"module:attr"``, imported on first use.

    The built-in plugins register optuna's classes this way, so listing or validating names
    does not import optuna.
    """

    def __init__(self, target: str) -> None:
        self.target = target

    def resolve(self) -> Any:
        module, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.resolve())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"LazyFactory({self.target!r})"


def call_factory(
    factory: Any,
    options: Mapping[str, Any],
    *,
    table: str,
    name: str,
    context: Mapping[str, Callable[[], Any]] | None = None,
    positional: tuple[Any, ...] = (),
) -> Any:
    """``factory(*positional, **options, **context it asks for)``; bad options are SpecErrors.

    :param table: the TOML path of the options' table (``"sampler"``), for messages.
    :param name: the registered name (``"tpe"``), for messages.
    :param context: values offered to factories that take a parameter of that name, made only
        when taken (a grid of every value can be large).
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have no signature: let the call decide
        signature = None
    kwargs = dict(options)
    if signature is not None:
        parameters = signature.parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        accepted = [
            p.name
            for p in parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ][len(positional) :]
        if not takes_any:
            problems = [
                _unknown_option(table, name, key, accepted)
                for key in options
                if key not in accepted
            ]
            if problems:
                raise SpecError(problems)
        for key, make_value in (context or {}).items():
            if key in parameters and key not in kwargs:
                kwargs[key] = make_value()
    try:
        return factory(*positional, **kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{table}: {name} does not accept these options: {exc}") from None


def _unknown_option(table: str, name: str, key: str, accepted: list[str]) -> str:
    hint = did_you_mean(key, accepted)
    return f"{table}.{key}: not an option of {name}; {hint}valid options: {', '.join(accepted)}"
