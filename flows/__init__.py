"""The dialog: one transitions machine per flow, texts in per-language catalogues."""
