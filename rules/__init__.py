"""The pure rules: what the contact policy decides, from values alone (no store, no Temporal)."""
