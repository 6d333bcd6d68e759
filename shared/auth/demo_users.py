"""The demo users (demo_users.yaml): one or more per role, reviewers per department."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.auth.permissions import known_departments, load_policy

DEMO_USERS_FILE = Path(__file__).parent / "demo_users.yaml"


class DemoUser(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    roles: list[str] = Field(min_length=1)
    departments: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known(self) -> DemoUser:
        policy = load_policy()
        unknown = [r for r in self.roles if r not in policy.roles]
        if unknown:
            raise ValueError(f"{self.id}: unknown roles {unknown}")
        strange = [d for d in self.departments if d not in known_departments()]
        if strange:
            raise ValueError(f"{self.id}: unknown departments {strange}")
        if policy.conflicts(frozenset(self.roles)):
            raise ValueError(f"{self.id}: mutually exclusive roles {self.roles}")
        return self


class DemoUsers(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    password: str = Field(min_length=8)
    users: list[DemoUser] = Field(min_length=1)

    def get(self, user_id: str) -> DemoUser | None:
        return next((u for u in self.users if u.id == user_id), None)


@functools.cache
def load_demo_users(path: Path = DEMO_USERS_FILE) -> DemoUsers:
    return DemoUsers.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
