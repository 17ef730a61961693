"""The TUF repository: layout, signing, publication in the safe order, clients."""
