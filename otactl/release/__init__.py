"""Releases: manifests, signed bundles (firmware, variant configs, descriptor), approvals."""
