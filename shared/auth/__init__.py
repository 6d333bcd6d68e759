"""Identity and access: bearer tokens from trusted OIDC issuers, roles and permissions as
data. See docs/permissions.md; the embedded issuer is ``python -m shared.auth.issuer``."""

from shared.auth.caller import Caller
from shared.auth.dependency import (
    Authenticator,
    build_authenticator,
    install_auth,
    require,
)
from shared.auth.errors import AuthProblem
from shared.auth.settings import AuthSettings
from shared.auth.verify import TokenVerifier

__all__ = [
    "AuthProblem",
    "AuthSettings",
    "Authenticator",
    "Caller",
    "TokenVerifier",
    "build_authenticator",
    "install_auth",
    "require",
]
