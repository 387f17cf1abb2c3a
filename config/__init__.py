"""Shipped configuration data (TOML) and the loader that validates it."""

from config.loader import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "load_config"]
