"""``claimflow token``: a token for a demo user (or any subject), signed with the key in
the stack's data folder, so it verifies against the embedded issuer running on that
folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shared.auth.demo_users import load_demo_users
from shared.auth.issuer import read_info
from shared.auth.keys import load_or_create_key
from shared.auth.mint import SERVICE_AUDIENCES, mint_token
from shared.auth.permissions import known_departments, load_policy


class TokenRequestInvalid(ValueError):
    pass


def token_for(
    data_dir: Path,
    user: str,
    roles: Sequence[str] = (),
    departments: Sequence[str] = (),
    issuer: str | None = None,
    audiences: Sequence[str] = (),
    ttl_s: int = 3600,
) -> str:
    policy = load_policy()
    demo = load_demo_users().get(user)
    if not roles:
        if demo is None:
            raise TokenRequestInvalid(f"{user!r} is no demo user: name its --role")
        roles = demo.roles
        departments = departments or demo.departments
    unknown = [r for r in roles if r not in policy.roles]
    if unknown:
        raise TokenRequestInvalid(f"unknown roles {unknown}; roles: {list(policy.roles)}")
    strange = [d for d in departments if d not in known_departments()]
    if strange:
        raise TokenRequestInvalid(
            f"unknown departments {strange}; departments: {sorted(known_departments())}"
        )
    if conflicts := policy.conflicts(frozenset(roles)):
        raise TokenRequestInvalid(f"mutually exclusive roles {conflicts}")
    if issuer is None:
        info = read_info(data_dir)
        if info is None:
            raise TokenRequestInvalid(
                f"no issuer has run on {data_dir} (no auth/issuer.json): start it with "
                f"`python -m shared.auth.issuer --data-dir {data_dir} --port P` or pass --issuer"
            )
        issuer = str(info["issuer"])
    return mint_token(
        load_or_create_key(data_dir),
        issuer=issuer,
        subject=user,
        roles=roles,
        departments=departments,
        name=demo.name if demo else user,
        audience=list(audiences) or SERVICE_AUDIENCES,
        ttl_s=ttl_s,
    )
