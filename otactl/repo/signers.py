"""Signers for the workspace's keys, loaded on first use (one passphrase prompt per key)."""

from __future__ import annotations

from securesystemslib.signer import Signer

import otactl.keys.keyfile as keyfile
from otactl.errors import KeyAccessError
from otactl.workspace import TrustConfig, Workspace


class SignerPool:
    """Key name -> securesystemslib Signer, resolved through the key's URI."""

    def __init__(self, workspace: Workspace | None, trust: TrustConfig,
                 preloaded: dict[str, Signer] | None = None) -> None:
        self.workspace = workspace
        self.trust = trust
        self._cache: dict[str, Signer] = dict(preloaded or {})

    def __repr__(self) -> str:
        return f"SignerPool(loaded={sorted(self._cache)})"

    def add(self, name: str, signer: Signer) -> None:
        self._cache[name] = signer

    def forget(self, name: str) -> None:
        """Drop ``name``'s loaded signer (its key was replaced)."""
        self._cache.pop(name, None)

    def has_private(self, name: str) -> bool:
        if name in self._cache:
            return True
        entry = self.trust.keys.get(name)
        if entry is None:
            return False
        uri = self.workspace.resolve_uri(entry.uri) if self.workspace else entry.uri
        scheme, _, path = uri.partition(":")
        if scheme == keyfile.OWNER_SCHEME:
            return False
        if scheme == keyfile.URI_SCHEME:
            from pathlib import Path

            return Path(path).is_file()
        return True  # KMS/HSM: assume reachable; signing reports otherwise

    def get(self, name: str) -> Signer:
        if name not in self._cache:
            entry = self.trust.key(name)
            uri = self.workspace.resolve_uri(entry.uri) if self.workspace else entry.uri
            if uri.partition(":")[0] == keyfile.OWNER_SCHEME:
                raise KeyAccessError(
                    f"key {name!r}: its private key is not here ({entry.uri}: held by its owner); "
                    f"{name} signs from their own signer workspace",
                    hint="see docs/key-custody.md (`otactl join`, then `otactl release approve` there)")
            try:
                self._cache[name] = Signer.from_priv_key_uri(uri, keyfile.public_key(entry.public))
            except KeyAccessError:
                raise
            except Exception as exc:  # KMS/HSM signers raise their own errors
                raise KeyAccessError(f"key {name!r} ({entry.uri}): cannot load signer: {exc}") from exc
        return self._cache[name]
