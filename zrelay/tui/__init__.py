"""The ``zrelay tui`` Textual app: the only place zrelay imports textual (import-linter enforces it)."""
