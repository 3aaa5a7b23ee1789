"""The shipped presets (TOML), read with importlib.resources; users copy and edit them."""
