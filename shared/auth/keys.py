"""The embedded issuer's ES256 signing key, kept in the stack's data folder.

The issuer process and ``claimflow token`` load the same file, so a token minted on the
command line verifies against the running issuer's JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

KEY_FILE = Path("auth") / "issuer-es256.pem"
ALGORITHM = "ES256"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    private_key: ec.EllipticCurvePrivateKey

    @property
    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    @property
    def kid(self) -> str:
        """RFC 7638 thumbprint: stable for the key, different for every other key."""
        jwk = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
        canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
        return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def load_key(path: Path) -> SigningKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path} is not a P-256 (ES256) private key")
    return SigningKey(key)


def load_or_create_key(data_dir: Path) -> SigningKey:
    """The key at ``<data_dir>/auth/issuer-es256.pem``, created (mode 0600) when absent.
    Creation is atomic (write a temporary file, hard-link it into place), so the issuer
    and a concurrent ``claimflow token`` never end up with two different keys."""
    path = data_dir / KEY_FILE
    if path.exists():
        return load_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = SigningKey.generate()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, fresh.pem())
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return load_key(path)  # someone else won the race: use theirs
    finally:
        os.unlink(tmp)
    return fresh
