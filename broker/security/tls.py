"""TLS for SSL and SASL_SSL listeners with Python's ssl module: the server context from
certificate, key and CA files, and the principal Kafka derives from a client
certificate (its subject as an RFC 2253 distinguished name, `User:CN=...,O=...`)."""

from __future__ import annotations

import logging
import ssl

from cryptography import x509

log = logging.getLogger(__name__)

CLIENT_AUTH = {
    "none": ssl.CERT_NONE,
    "requested": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def server_context(certfile: str, keyfile: str, cafile: str, client_auth: str) -> ssl.SSLContext:
    if client_auth not in CLIENT_AUTH:
        raise ValueError(f"--ssl-client-auth must be none, requested or required: {client_auth!r}")
    if not certfile:
        raise ValueError("an SSL or SASL_SSL listener needs --ssl-certfile (and --ssl-keyfile)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    load_certificates(ctx, certfile, keyfile, cafile)
    ctx.verify_mode = CLIENT_AUTH[client_auth]
    return ctx


def client_context(certfile: str, keyfile: str, cafile: str) -> ssl.SSLContext:
    """For the broker's own calls to its peers: their certificates checked against
    `cafile`, this broker's certificate offered (for peers that ask for one)."""
    ctx = ssl.create_default_context(cafile=cafile or None)
    if certfile:
        ctx.load_cert_chain(certfile, keyfile or None)
    return ctx


def load_certificates(ctx: ssl.SSLContext, certfile: str, keyfile: str, cafile: str) -> None:
    """(Re)load the certificate chain and CA into `ctx`; new handshakes use them."""
    ctx.load_cert_chain(certfile, keyfile or None)
    if cafile:
        ctx.load_verify_locations(cafile)


def principal_of(ssl_object: ssl.SSLObject | None) -> str | None:
    """`User:<subject DN>` of the client's certificate, or None without one."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    return "User:" + cert.subject.rfc4514_string()
