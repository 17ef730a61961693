"""Signing keys: ed25519 (PyNaCl) in encrypted files, exposed as securesystemslib Signers."""
