"""What a command needs from its workspace: trust config, store, signers, clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from otactl.repo.repository import Repository
from otactl.repo.signers import SignerPool
from otactl.store.base import BlobStore
from otactl.workspace import TrustConfig, Workspace


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Context:
    workspace: Workspace
    trust: TrustConfig
    store: BlobStore
    signers: SignerPool
    now: datetime

    @classmethod
    def open(cls, path: Path | str = ".", now: datetime | None = None) -> Context:
        ws = Workspace.open(path)
        trust = ws.trust()
        return cls(ws, trust, ws.store(), SignerPool(ws, trust), now or utcnow())

    def repository(self) -> Repository:
        return Repository.load(self.store, self.trust, self.signers, self.now)
