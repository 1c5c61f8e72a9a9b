"""Named listeners and their security protocols, as Kafka's `listeners`,
`advertised.listeners` and `listener.security.protocol.map` settings spell them.

Pure: parses the settings into `Listener`s; broker.server binds them.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    protocol: str  # one of PROTOCOLS
    host: str  # where it binds
    port: int
    advertised_host: str
    advertised_port: int

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def with_port(self, port: int) -> Listener:
        """The listener bound to `port` (a port 0 resolved); advertised likewise if it was 0."""
        adv = self.advertised_port or port
        return Listener(self.name, self.protocol, self.host, port, self.advertised_host, adv)


class ListenerError(ValueError):
    """A listener setting that cannot be used."""


def _split(spec: str) -> tuple[str | None, str, int]:
    """'NAME://HOST:PORT' or 'HOST:PORT' -> (NAME or None, HOST, PORT)."""
    name = None
    rest = spec.strip()
    if "://" in rest:
        name, rest = rest.split("://", 1)
        name = name.strip().upper()
        if not name:
            raise ListenerError(f"listener {spec!r} has no name")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise ListenerError(f"listener {spec!r} is not NAME://HOST:PORT")
    return name, host.strip("[]"), int(port)


def _entries(value: str) -> list[str]:
    return [e for e in (s.strip() for s in value.split(",")) if e]


def parse_protocol_map(value: str) -> dict[str, str]:
    out = {}
    for entry in _entries(value):
        name, sep, proto = entry.partition(":")
        proto = proto.strip().upper()
        if not sep or proto not in PROTOCOLS:
            raise ListenerError(f"protocol map entry {entry!r} is not NAME:{'|'.join(PROTOCOLS)}")
        out[name.strip().upper()] = proto
    return out


def parse_listeners(
    listeners: str, listen: str, advertised: str, protocol_map: str = ""
) -> list[Listener]:
    """The broker's listeners: each of `listeners` (comma-separated NAME://HOST:PORT),
    or, when there are none, `listen` (HOST:PORT) as one PLAINTEXT listener. `advertised`
    holds NAME://HOST:PORT entries (a bare HOST:PORT names the first listener); a
    listener not advertised advertises where it binds. Names PLAINTEXT, SSL,
    SASL_PLAINTEXT and SASL_SSL imply their protocol; others need `protocol_map`."""
    protocols = parse_protocol_map(protocol_map)
    bound: list[tuple[str, str, int]] = []
    if _entries(listeners):
        for spec in _entries(listeners):
            name, host, port = _split(spec)
            if name is None:
                raise ListenerError(f"listener {spec!r} needs a name: NAME://HOST:PORT")
            bound.append((name, host, port))
    else:
        _, host, port = _split(listen)
        bound.append(("PLAINTEXT", host, port))
    names = [n for n, _, _ in bound]
    if len(set(names)) != len(names):
        raise ListenerError(f"listener names must be unique: {names}")
    adv: dict[str, tuple[str, int]] = {}
    for spec in _entries(advertised):
        name, host, port = _split(spec)
        name = name or names[0]
        if name not in names:
            raise ListenerError(f"advertised listener {spec!r} names no listener ({names})")
        adv[name] = (host, port)
    out = []
    for name, host, port in bound:
        proto = protocols.get(name) or (name if name in PROTOCOLS else None)
        if proto is None:
            raise ListenerError(
                f"listener {name} has no security protocol: add {name}:PROTOCOL to "
                "--listener-security-protocol-map"
            )
        a_host, a_port = adv.get(name, (host, port))
        out.append(Listener(name, proto, host, port, a_host, a_port))
    return out
