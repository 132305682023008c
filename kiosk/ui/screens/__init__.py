"""One screen = one .py (what it shows, from the engine's view) + one .kv (layout, bindings)."""
