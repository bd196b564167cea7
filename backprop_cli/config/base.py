"""What every section of the schema is built from: a strict pydantic model, the bounded number types, the
tag of a component union, and the error that carries the key path of each problem.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

from backprop_cli.limits import MAX_COUNT, MAX_SEED


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, types are not coerced."""

    # defer_build: each section's validator is built when first used (inside Config's), not at import:
    # about 25 ms less start-up for every command (benchmarks/bench_command.py)
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=False, defer_build=True)






PositiveFloat = Annotated[float, Field(gt=0)]


NonNegFloat = Annotated[float, Field(ge=0)]


Betas = Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)]


# Sizes and counts that torch's int64 arithmetic can hold: larger integers are refused here with one
# line instead of failing deep inside torch (a layer of 10^20 units, a seed of 2^64). A model too large
# for memory is refused before allocation (backprop_cli/core/model.py).
MAX_SIZE = MAX_COUNT


Size = Annotated[int, Field(gt=0, le=MAX_SIZE)]


Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


def name_only(value: Any, default: str) -> Any:
    """``loss: mse`` means ``loss: {name: mse}``; a mapping without ``name`` gets the default one."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and "name" not in value:
        return {"name": default, **value}
    return value


def tags(union: Any) -> tuple[str, ...]:
    """The ``name`` (or ``kind``) literals of a tagged union's members, in order."""
    while typing.get_origin(union) is Annotated:
        union = typing.get_args(union)[0]
    out = []
    for member in typing.get_args(union):
        for key in ("name", "kind"):
            field = member.model_fields.get(key)
            if field is not None:
                out.append(typing.get_args(field.annotation)[0])
                break
    return tuple(out)


class LocatedError(ValueError):
    """Model-level problems, each belonging to a key path: ``[(loc, message, value), ...]``.

    A value of :data:`NO_VALUE` prints no ``(got ...)``.
    """

    def __init__(self, found: list[tuple[tuple, str, Any]]):
        self.found = found
        super().__init__("; ".join(m for _, m, _ in found))


NO_VALUE = object()


def drop_unset(out: dict, keys: tuple[str, ...]) -> dict:
    for key in keys:
        if out.get(key) is None:
            out.pop(key, None)
    return out
