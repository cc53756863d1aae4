"""Read models: what happened, assembled from the ledger, the event log and Temporal, for the
API, the CLI and operators. Nothing here changes anything."""
