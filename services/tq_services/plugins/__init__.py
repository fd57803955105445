"""The plugins family: execute-plugin, install-plugin, update-plugin (``plugins:execute``).

``sandbox`` runs a plugin's WebAssembly module with wasmtime under fuel, memory and wall-clock
limits and offers it only the host capabilities its permission set grants; ``modules`` fetches
and validates a module for install/update; ``handlers`` registers the jobs; ``seed`` compiles and
stores a demo plugin.
"""
