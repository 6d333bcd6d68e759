"""Each service's Ed25519 key: it seals the audit chain heads (``shared.audit.seal``) and
signs the events the service publishes (``shared.messaging.signing``).

Files (the dev stack generates them into ``<data folder>/keys/``; production mounts them
from its secret store):

* ``<service>.key`` — the private key, JSON ``{"service", "key_id", "ed25519_private"}``
  (raw 32 bytes, base64), mode 0600, read by that service only;
* ``public.json`` — every service's public key, the configuration consumers and auditors
  are given: ``{"format": "claimflow-keys/1", "keys": {key_id: {"service", "ed25519"}}}``.

The key id is ``<service>-<first 16 hex digits of sha256(public key)>``: readable, and a
new key (rotation) gets a new id while the old public key stays listed for old seals.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared.secret_files import write_private

KEYS_FORMAT = "claimflow-keys/1"


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_for(service: str, public: Ed25519PublicKey) -> str:
    return f"{service}-{hashlib.sha256(_raw_public(public)).hexdigest()[:16]}"


@dataclass(frozen=True)
class ServiceKey:
    """A service's private key: what it signs with."""

    service: str
    key_id: str
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls, service: str) -> ServiceKey:
        private = Ed25519PrivateKey.generate()
        return cls(service, key_id_for(service, private.public_key()), private)

    @classmethod
    def load(cls, path: Path | str) -> ServiceKey:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data["ed25519_private"]))
        key = cls(data["service"], data["key_id"], private)
        if key.key_id != key_id_for(key.service, private.public_key()):
            raise ValueError(f"{path}: key id {key.key_id!r} does not match the key")
        return key

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def private_document(self) -> dict[str, str]:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        raw = self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return {
            "service": self.service,
            "key_id": self.key_id,
            "ed25519_private": base64.b64encode(raw).decode(),
        }


class UnknownKey(LookupError):
    pass


@dataclass(frozen=True)
class KeyRing:
    """The public keys a reader trusts: key id -> (service, key)."""

    keys: Mapping[str, tuple[str, Ed25519PublicKey]]

    @classmethod
    def of(cls, keys: Iterable[ServiceKey]) -> KeyRing:
        return cls({k.key_id: (k.service, k.public) for k in keys})

    @classmethod
    def load(cls, path: Path | str) -> KeyRing:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != KEYS_FORMAT:
            raise ValueError(f"{path}: not a {KEYS_FORMAT} document")
        keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
        for key_id, entry in data["keys"].items():
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["ed25519"]))
            if key_id != key_id_for(entry["service"], public):
                raise ValueError(f"{path}: key id {key_id!r} does not match its key")
            keys[key_id] = (entry["service"], public)
        return cls(keys)

    def document(self) -> dict[str, object]:
        return {
            "format": KEYS_FORMAT,
            "keys": {
                key_id: {
                    "service": service,
                    "ed25519": base64.b64encode(_raw_public(public)).decode(),
                }
                for key_id, (service, public) in sorted(self.keys.items())
            },
        }

    def verify(self, key_id: str, signature: bytes, data: bytes) -> str:
        """The service that signed ``data``; raises UnknownKey or InvalidSignature."""
        try:
            service, public = self.keys[key_id]
        except KeyError:
            raise UnknownKey(f"unknown key id {key_id!r}") from None
        public.verify(signature, data)
        return service


__all__ = ["InvalidSignature", "KeyRing", "ServiceKey", "UnknownKey", "ensure_keys"]


def _write_private(path: Path, key: ServiceKey) -> None:
    write_private(path, json.dumps(key.private_document()))


def ensure_keys(directory: Path, services: Iterable[str]) -> KeyRing:
    """Create a key for every service that has none (dev stack); rewrite ``public.json``.

    Existing keys are kept: seals and events signed before a restart stay verifiable.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ring: dict[str, ServiceKey] = {}
    for service in services:
        path = directory / f"{service}.key"
        if not path.exists():
            _write_private(path, ServiceKey.generate(service))
        ring[service] = ServiceKey.load(path)
    public = KeyRing.of(ring.values())
    previous = directory / "public.json"
    if previous.exists():
        # Keep retired keys listed: what they signed must stay verifiable.
        old = KeyRing.load(previous)
        public = KeyRing({**old.keys, **public.keys})
    tmp = previous.with_suffix(".tmp")
    tmp.write_text(json.dumps(public.document(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(previous)
    return public


def main(argv: list[str] | None = None) -> None:
    """``python -m shared.audit.keys <folder> <service>...``: make the missing keys
    (docker-compose's one-shot ``keys`` service; the dev stack calls ensure_keys)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        raise SystemExit("usage: python -m shared.audit.keys <folder> <service>...")
    ring = ensure_keys(Path(args[0]), args[1:])
    for key_id, (service, _) in sorted(ring.keys.items()):
        print(f"{service}: {key_id}")


if __name__ == "__main__":
    main()
