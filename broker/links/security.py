"""How a link reaches its source cluster: Kafka client settings (`--source-security
KEY=VALUE`, the names librdkafka and the Java client use), checked when the link is
created and turned into the broker's own client settings (broker.peers.PeerSecurity).

    security.protocol   PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl.mechanism      PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl.username, sasl.password
    ssl.ca.location     the CA file the source's certificates are checked against
    ssl.certificate.location, ssl.key.location   a client certificate (mutual TLS)
    ssl.endpoint.identification.algorithm        "https" (default) or "none"

The settings live in the link, in the cluster metadata; describe and list show them
with the password replaced by "********".
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from broker.links.model import LinkError
from broker.peers import PeerSecurity

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KEYS = (
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
)
SECRET = "sasl.password"
HIDDEN = "********"


def checked(settings: Mapping[str, str]) -> dict[str, str]:
    """The settings, validated (LinkError says what is wrong)."""
    out = {}
    for key, value in settings.items():
        if key not in KEYS:
            raise LinkError(f"source security: unknown setting {key!r} (known: {', '.join(KEYS)})")
        if not isinstance(value, str):
            raise LinkError(f"source security: {key} must be a string")
        out[key] = value
    protocol = out.setdefault("security.protocol", "PLAINTEXT").upper()
    if protocol not in PROTOCOLS:
        raise LinkError(f"source security: security.protocol {protocol!r}: one of {PROTOCOLS}")
    out["security.protocol"] = protocol
    if protocol.startswith("SASL"):
        mechanism = out.setdefault("sasl.mechanism", "PLAIN").upper()
        if mechanism not in MECHANISMS:
            raise LinkError(f"source security: sasl.mechanism {mechanism!r}: one of {MECHANISMS}")
        out["sasl.mechanism"] = mechanism
        if not out.get("sasl.username") or SECRET not in out:
            raise LinkError(f"source security: {protocol} needs sasl.username and sasl.password")
    elif any(k.startswith("sasl.") for k in out):
        raise LinkError(f"source security: sasl.* settings need a SASL protocol, not {protocol}")
    if not protocol.endswith("SSL") and any(k.startswith("ssl.") for k in out):
        raise LinkError(f"source security: ssl.* settings need SSL or SASL_SSL, not {protocol}")
    if out.get("ssl.endpoint.identification.algorithm", "https") not in ("https", "none", ""):
        raise LinkError("source security: ssl.endpoint.identification.algorithm: https or none")
    return out


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` items of the command line."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise LinkError(f"--source-security {pair!r}: KEY=VALUE")
        out[key.strip()] = value
    return out


def redacted(settings: Mapping[str, str]) -> dict[str, str]:
    return {k: (HIDDEN if k == SECRET else v) for k, v in settings.items()}


def peer_security(settings: Mapping[str, str]) -> PeerSecurity:
    """The broker's own client settings for the source (reads the TLS files)."""
    protocol = settings.get("security.protocol", "PLAINTEXT")
    tls = None
    if protocol.endswith("SSL"):
        tls = ssl.create_default_context(cafile=settings.get("ssl.ca.location") or None)
        if settings.get("ssl.endpoint.identification.algorithm", "https") in ("none", ""):
            tls.check_hostname = False
        cert = settings.get("ssl.certificate.location")
        if cert:
            tls.load_cert_chain(cert, settings.get("ssl.key.location") or None)
    if not protocol.startswith("SASL"):
        return PeerSecurity(tls=tls)
    return PeerSecurity(
        tls=tls,
        sasl_user=settings["sasl.username"],
        sasl_password=settings[SECRET],
        sasl_mechanism=settings.get("sasl.mechanism", "PLAIN"),
    )
