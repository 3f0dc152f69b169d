"""The AGI handlers, one module per ``agi://host/NAME`` request; the composition root (hotline.agi) builds
them with their dependencies and registers them by name."""
