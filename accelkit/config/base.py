"""What every block config shares: self-validation, a stable digest, JSON round trips."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, ClassVar


class ConfigError(ValueError):
    """An impossible parameter. The message names the parameter and what is allowed."""


def require(ok: bool, param: str, allowed: str, got: Any) -> None:
    """Fail with a one-line message naming `param` when `ok` is false."""
    if not ok:
        raise ConfigError(f"{param}={got!r} is invalid: {allowed}")


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """Base of the frozen per-block configs.

    Subclasses are frozen dataclasses whose fields all have defaults; they
    check themselves in `validate()`, called from `__post_init__`.
    """

    block: ClassVar[str] = "block"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden
        pass

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"block": self.block, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        d = dict(d)
        block = d.pop("block", cls.block)
        if block != cls.block:
            raise ConfigError(f"block={block!r} is invalid: this config is for {cls.block!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{unknown[0]}={d[unknown[0]]!r} is invalid: {cls.__name__} has no such parameter")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()
