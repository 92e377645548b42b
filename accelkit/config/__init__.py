from .base import BlockConfig, ConfigError, require

__all__ = ["BlockConfig", "ConfigError", "require"]
