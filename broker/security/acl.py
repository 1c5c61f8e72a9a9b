"""Kafka's authorizer semantics as a pure core: ACL bindings, filters, and the decision
for (principal, host, operation, resource).

As in Kafka's StandardAuthorizer:
- super users may do everything;
- an ACL matches a resource when its type is the resource's and its pattern is the
  literal name, the literal wildcard `*`, or a prefix of the name (PREFIXED);
- it applies to the caller when its principal is the caller's or `User:*` and its host
  the caller's or `*`;
- a DENY for the operation (or ALL) wins over any ALLOW;
- an ALLOW grants its operation, ALL grants everything, and READ, WRITE, DELETE and
  ALTER imply DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS;
- when no ACL at all matches the resource, `allow_everyone_if_no_acl_found` decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum


class ResourceType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class Permission(IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


WILDCARD = "*"
CLUSTER_NAME = "kafka-cluster"
WILDCARD_PRINCIPAL = "User:*"

# what an ALLOW of each operation also grants
_IMPLIED = {
    Operation.DESCRIBE: {
        Operation.DESCRIBE,
        Operation.READ,
        Operation.WRITE,
        Operation.DELETE,
        Operation.ALTER,
        Operation.ALL,
    },
    Operation.DESCRIBE_CONFIGS: {
        Operation.DESCRIBE_CONFIGS,
        Operation.ALTER_CONFIGS,
        Operation.ALL,
    },
}

# the operations each resource type has (KIP-430 reports these)
OPERATIONS = {
    ResourceType.TOPIC: (
        Operation.READ,
        Operation.WRITE,
        Operation.CREATE,
        Operation.DELETE,
        Operation.ALTER,
        Operation.DESCRIBE,
        Operation.DESCRIBE_CONFIGS,
        Operation.ALTER_CONFIGS,
    ),
    ResourceType.GROUP: (Operation.READ, Operation.DESCRIBE, Operation.DELETE),
    ResourceType.CLUSTER: (
        Operation.CREATE,
        Operation.CLUSTER_ACTION,
        Operation.DESCRIBE_CONFIGS,
        Operation.ALTER_CONFIGS,
        Operation.IDEMPOTENT_WRITE,
        Operation.ALTER,
        Operation.DESCRIBE,
    ),
    ResourceType.TRANSACTIONAL_ID: (Operation.DESCRIBE, Operation.WRITE),
    ResourceType.DELEGATION_TOKEN: (Operation.DESCRIBE,),
    ResourceType.USER: (Operation.CREATE_TOKENS, Operation.DESCRIBE_TOKENS),
}


@dataclass(frozen=True, slots=True)
class AclBinding:
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType  # LITERAL or PREFIXED
    principal: str
    host: str
    operation: Operation
    permission: Permission

    def to_dict(self) -> dict:
        return {
            "resource_type": int(self.resource_type),
            "resource_name": self.resource_name,
            "pattern_type": int(self.pattern_type),
            "principal": self.principal,
            "host": self.host,
            "operation": int(self.operation),
            "permission": int(self.permission),
        }

    @classmethod
    def from_dict(cls, d: dict) -> AclBinding:
        return cls(
            ResourceType(d["resource_type"]),
            d["resource_name"],
            PatternType(d["pattern_type"]),
            d["principal"],
            d["host"],
            Operation(d["operation"]),
            Permission(d["permission"]),
        )


class InvalidAcl(ValueError):
    """A binding Kafka would refuse to create."""


def validate(b: AclBinding) -> None:
    if b.resource_type in (ResourceType.ANY, ResourceType.UNKNOWN):
        raise InvalidAcl("the resource type must be specific")
    if b.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
        raise InvalidAcl("the pattern type must be LITERAL or PREFIXED")
    if b.operation in (Operation.ANY, Operation.UNKNOWN):
        raise InvalidAcl("the operation must be specific")
    if b.permission not in (Permission.ALLOW, Permission.DENY):
        raise InvalidAcl("the permission must be ALLOW or DENY")
    if not b.resource_name:
        raise InvalidAcl("the resource name is empty")
    if ":" not in b.principal:
        raise InvalidAcl(f"principal {b.principal!r} is not TYPE:NAME")
    if b.resource_type == ResourceType.CLUSTER and b.resource_name != CLUSTER_NAME:
        raise InvalidAcl(f"the cluster resource is named {CLUSTER_NAME}")
    valid = OPERATIONS.get(b.resource_type, ())
    if b.operation != Operation.ALL and b.operation not in valid:
        raise InvalidAcl(f"{b.operation.name} is not an operation of {b.resource_type.name}")


@dataclass(frozen=True, slots=True)
class AclFilter:
    """DescribeAcls/DeleteAcls filters: None for 'any'; MATCH finds the bindings that
    would apply to the named resource (literal, wildcard and prefixes)."""

    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: Operation = Operation.ANY
    permission: Permission = Permission.ANY

    def matches(self, b: AclBinding) -> bool:
        if self.resource_type != ResourceType.ANY and b.resource_type != self.resource_type:
            return False
        if self.pattern_type == PatternType.MATCH:
            if self.resource_name is not None and not _pattern_covers(b, self.resource_name):
                return False
        else:
            if self.pattern_type != PatternType.ANY and b.pattern_type != self.pattern_type:
                return False
            if self.resource_name is not None and b.resource_name != self.resource_name:
                return False
        if self.principal is not None and b.principal != self.principal:
            return False
        if self.host is not None and b.host != self.host:
            return False
        if self.operation != Operation.ANY and b.operation != self.operation:
            return False
        return self.permission == Permission.ANY or b.permission == self.permission


def _pattern_covers(b: AclBinding, name: str) -> bool:
    if b.pattern_type == PatternType.LITERAL:
        return b.resource_name in (name, WILDCARD)
    return name.startswith(b.resource_name)


class Authorizer:
    """Decisions over a set of bindings (rebuilt whenever the set changes)."""

    def __init__(
        self,
        bindings: Iterable[AclBinding],
        super_users: Iterable[str] = (),
        allow_if_no_acl: bool = False,
    ) -> None:
        self.super_users = frozenset(super_users)
        self.allow_if_no_acl = allow_if_no_acl
        self._literal: dict[tuple[ResourceType, str], list[AclBinding]] = {}
        self._prefixed: dict[ResourceType, list[AclBinding]] = {}
        self.bindings = list(bindings)
        for b in self.bindings:
            if b.pattern_type == PatternType.PREFIXED:
                self._prefixed.setdefault(b.resource_type, []).append(b)
            else:
                self._literal.setdefault((b.resource_type, b.resource_name), []).append(b)

    def _matching(self, rtype: ResourceType, name: str) -> list[AclBinding]:
        out = list(self._literal.get((rtype, name), ()))
        if name != WILDCARD:
            out += self._literal.get((rtype, WILDCARD), ())
        out += [b for b in self._prefixed.get(rtype, ()) if name.startswith(b.resource_name)]
        return out

    def authorize(
        self, principal: str, host: str, op: Operation, rtype: ResourceType, name: str
    ) -> bool:
        if principal in self.super_users:
            return True
        acls = self._matching(rtype, name)
        if not acls:
            return self.allow_if_no_acl
        applies = [
            b
            for b in acls
            if b.principal in (principal, WILDCARD_PRINCIPAL) and b.host in (host, WILDCARD)
        ]
        for b in applies:
            if b.permission == Permission.DENY and b.operation in (op, Operation.ALL):
                return False
        granted = _IMPLIED.get(op, {op, Operation.ALL})
        return any(b.permission == Permission.ALLOW and b.operation in granted for b in applies)

    def any_allowed(self, principal: str, host: str, op: Operation, rtype: ResourceType) -> bool:
        """Whether some resource of the type may see `op` from the principal (Kafka's
        check that an idempotent producer may WRITE to at least one topic)."""
        if principal in self.super_users:
            return True
        granted = _IMPLIED.get(op, {op, Operation.ALL})
        return any(
            b.permission == Permission.ALLOW
            and b.operation in granted
            and b.principal in (principal, WILDCARD_PRINCIPAL)
            and b.host in (host, WILDCARD)
            and self.authorize(principal, host, op, rtype, b.resource_name)
            for b in self.bindings
            if b.resource_type == rtype
        )

    def authorized_operations(
        self, principal: str, host: str, rtype: ResourceType, name: str
    ) -> int:
        """KIP-430's bit field: bit `op` set for each operation allowed on the resource."""
        bits = 0
        for op in OPERATIONS.get(rtype, ()):
            if self.authorize(principal, host, op, rtype, name):
                bits |= 1 << op
        return bits


def all_operations(rtype: ResourceType) -> int:
    """Every operation of the resource type, as reported without an authorizer."""
    bits = 0
    for op in OPERATIONS.get(rtype, ()):
        bits |= 1 << op
    return bits
