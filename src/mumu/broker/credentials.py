"""The broker's users: nkey credentials, the registry of who holds one, the auth file.

An auth directory holds:

- ``users.json``: the public key of every service role and of every workspace producer
  credential, and the provisioned workspaces (never a secret);
- ``creds/<role>.nk``: the nkey seed of each service role, the operator and the system
  user (mode 0600; each service gets only its own file);
- ``auth.conf``: what every nats-server of the deployment includes, rendered from
  ``users.json`` and ``mumu.broker.roles``.

Producer seeds are written once, to the file the operator names, and never kept here.
Issuing or revoking a credential rewrites ``auth.conf``; the servers then reload it
(``mumu.broker.reload``) and close the connections of revoked users.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import nkeys

from mumu.broker import roles
from mumu.contracts.consumers import StageConsumer

APP_ACCOUNT: Final = "MUMU"
SYSTEM_ACCOUNT: Final = "SYS"
SEED_SUFFIX: Final = ".nk"


def new_seed() -> bytes:
    """A fresh nkey user seed (``SU...``)."""
    seed: bytes = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    return seed


def public_key(seed: bytes) -> str:
    """The public key (``U...``) of an nkey seed."""
    pair = nkeys.from_seed(bytearray(seed.strip()))
    try:
        key: bytes = pair.public_key
        return key.decode()
    finally:
        pair.wipe()


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class ProducerCredential:
    workspace: str
    nkey: str
    issued_at: str


class AuthDir:
    """One deployment's broker users (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.registry = path / "users.json"
        self.auth_conf = path / "auth.conf"
        self.creds = path / "creds"

    def seed_file(self, role: roles.Role) -> Path:
        return self.creds / f"{role}{SEED_SUFFIX}"

    def _load(self) -> dict[str, Any]:
        if not self.registry.exists():
            return {"services": {}, "producers": [], "workspaces": []}
        data: dict[str, Any] = json.loads(self.registry.read_text())
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write_text(self.registry, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def ensure_services(self) -> None:
        """A seed for every service role, the operator and the system user (kept when
        present, so restarts keep their credentials)."""
        data = self._load()
        for role in roles.Role:
            seed_file = self.seed_file(role)
            if not seed_file.exists():
                write_secret(seed_file, new_seed())
            data["services"][str(role)] = public_key(seed_file.read_bytes())
        self._save(data)

    def public_key_of(self, role: roles.Role) -> str | None:
        key: str | None = self._load()["services"].get(str(role))
        return key

    def revoke_service(self, role: roles.Role) -> None:
        """Take a service's credentials away (a leaked seed): its user leaves the registry
        and its seed file is deleted; ``ensure_services`` then issues a new one."""
        data = self._load()
        data["services"].pop(str(role), None)
        self._save(data)
        self.seed_file(role).unlink(missing_ok=True)

    def add_workspaces(self, workspaces: Iterable[str]) -> bool:
        """Record provisioned workspaces; True when one was new."""
        data = self._load()
        known = set(data["workspaces"])
        data["workspaces"] = sorted(known | set(workspaces))
        self._save(data)
        return len(data["workspaces"]) != len(known)

    def workspaces(self) -> list[str]:
        return list(self._load()["workspaces"])

    def issue_producer(self, workspace: str) -> bytes:
        """A new producer credential for ``workspace``: its seed (write it out, it is
        not kept here). Earlier credentials of the workspace stay valid."""
        seed = new_seed()
        data = self._load()
        data["producers"].append({
            "workspace": workspace, "nkey": public_key(seed),
            "issued_at": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        data["workspaces"] = sorted(set(data["workspaces"]) | {workspace})
        self._save(data)
        return seed

    def producers(self, workspace: str | None = None) -> list[ProducerCredential]:
        return [
            ProducerCredential(p["workspace"], p["nkey"], p["issued_at"])
            for p in self._load()["producers"]
            if workspace is None or p["workspace"] == workspace
        ]

    def revoke_producers(self, workspace: str, nkey: str | None = None) -> int:
        """Remove the workspace's producer credentials (only ``nkey`` when given)."""
        data = self._load()
        keep = [
            p for p in data["producers"]
            if p["workspace"] != workspace or (nkey is not None and p["nkey"] != nkey)
        ]
        revoked = len(data["producers"]) - len(keep)
        data["producers"] = keep
        self._save(data)
        return revoked

    def render(self, stage_consumers: Iterable[StageConsumer]) -> Path:
        """Write ``auth.conf`` from the registry; returns its path."""
        self.path.mkdir(parents=True, exist_ok=True)
        _write_text(self.auth_conf, render_auth_conf(self._load(), tuple(stage_consumers)))
        return self.auth_conf


def _user(nkey: str, perms: roles.Permissions) -> dict[str, Any]:
    return {"nkey": nkey, "permissions": perms.as_config()}


def render_auth_conf(data: dict[str, Any], stage_consumers: tuple[StageConsumer, ...]) -> str:
    """The nats-server ``accounts`` block: every user of mumu in the application account,
    the system user in the system account; nothing anonymous."""
    services: dict[str, str] = data["services"]
    workspaces: list[str] = data["workspaces"]
    users = []
    for role in roles.SERVICES:
        if str(role) in services:
            users.append(_user(services[role], roles.service(role, workspaces, stage_consumers)))
    if roles.Role.OPERATOR in services:
        users.append(_user(services[roles.Role.OPERATOR], roles.OPERATOR_PERMISSIONS))
    for producer in data["producers"]:
        users.append(_user(producer["nkey"], roles.produce(producer["workspace"])))
    system_users = (
        [{"nkey": services[roles.Role.SYSTEM]}] if roles.Role.SYSTEM in services else []
    )
    accounts = {
        APP_ACCOUNT: {"jetstream": "enabled", "users": users},
        SYSTEM_ACCOUNT: {"users": system_users},
    }
    return (
        "# generated by mumu from users.json: do not edit (mumu workspace credentials)\n"
        f"accounts: {json.dumps(accounts, indent=2)}\n"
        f"system_account: {SYSTEM_ACCOUNT}\n"
    )
