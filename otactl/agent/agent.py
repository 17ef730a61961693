"""The device agent's I/O shell around the pure decisions in ``decide``.

One ``check_and_update(now)``: refresh the TUF metadata, read the device's own record and its
model's rollout policy, pick the release for its ring, and walk towards it one verified install at
a time: download the release descriptor, the image for this hardware revision and this variant's
configuration (nothing else), install into the inactive slot, boot-check it, then commit (switch
the active pointer, raise the security floor) or revert. Every step becomes a signed report in the
outbox; ``run_once`` adds a health report and flushes the outbox to the ingest.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_exc
from tuf.ngclient import FetcherInterface, Updater

from otactl.agent import conditions, decide, entitle
from otactl.agent.delta import fetch_image
from otactl.agent.health import BootCheck, BootVerdict, HealthProbe, integrity_check, uptime_probe
from otactl.agent.model import FileRef, ReleaseDescriptor, RolloutPolicy, SlotManifest, check_config
from otactl.agent.outbox import FlushResult, Outbox
from otactl.agent.state import (
    CONFIG_FILE,
    DESCRIPTOR_FILE,
    FIRMWARE_FILE,
    ActivePointer,
    AgentState,
    DeviceState,
    other,
)
from otactl.errors import OtactlError, VerificationError
from otactl.fleet.entitlements import SIGNERS_PATH, Signers
from otactl.fleet.records import DeviceRecord
from otactl.repo import layout
from otactl.repo.client import HttpxFetcher, make_updater, read_small, record_updater
from otactl.rollout.windows import InstallRules
from otactl.telemetry.devices import EnrolledDevice
from otactl.telemetry.report import Event, Transfer, Waiting, format_time

log = logging.getLogger("otactl.agent")
_TUF_ERRORS = (tuf_exc.DownloadError, tuf_exc.RepositoryError, OSError)
_UNREACHABLE = (tuf_exc.DownloadError, OSError)  # the rest: metadata the TUF client refuses


@dataclass(frozen=True)
class CheckResult:
    outcome: str  # stayed | committed | reverted | refused | failed | waiting | unreachable | error
    active: str | None  # the release running after the check
    target: str | None  # the release the device's ring (or pin) asks for
    ring: str | None
    detail: str
    entitlement_problem: str | None = None  # a record whose entitlement was refused (decision 0406)


@dataclass(frozen=True)
class RunResult:
    check: CheckResult
    flush: FlushResult | None


class _Failed(Exception):  # control flow inside one install
    pass


class Agent:
    def __init__(
        self,
        device_dir: Path,
        repo_url: str,
        ingest_url: str | None,
        *,
        fetcher: FetcherInterface | None = None,
        ingest_client: httpx.Client | None = None,
        boot_check: BootCheck = integrity_check,
        health_probe: HealthProbe = uptime_probe,
        max_installs_per_check: int = 4,
        preconditions: Mapping[str, conditions.PreconditionFactory] = conditions.BUILTIN,
    ) -> None:
        self.device = DeviceState(device_dir)
        self.identity = self.device.identity
        self.repo_url = repo_url
        self.ingest_url = ingest_url
        self._own_fetcher = fetcher is None
        self._fetcher = fetcher or HttpxFetcher(timeout=15)
        self._own_client = ingest_client is None
        self._client = ingest_client or httpx.Client(timeout=15)
        self.boot_check = boot_check
        self.health_probe = health_probe
        self.max_installs = max_installs_per_check
        self.preconditions = preconditions  # install precondition checks by name (decision 1202)
        self._install_rules = InstallRules()  # this check's ring's windows and preconditions
        self._zone = "UTC"  # the zone a `timezone: device` window is read in
        self._waiting: Waiting | None = None  # this check's downloaded release waiting for its window
        key = self.device.signing_key()
        self.outbox = Outbox(self.device, key)
        self._public_key = bytes(key.verify_key).hex()
        self._errors = 0  # agent errors since the last health report
        self._last_health: datetime | None = None
        self._ring: str | None = None
        self._saved = ""  # state.json as last read or written (repr)
        self._entitlement_problem: str | None = None  # this check's refused entitlement, if any

    def __repr__(self) -> str:
        return f"Agent({self.identity.device_id!r}, {str(self.device.root)!r})"

    def close(self) -> None:
        if self._own_fetcher and isinstance(self._fetcher, HttpxFetcher):
            self._fetcher.close()
        if self._own_client:
            self._client.close()

    # ------------------------------------------------------------------------------ the loop
    def run_once(self, now: datetime) -> RunResult:
        result = self.check_and_update(now)
        self.report_health(now)
        if self.ingest_url:
            return RunResult(result, self.flush())  # saves the outbox first
        self.outbox.save_if_dirty()
        return RunResult(result, None)

    def flush(self) -> FlushResult:
        if not self.ingest_url:
            raise OtactlError("no ingest URL to send reports to")
        result = self.outbox.flush(self._client, self.ingest_url)
        if result.error:
            self._errors += 1
            log.warning("%s: %d reports kept for later: %s", self.identity.device_id, result.pending, result.error)
        return result

    def installed(self) -> SlotManifest | None:
        return self.device.manifest(self.device.active().slot)

    # ------------------------------------------------------------------------------ one check
    def check_and_update(self, now: datetime) -> CheckResult:
        self._entitlement_problem = None
        self._waiting = None
        result = self._check(now)
        self.outbox.save_if_dirty()
        if self._entitlement_problem is not None:
            result = replace(result, entitlement_problem=self._entitlement_problem)
        return result

    def _check(self, now: datetime) -> CheckResult:
        state = self.device.load_state()
        self._saved = repr(state)
        self._recover(state, now)
        try:
            updater = make_updater(self.device.trust_anchor(), self.repo_url, self.device.tuf_dir, self._fetcher)
            updater.refresh()
            record, remembered = self._record(updater, state)
            state.record = {"variant": record.variant, "region": record.region, "tags": list(record.tags),
                            "public_key": record.public_key, **remembered.to_state()}
            policy_bytes = self._fetch_small(updater, layout.rollout_path(self.identity.model))
            policy = None if policy_bytes is None else RolloutPolicy.from_bytes(
                policy_bytes, layout.rollout_path(self.identity.model))
        except _TUF_ERRORS as exc:
            self._errors += 1
            self._save_state(state)
            return self._result(*_tuf_failure(self.repo_url, exc), None, None)
        except OtactlError as exc:
            self._errors += 1
            self._save_state(state)
            return self._result("error", str(exc), None, None)
        if policy is not None and policy.model != self.identity.model:
            self._errors += 1
            self._save_state(state)
            detail = f"rollout policy is for {policy.model}, not {self.identity.model}"
            return self._result("error", detail, None, None)

        choice = decide.choose_release(policy, self.identity.device_id, frozenset(record.tags), record.pin)
        self._ring = choice.ring
        ring = next((r for r in policy.rings if r.name == choice.ring), None) if policy is not None else None
        self._install_rules = InstallRules() if ring is None else ring.install
        self._zone = "UTC" if policy is None else policy.device_zone(record.region)
        if choice.version is None:
            self._save_state(state)
            return self._result("stayed", choice.why, choice.ring, None)
        floor = max(state.security_floor, policy.min_security_version if policy else 0)
        bad = policy.bad_releases if policy else frozenset()
        outcome, detail = "stayed", choice.why
        try:
            outcome, detail = self._walk(updater, state, record, choice, floor, bad, now)
        except _TUF_ERRORS as exc:
            self._errors += 1
            outcome, detail = _tuf_failure(self.repo_url, exc)
        except OtactlError as exc:
            self._errors += 1
            outcome, detail = "error", str(exc)
        self._save_state(state)
        return self._result(outcome, detail, choice.ring, choice.version)

    def _walk(self, updater: Updater, state: AgentState, record: DeviceRecord, choice: decide.Choice,
              floor: int, bad: frozenset[str], now: datetime) -> tuple[str, str]:
        """Install towards ``choice.version`` (a stepping stone first when one is required)."""
        assert choice.version is not None
        descriptors: dict[str, tuple[ReleaseDescriptor, bytes] | None] = {}
        lookup = self._lookup(updater, descriptors)
        outcome, detail = "stayed", choice.why
        for _ in range(self.max_installs):
            active = self.installed()
            previous = self.device.manifest(other(self.device.active().slot or "b"))
            step = decide.next_step(
                choice.version, model=self.identity.model, hardware_revision=self.identity.hardware_revision,
                variant=record.variant, active=_installed(active), previous=_installed(previous),
                floor=max(floor, state.security_floor), bad=bad, failed_here=state.failed_here, lookup=lookup,
                withdrawn=lambda version: self._withdrawn(updater, version))
            if isinstance(step, decide.Stay):
                if outcome == "stayed" and active is not None and self._withdrawn(updater, active.version):
                    log.warning("%s: %s", self.identity.device_id, step.reason)
                return (outcome, detail) if outcome != "stayed" else ("stayed", step.reason)
            if isinstance(step, decide.Refuse):
                self._notice_once(state, f"refused:{step.version}:{record.variant}:{step.reason}", record,
                                  step.version, Event.FAILED, now, step.reason)
                return "refused", step.reason
            cached = descriptors.get(step.descriptor.version)
            assert cached is not None
            outcome, detail = self._install(updater, state, record, step, cached[1], now)
            if outcome != "committed":
                break
        return outcome, detail

    def _result(self, outcome: str, detail: str, ring: str | None, target: str | None) -> CheckResult:
        active = self.installed()
        if outcome in ("unreachable", "error"):
            log.warning("%s: %s", self.identity.device_id, detail)
        return CheckResult(outcome, None if active is None else active.version, target, ring, detail)


    def _record(self, updater: Updater, state: AgentState) -> tuple[DeviceRecord, entitle.Remembered]:
        """The device's record with the variant and features it may act on (decision 0406): from the
        verified entitlement, or, when the record's entitlement fails, the ones it accepted before
        (the failure is logged and counted as an error in the next health report)."""
        path = layout.device_path(self.identity.device_id)
        data = read_small(record_updater(updater, self.repo_url, self.identity.device_id, self.device.tuf_dir,
                                         self._fetcher), path)
        if data is None:
            raise VerificationError(f"{path}: this device is not in the fleet (no signed record)")
        record = DeviceRecord.from_bytes(data, path)
        mine = (self.identity.device_id, self.identity.model, self.identity.hardware_revision, self._public_key)
        theirs = (record.device_id, record.model, record.hardware_revision, record.public_key)
        if mine != theirs:
            raise VerificationError(f"{path}: the record (id, model, hardware revision, public key) does not "
                                    "describe this device")
        signers_bytes = self._fetch_small(updater, SIGNERS_PATH)
        signers = None if signers_bytes is None else Signers.from_bytes(signers_bytes, SIGNERS_PATH)
        verdict = entitle.judge(record, signers, entitle.Remembered.from_state(state.record),
                                public_key=self._public_key)
        if verdict.problem is not None:
            self._errors += 1
            self._entitlement_problem = verdict.problem
            log.warning("%s: %s", self.identity.device_id, verdict.problem)
        return verdict.record, verdict.remembered

    def _fetch_small(self, updater: Updater, path: str) -> bytes | None:
        """A small verified target (record, policy, descriptor), from ngclient's cache when current."""
        return read_small(updater, path)

    def _withdrawn(self, updater: Updater, version: str) -> str | None:
        """The reason in the release's signed withdrawal, or None. Metadata the TUF client refuses
        (a ``withdrawals`` role not signed by the release managers' threshold) raises: no install."""
        info = updater.get_targetinfo(layout.withdrawal_path(self.identity.model, version))
        if info is None:
            return None
        return str(layout.get_custom(info).get("reason") or "no reason given")

    def _withdrawn_before_commit(self, version: str) -> str | None:
        """Checked again, on fresh metadata, after the boot check and before the commit: a release
        withdrawn while this device tried it is not committed. An unreachable repository commits on
        the view this check started with; metadata the client refuses does not commit."""
        try:
            updater = make_updater(self.device.trust_anchor(), self.repo_url, self.device.tuf_dir, self._fetcher)
            updater.refresh()
            return self._withdrawn(updater, version)
        except _UNREACHABLE as exc:
            log.warning("%s: could not re-check %s for a withdrawal before committing it (%s); committing on "
                        "the metadata this check verified", self.identity.device_id, version, exc)
            return None
        except tuf_exc.RepositoryError as exc:
            return f"the repository's metadata was refused while re-checking before the commit: {exc}"

    def _lookup(self, updater: Updater, memo: dict[str, tuple[ReleaseDescriptor, bytes] | None]
                ) -> Callable[[str], ReleaseDescriptor | None]:
        def lookup(version: str) -> ReleaseDescriptor | None:
            if version not in memo:
                path = layout.release_path(self.identity.model, version)
                data = self._fetch_small(updater, path)
                memo[version] = None if data is None else (ReleaseDescriptor.from_bytes(data, path), data)
            found = memo[version]
            return None if found is None else found[0]
        return lookup

    # ------------------------------------------------------------------------------ install
    def _install(self, updater: Updater, state: AgentState, record: DeviceRecord, step: decide.Install,
                 descriptor_bytes: bytes, now: datetime) -> tuple[str, str]:
        desc = step.descriptor
        version, variant = desc.version, record.variant
        ring = self._ring
        self._notice_once(state, f"offered:{version}:{variant}", record, version, Event.OFFERED, now,
                          f"stepping stone to {step.target}" if step.is_stone else None)
        pointer = self.device.active()
        current = pointer.slot
        slot = other(current) if current else "a"
        fw_ref, cfg_ref = desc.firmware[self.identity.hardware_revision], desc.configs[variant]
        slot_dir = self.device.slot_dir(slot)
        if not _staged(slot_dir, fw_ref, cfg_ref, descriptor_bytes):  # downloaded while waiting: not again
            try:
                slot_dir = self.device.clear_slot(slot)
                transfer = self._fetch_image(updater, desc, fw_ref, current, slot_dir / FIRMWARE_FILE)
                self._download(updater, cfg_ref, slot_dir / CONFIG_FILE)
                check_config((slot_dir / CONFIG_FILE).read_bytes(), cfg_ref.target, model=desc.model,
                             version=version, variant=variant)
                (slot_dir / DESCRIPTOR_FILE).write_bytes(descriptor_bytes)
                _fsync_dir(slot_dir, (FIRMWARE_FILE, CONFIG_FILE, DESCRIPTOR_FILE))
            except (_Failed, VerificationError, *_TUF_ERRORS) as exc:
                self._errors += 1
                self.device.clear_slot(slot)
                reason = f"download of {version} failed: {exc}"
                self._notice_once(state, f"failed:{version}:{variant}", record, version, Event.FAILED, now, reason)
                return "failed", reason
            self._event(record, version, ring, Event.DOWNLOADED, now, transfer=transfer)
        wait = self._install_wait(now, current)
        if wait is not None:  # downloaded and verified; installs inside its window (decision 1202)
            log.info("%s: %s waiting: %s", self.identity.device_id, version, wait)
            self._waiting = Waiting(version, wait)
            return "waiting", f"{version} downloaded, waiting: {wait}"
        manifest = SlotManifest(desc.model, version, variant, self.identity.hardware_revision,
                                desc.security_version, fw_ref, cfg_ref, format_time(now))
        self.device.write_manifest(slot, manifest)
        self._event(record, version, ring, Event.INSTALLED, now)
        self.device.set_active(ActivePointer(slot, trial=True, previous=current))
        self.outbox.save()
        try:
            verdict = self.boot_check(slot_dir, manifest)
        except Exception as exc:  # noqa: BLE001 - a crashing health check is a failed boot
            verdict = BootVerdict(False, f"boot check crashed: {type(exc).__name__}: {exc}")
        if not verdict.ok:
            reason = f"boot check failed: {verdict.reason}"
            self.device.set_active(ActivePointer(current))
            self.device.clear_slot(slot)
            state.failed_here[version] = str(verdict.reason)
            self._save_state(state)
            self._event(record, version, ring, Event.REVERTED, now, reason)
            return "reverted", reason
        self._event(record, version, ring, Event.BOOTED, now)
        withdrawn = self._withdrawn_before_commit(version)
        if withdrawn is not None:
            reason = f"not committed: {version} was withdrawn while this device tried it ({withdrawn})"
            log.warning("%s: %s", self.identity.device_id, reason)
            self.device.set_active(ActivePointer(current))
            self.device.clear_slot(slot)
            self._save_state(state)
            self._event(record, version, ring, Event.REVERTED, now, reason)
            return "reverted", reason
        self.device.set_active(ActivePointer(slot))
        state.security_floor = max(state.security_floor, desc.security_version)
        state.notices = [n for n in state.notices if not n.endswith(f":{version}:{variant}")]
        self._save_state(state)
        self._event(record, version, ring, Event.COMMITTED, now)
        return "committed", f"committed {version} ({variant}) in slot {slot}"

    def _install_wait(self, now: datetime, current: str | None) -> str | None:
        """Why the device may not install now (None: it may). A factory-empty device installs at once:
        nothing runs that an install could interrupt (decision 1202)."""
        rules = self._install_rules
        if not rules or current is None or self.device.manifest(current) is None:
            return None
        checks = conditions.build(rules.preconditions, self.device.root, self.preconditions)
        return conditions.install_gate(rules, checks, now, self._zone)

    def _fetch_image(self, updater: Updater, desc: ReleaseDescriptor, ref: FileRef, current: str | None,
                     dest: Path) -> Transfer:
        """The image into ``dest``: rebuilt from a signed delta on the active slot's image, else in full."""
        active = None if current is None or self.device.manifest(current) is None else current
        source = None if active is None else self.device.slot_dir(active) / FIRMWARE_FILE
        fetched = fetch_image(updater, ref, desc.deltas.get(self.identity.hardware_revision, ()), source, dest,
                              lambda: self._download(updater, ref, dest), self._received)
        return fetched.transfer

    def _received(self) -> int | None:
        count = getattr(self._fetcher, "bytes_received", None)
        return count if isinstance(count, int) else None

    def _download(self, updater: Updater, ref: FileRef, dest: Path) -> None:
        info = updater.get_targetinfo(ref.target)
        if info is None:
            raise _Failed(f"{ref.target} is not a published target")
        if info.length != ref.length or info.hashes.get("sha256") != ref.sha256:
            raise _Failed(f"{ref.target}: the release descriptor and the signed targets metadata disagree")
        updater.download_target(info, str(dest))

    # ------------------------------------------------------------------------------ recovery
    def _recover(self, state: AgentState, now: datetime) -> None:
        """After a restart: finish what a power cut interrupted (what a bootloader would do)."""
        pointer = self.device.active()
        if pointer.trial:
            tried = self.device.manifest(pointer.slot)
            self.device.set_active(ActivePointer(pointer.previous))
            if tried is not None:
                reason = "interrupted during its trial boot"
                state.failed_here[tried.version] = reason
                if state.record is not None:
                    self._event(self._cached_record(state), tried.version, None, Event.REVERTED, now,
                                f"boot check failed: {reason}")
            if pointer.slot is not None:
                self.device.clear_slot(pointer.slot)
        active = self.installed()
        if active is not None and active.security_version > state.security_floor:
            state.security_floor = active.security_version  # committed, but the floor was not yet saved
        self._save_state(state)

    def _save_state(self, state: AgentState) -> None:
        """Write state.json when it changed since it was read (every write costs an fsync)."""
        if repr(state) != self._saved:
            self.device.save_state(state)
            self._saved = repr(state)

    def _cached_record(self, state: AgentState) -> DeviceRecord:
        rec = state.record or {}
        return DeviceRecord(self.identity.device_id, self.identity.model, self.identity.hardware_revision,
                            str(rec["variant"]), str(rec["region"]), tuple(rec.get("tags", ())),
                            str(rec["public_key"]), features=tuple(rec.get("features", ())))

    # ------------------------------------------------------------------------------ reports
    def _event(self, record: DeviceRecord, release: str, ring: str | None, event: Event, now: datetime,
               reason: str | None = None, transfer: Transfer | None = None) -> None:
        log.info("%s: %s %s%s", self.identity.device_id, event.value, release, f" ({reason})" if reason else "")
        self.outbox.event(EnrolledDevice.from_record(record), release, ring, event, now, reason, transfer)

    def _notice_once(self, state: AgentState, key: str, record: DeviceRecord, release: str, event: Event,
                     now: datetime, reason: str | None) -> None:
        if key in state.notices:
            return
        state.notices = [*state.notices[-63:], key]
        self._event(record, release, self._ring, event, now, reason)

    def report_health(self, now: datetime) -> bool:
        """Queue one health report (counters since the previous one); False if nothing is installed."""
        state = self.device.load_state()
        active = self.installed()
        if active is None or state.record is None:
            return False
        sample = self.health_probe(active, self._last_health, now)
        self._last_health = now
        record = self._cached_record(state)
        try:
            self.outbox.health(EnrolledDevice.from_record(record), active.version, self._ring, now,
                               uptime_s=sample.uptime_s, crashes=sample.crashes, errors=sample.errors + self._errors,
                               metrics=dict(sample.metrics), waiting=self._waiting)
        except ValueError as exc:  # a probe's sample the report format cannot carry (a metric name, a float)
            log.error("%s: health report not sent: %s", self.identity.device_id, exc)
            self._errors += 1
            return False
        self._errors = 0
        return True  # saved by the next flush or run_once


def _installed(manifest: SlotManifest | None) -> decide.Installed | None:
    if manifest is None:
        return None
    return decide.Installed(manifest.version, manifest.variant, manifest.security_version)


def _staged(slot_dir: Path, firmware: FileRef, config: FileRef, descriptor: bytes) -> bool:
    """The slot (no manifest yet) holds exactly this release's verified download."""
    try:
        if (slot_dir / DESCRIPTOR_FILE).read_bytes() != descriptor:
            return False
        for name, ref in ((FIRMWARE_FILE, firmware), (CONFIG_FILE, config)):
            with open(slot_dir / name, "rb") as fh:
                if os.fstat(fh.fileno()).st_size != ref.length or \
                        hashlib.file_digest(fh, "sha256").hexdigest() != ref.sha256:
                    return False
    except OSError:
        return False
    return True


def _fsync_dir(directory: Path, names: tuple[str, ...]) -> None:
    for name in names:
        fd = os.open(directory / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tuf_failure(url: str, exc: Exception) -> tuple[str, str]:
    if isinstance(exc, _UNREACHABLE):
        return "unreachable", f"{url}: {type(exc).__name__}: {exc}"
    return "error", f"{url}: refused by the TUF client: {type(exc).__name__}: {exc}"
