"""What handlers ask of security: may this request's principal do this, which
operations may it do (KIP-430), and the ACLs and SCRAM credentials, persisted in the
cluster's metadata document (the bucket's in embedded mode, etcd's in cluster mode,
where every broker follows the document, so a change made through one broker is
enforced by all)."""

from __future__ import annotations

import asyncio
import logging
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.security import scram
from broker.security.acl import (
    AclBinding,
    AclFilter,
    Authorizer,
    Operation,
    ResourceType,
    all_operations,
)
from broker.security.audit import Audit
from broker.security.session import Session

if TYPE_CHECKING:
    from broker.metadata_store import MetadataStore

log = logging.getLogger(__name__)


def parse_super_users(value: str) -> list[str]:
    """`User:admin;User:ops` (Kafka's super.users; commas accepted too)."""
    return [p.strip() for p in value.replace(",", ";").split(";") if p.strip()]


class Security:
    def __init__(
        self,
        meta: MetadataStore,
        audit: Audit,
        *,
        authorizer: str = "none",
        super_users: Iterable[str] = (),
        allow_if_no_acl: bool = False,
    ) -> None:
        if authorizer not in ("none", "acl"):
            raise ValueError(f"--authorizer must be none or acl, not {authorizer!r}")
        self.meta = meta
        self.audit = audit
        self.enabled = authorizer == "acl"
        self.super_users = frozenset(super_users)
        self.allow_if_no_acl = allow_if_no_acl
        self._cached: tuple[object, Authorizer] | None = None

    # --- decisions ------------------------------------------------------------------

    def _authorizer(self) -> Authorizer:
        acls = self.meta.acls
        if self._cached is None or self._cached[0] is not acls:
            bindings = []
            for d in acls:
                try:
                    bindings.append(AclBinding.from_dict(d))
                except (KeyError, ValueError):
                    log.warning("ignoring a stored ACL that does not parse: %r", d)
            self._cached = (acls, Authorizer(bindings, self.super_users, self.allow_if_no_acl))
        return self._cached[1]

    def allowed(
        self,
        session: Session | None,
        op: Operation,
        rtype: ResourceType,
        name: str,
        api: str = "",
        audit: bool = True,
    ) -> bool:
        """Whether the session's principal may do `op` on the resource; a denial is
        audited (unless `audit` is False: filtering, as Metadata's listing does)."""
        if not self.enabled or session is None:
            return True
        ok = self._authorizer().authorize(session.principal, session.host, op, rtype, name)
        if not ok and audit:
            self.audit.denied(
                principal=session.principal,
                client=session.client,
                api=api,
                operation=op.name,
                resource_type=rtype.name,
                resource=name,
            )
        return ok

    def any_allowed(self, session: Session | None, op: Operation, rtype: ResourceType) -> bool:
        if not self.enabled or session is None:
            return True
        return self._authorizer().any_allowed(session.principal, session.host, op, rtype)

    def operations(self, session: Session | None, rtype: ResourceType, name: str) -> int:
        """KIP-430: the operations allowed on the resource, as a bit field."""
        if not self.enabled or session is None:
            return all_operations(rtype)
        return self._authorizer().authorized_operations(
            session.principal, session.host, rtype, name
        )

    # --- ACLs -----------------------------------------------------------------------

    def describe_acls(self, f: AclFilter) -> list[AclBinding]:
        return [b for b in self._authorizer().bindings if f.matches(b)]

    async def create_acls(self, bindings: list[AclBinding]) -> None:
        def change() -> None:
            have = {AclBinding.from_dict(d) for d in self.meta.acls}
            new = [b.to_dict() for b in dict.fromkeys(bindings) if b not in have]
            self.meta.acls = [*self.meta.acls, *new]  # a new list: the cache sees it

        await self.meta.update(change)

    async def delete_acls(self, filters: list[AclFilter]) -> list[list[AclBinding]]:
        """The bindings each filter deleted."""
        result: list[list[AclBinding]] = []

        def change() -> None:
            result.clear()
            current = [AclBinding.from_dict(d) for d in self.meta.acls]
            gone: set[AclBinding] = set()
            for f in filters:
                hit = [b for b in current if f.matches(b)]
                result.append(hit)
                gone.update(hit)
            self.meta.acls = [b.to_dict() for b in current if b not in gone]

        await self.meta.update(change)
        return result

    # --- SCRAM credentials ------------------------------------------------------------

    def credential(self, user: str, mechanism: str) -> scram.ScramCredential | None:
        d = self.meta.scram.get(user, {}).get(mechanism)
        return scram.ScramCredential.from_dict(d) if d is not None else None

    def users(self) -> dict[str, dict[str, int]]:
        """user -> mechanism -> iterations."""
        return {
            u: {m: int(c["iterations"]) for m, c in ms.items()} for u, ms in self.meta.scram.items()
        }

    async def alter_credentials(
        self,
        upserts: list[tuple[str, str, scram.ScramCredential]],
        deletions: list[tuple[str, str]],
    ) -> None:
        def change() -> None:
            creds = {u: dict(ms) for u, ms in self.meta.scram.items()}
            for user, mech in deletions:
                creds.get(user, {}).pop(mech, None)
                if user in creds and not creds[user]:
                    del creds[user]
            for user, mech, c in upserts:
                creds.setdefault(user, {})[mech] = c.to_dict()
            self.meta.scram = creds

        await self.meta.update(change)

    async def bootstrap_users(self, path: Path, mechanisms: Iterable[str]) -> int:
        """Create the SCRAM credentials of each `[users]` entry of a TOML file
        (`name = "password"`) that has none yet; returns how many users were added."""
        raw = await asyncio.to_thread(Path(path).read_bytes)
        users: dict[str, Any] = tomllib.loads(raw.decode()).get("users", {})
        mechs = [m for m in mechanisms if m in scram.MECHANISMS] or list(scram.MECHANISMS)
        todo = [
            (user, mech, str(password))
            for user, password in users.items()
            for mech in mechs
            if self.credential(user, mech) is None
        ]
        if not todo:
            return 0

        def make() -> list[tuple[str, str, scram.ScramCredential]]:
            return [(u, m, scram.new_credential(m, p)) for u, m, p in todo]

        await self.alter_credentials(await asyncio.to_thread(make), [])
        added = len({u for u, _, _ in todo})
        log.info("created SCRAM credentials for %d users from %s", added, path)
        return added
