"""wispbot's runtime: the engine that runs turns, the store, the channels, the HTTP app and
the CLI; it builds on ``flows`` and ``integrations`` and nothing imports it back."""
