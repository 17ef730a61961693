"""otactl: signed (TUF) firmware and configuration rollouts through canary rings with health gates."""

__version__ = "0.1.0"
