"""The audit log: append-only, hash-chained, each entry signed by its actor."""
