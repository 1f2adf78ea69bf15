"""wispbot: the runtime (channels, engine, sessions, handoff, HTTP app, CLI)."""
