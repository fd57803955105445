"""The plugins family's settings: execute-plugin, install-plugin, update-plugin (``TQ_PLUGIN_*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, PositiveFloat
from tq.settings import TqSettings


class PluginSettings(TqSettings):
    plugin_max_module_bytes: int = Field(
        5_000_000, ge=8, description="largest WASM module install-plugin/update-plugin accept"
    )
    plugin_fuel: int = Field(
        200_000_000, ge=1_000, description="wasmtime fuel per plugin run (about one unit per instruction)"
    )
    plugin_max_memory_bytes: int = Field(
        16 * 1024 * 1024, ge=65_536, description="linear memory a plugin may grow to"
    )
    plugin_timeout_s: PositiveFloat = Field(
        5.0, description="wall-clock limit of a plugin run (epoch interruption)"
    )
    plugin_max_output_bytes: int = Field(1_000_000, ge=1, description="largest output a plugin may return")
    plugin_download_timeout_s: PositiveFloat = Field(
        30.0, description="fetching a plugin's `module_url` over http(s)"
    )


@lru_cache(maxsize=1)
def get_plugin_settings() -> PluginSettings:
    return PluginSettings()
