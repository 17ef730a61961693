"""The device agent: a TUF client that installs into A/B slots, checks the boot, commits or reverts,
enforces the security_version floor and reports every step as signed reports.

    model.py    the documents it reads (rollout policy, release descriptor) and writes (slot manifest)
    decide.py   pure: which ring and release, which install next (stepping stones, compatibility, floor)
    state.py    the device's state directory (identity, key, slots, active pointer, floor)
    outbox.py   signed reports: numbered, buffered on disk, posted in batches, retried
    health.py   pluggable boot check and health probe (real defaults)
    agent.py    the I/O shell: check_and_update(now)
"""
