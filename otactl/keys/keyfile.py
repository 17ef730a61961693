"""Encrypted private key files and the ``otactl-file:`` securesystemslib Signer.

File format (JSON, mode 0600)::

    {"schema": "otactl/private-key/1", "name": "ci", "keyid": "...", "public": "<hex>",
     "kdf": {"name": "argon2id", "opslimit": 2, "memlimit": 67108864, "salt": "<hex>"},
     "cipher": "xsalsa20poly1305", "box": "<hex nonce+ciphertext>"}

The secret key is sealed with libsodium's secret box under a key derived from the passphrase by
Argon2id. The passphrase comes from ``OTACTL_KEY_PASSPHRASE_<NAME>`` (name upper-cased, ``-`` → ``_``),
else ``OTACTL_KEY_PASSPHRASE``, else an interactive prompt on a TTY.

A public-key file (``NAME.pub``, what a release manager hands to whoever runs ``otactl init``)::

    {"schema": "otactl/public-key/1", "name": "alice", "keyid": "...", "public": "<hex>"}

A key held by its owner elsewhere (another machine, a token) is named in a trust file by the URI
``otactl-owner:NAME``: nothing on this machine can sign with it (decision 1105).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils
from securesystemslib.signer import SecretsHandler, Signature, Signer, SSlibKey

from otactl.errors import KeyAccessError

SCHEMA = "otactl/private-key/1"
PUBLIC_SCHEMA = "otactl/public-key/1"
URI_SCHEME = "otactl-file"
OWNER_SCHEME = "otactl-owner"  # the private key is with its owner, not here (decision 1105)
_KDF = nacl.pwhash.argon2id
# libsodium's "interactive" Argon2id profile (64 MiB, 2 passes): OWASP-level for an offline file.
OPSLIMIT = _KDF.OPSLIMIT_INTERACTIVE
MEMLIMIT = _KDF.MEMLIMIT_INTERACTIVE
_PUBLIC_KEY_BYTES = 32  # ed25519


def public_key(verify_key_hex: str) -> SSlibKey:
    from securesystemslib.signer._utils import compute_default_keyid

    keyval = {"public": verify_key_hex}
    keyid = compute_default_keyid("ed25519", "ed25519", keyval)
    return SSlibKey(keyid, "ed25519", "ed25519", keyval)


def passphrase_env_names(name: str) -> list[str]:
    specific = "OTACTL_KEY_PASSPHRASE_" + name.upper().replace("-", "_").replace(".", "_")
    return [specific, "OTACTL_KEY_PASSPHRASE"]


def get_passphrase(name: str, *, confirm: bool = False) -> str:
    for var in passphrase_env_names(name):
        value = os.environ.get(var)
        if value:
            return value
    if not sys.stdin.isatty():
        raise KeyAccessError(
            f"key {name!r}: no passphrase (set OTACTL_KEY_PASSPHRASE or "
            f"{passphrase_env_names(name)[0]}; no TTY to prompt on)"
        )
    return prompt_passphrase(f"key {name!r}", confirm=confirm)


def prompt_passphrase(label: str, *, confirm: bool = False) -> str:
    """Ask on the TTY (the caller has checked there is one and that no variable applies)."""
    import getpass

    first = getpass.getpass(f"Passphrase for {label}: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise KeyAccessError(f"{label}: passphrases do not match")
    if not first:
        raise KeyAccessError(f"{label}: empty passphrase")
    return first


@dataclass(frozen=True, repr=False)
class KeyFile:
    """A parsed (still encrypted) key file."""

    path: Path
    name: str
    public: SSlibKey
    doc: dict[str, Any]

    def __repr__(self) -> str:
        return f"KeyFile({self.path}, keyid={self.public.keyid[:12]})"

    def unlock(self, passphrase: str) -> nacl.signing.SigningKey:
        kdf = self.doc["kdf"]
        try:
            key = _KDF.kdf(
                nacl.secret.SecretBox.KEY_SIZE,
                passphrase.encode(),
                bytes.fromhex(kdf["salt"]),
                opslimit=int(kdf["opslimit"]),
                memlimit=int(kdf["memlimit"]),
            )
            seed = nacl.secret.SecretBox(key).decrypt(bytes.fromhex(self.doc["box"]))
        except nacl.exceptions.CryptoError:
            raise KeyAccessError(f"{self.path}: wrong passphrase (or the file was altered)") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise KeyAccessError(f"{self.path}: corrupt key file ({exc})") from None
        try:
            signing = nacl.signing.SigningKey(seed)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise KeyAccessError(f"{self.path}: corrupt key file (the sealed seed is not an ed25519 key)") from None
        if signing.verify_key.encode().hex() != self.public.keyval["public"]:
            raise KeyAccessError(f"{self.path}: private key does not match its public key")
        return signing


def read_keyfile(path: Path) -> KeyFile:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyAccessError(f"{path}: key file not found") from None
    except OSError as exc:
        raise KeyAccessError(f"{path}: cannot read key file: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ValueError("not an otactl private key")
        name = _text(doc, "name")
        public = _text(doc, "public")
        if not _is_hex(public, _PUBLIC_KEY_BYTES):
            raise ValueError("public: must be an ed25519 public key, 64 hex digits")
        pub = public_key(public)
        if pub.keyid != doc.get("keyid"):
            raise ValueError("keyid does not match the public key")
        _check_sealed(doc)
    except RecursionError:
        raise KeyAccessError(f"{path}: not an otactl key file (JSON nested too deeply)") from None
    except (ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise KeyAccessError(f"{path}: not an otactl key file ({' '.join(str(exc).split())})") from None
    return KeyFile(path, name, pub, doc)


def _text(doc: dict[str, Any], field: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: must be a string")
    return value


def _is_hex(value: Any, size: int | None = None) -> bool:
    if not isinstance(value, str) or not value or len(value) % 2:
        return False
    try:
        data = bytes.fromhex(value)
    except ValueError:
        return False
    return size is None or len(data) == size


def _check_sealed(doc: dict[str, Any]) -> None:
    """The KDF and the sealed box, within libsodium's bounds, before any Argon2id work.

    A tampered file must not make ``unlock`` run Argon2id for hours or ask for terabytes: the cost
    is bounded by libsodium's "sensitive" profile (1 GiB, 4 passes), the most any otactl key uses.
    """
    kdf = doc.get("kdf")
    if not isinstance(kdf, dict):
        raise ValueError("kdf: must be an object")
    if kdf.get("name") != "argon2id":
        raise ValueError(f"kdf.name: {kdf.get('name')!r:.40} is not argon2id")
    for field, low, high in (("opslimit", _KDF.OPSLIMIT_MIN, _KDF.OPSLIMIT_SENSITIVE),
                             ("memlimit", _KDF.MEMLIMIT_MIN, _KDF.MEMLIMIT_SENSITIVE)):
        value = kdf.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"kdf.{field}: {value!r:.40} is outside {low}..{high}")
    if not _is_hex(kdf.get("salt"), _KDF.SALTBYTES):
        raise ValueError(f"kdf.salt: must be {_KDF.SALTBYTES} bytes of hex")
    if doc.get("cipher") != "xsalsa20poly1305":
        raise ValueError(f"cipher: {doc.get('cipher')!r:.40} is not xsalsa20poly1305")
    if not _is_hex(doc.get("box")):
        raise ValueError("box: must be hex")


def generate_keyfile(path: Path, name: str, passphrase: str) -> SSlibKey:
    """Create a new ed25519 key, write it encrypted (mode 0600), return its public key."""
    if path.exists():
        raise KeyAccessError(f"{path}: a key file already exists; refusing to overwrite it")
    if not passphrase:
        raise KeyAccessError(f"key {name!r}: empty passphrase")
    signing = nacl.signing.SigningKey.generate()
    salt = nacl.utils.random(_KDF.SALTBYTES)
    box_key = _KDF.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase.encode(), salt,
                       opslimit=OPSLIMIT, memlimit=MEMLIMIT)
    sealed = nacl.secret.SecretBox(box_key).encrypt(bytes(signing))
    pub = public_key(signing.verify_key.encode().hex())
    doc = {
        "schema": SCHEMA,
        "name": name,
        "keyid": pub.keyid,
        "public": pub.keyval["public"],
        "kdf": {"name": "argon2id", "opslimit": OPSLIMIT, "memlimit": MEMLIMIT, "salt": salt.hex()},
        "cipher": "xsalsa20poly1305",
        "box": bytes(sealed).hex(),
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return pub


def write_public(path: Path, name: str, public: SSlibKey) -> None:
    """Write ``NAME.pub``: the public half only, safe to mail or commit."""
    if path.exists():
        raise KeyAccessError(f"{path}: a file already exists; refusing to overwrite it")
    doc = {"schema": PUBLIC_SCHEMA, "name": name, "keyid": public.keyid, "public": public.keyval["public"]}
    path.write_text(json.dumps(doc, indent=1) + "\n")


def read_public(path: Path) -> tuple[str, SSlibKey]:
    """(name, public key) from a ``.pub`` file; a private key file is refused, not silently read."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyAccessError(f"{path}: public key file not found") from None
    except OSError as exc:
        raise KeyAccessError(f"{path}: cannot read public key file: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict) and doc.get("schema") == SCHEMA:
            raise KeyAccessError(f"{path}: is a private key file; give its public half ({path.stem}.pub, "
                                 "from `otactl keys generate NAME --out DIR`), the private key stays with its owner")
        if not isinstance(doc, dict) or doc.get("schema") != PUBLIC_SCHEMA:
            raise ValueError(f"not an otactl public key (schema {PUBLIC_SCHEMA})")
        name = _text(doc, "name")
        if not _is_hex(doc.get("public"), _PUBLIC_KEY_BYTES):
            raise ValueError("public: must be an ed25519 public key, 64 hex digits")
        pub = public_key(doc["public"])
        if pub.keyid != doc.get("keyid"):
            raise ValueError("keyid does not match the public key")
    except RecursionError:
        raise KeyAccessError(f"{path}: not an otactl public key file (JSON nested too deeply)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyAccessError(f"{path}: not an otactl public key file ({' '.join(str(exc).split())})") from None
    return name, pub


class FileSigner(Signer):
    """securesystemslib Signer over an otactl encrypted key file (URI ``otactl-file:PATH``)."""

    SCHEME = URI_SCHEME

    def __init__(self, signing_key: nacl.signing.SigningKey, public: SSlibKey) -> None:
        self._signing_key = signing_key
        self._public = public

    def __repr__(self) -> str:  # never show key material
        return f"FileSigner(keyid={self._public.keyid[:12]})"

    @property
    def public_key(self) -> SSlibKey:
        return self._public

    def sign(self, payload: bytes) -> Signature:
        sig = self._signing_key.sign(payload).signature
        return Signature(self._public.keyid, sig.hex())

    @classmethod
    def from_priv_key_uri(
        cls, priv_key_uri: str, public_key: Any, secrets_handler: SecretsHandler | None = None
    ) -> FileSigner:
        scheme, _, path = priv_key_uri.partition(":")
        if scheme != cls.SCHEME:
            raise ValueError(f"FileSigner cannot handle {priv_key_uri}")
        kf = read_keyfile(Path(path))
        if kf.public.keyid != public_key.keyid:
            raise KeyAccessError(f"{path}: holds key {kf.public.keyid[:12]}, expected {public_key.keyid[:12]}")
        passphrase = secrets_handler("passphrase") if secrets_handler else get_passphrase(kf.name)
        return cls(kf.unlock(passphrase), kf.public)


def register() -> None:
    from securesystemslib.signer import SIGNER_FOR_URI_SCHEME

    SIGNER_FOR_URI_SCHEME[URI_SCHEME] = FileSigner


register()
