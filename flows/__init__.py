"""The dialog: its vocabulary, ports, settings slice, flows (one transitions machine each),
the entry point ``flows.dialog`` and the texts; it imports nothing from ``bot``, only
``integrations`` below it."""
