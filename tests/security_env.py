"""A secured broker for the security tests: certificates made with `cryptography`
(devkit.certs), SCRAM users from a TOML file, four listeners (PLAINTEXT, SASL_SSL, SSL
with client certificates, SASL_PLAINTEXT), and each client's settings for each way in."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from devkit.broker import BrokerProcess
from devkit.certs import PASSWORD, Certs, Pair, make_certs
from devkit.procs import free_port

USERS = {"alice": "alice-secret", "admin": "admin-secret", "bob": "bob-secret"}
MODES = ("scram-sha-512", "plain", "mtls")  # SASL_SSL SCRAM-SHA-512, SASL_SSL PLAIN, SSL + cert


@dataclass
class SecureBroker:
    process: BrokerProcess
    certs: Certs
    client_cert: Pair  # CN=alice
    plaintext: int
    sasl_ssl: int
    ssl: int
    sasl_plaintext: int

    def port(self, mode: str) -> int:
        return self.ssl if mode == "mtls" else self.sasl_ssl

    def bootstrap(self, mode: str) -> str:
        return f"127.0.0.1:{self.port(mode)}"

    def audit(self) -> list[dict]:
        """Every audit line the broker logged so far."""
        out = []
        for line in self.process.log(10**8).splitlines():
            _, sep, rest = line.partition("strata.audit: ")
            if sep:
                out.append(json.loads(rest))
        return out

    # --- each client's settings ------------------------------------------------------

    def librdkafka(self, mode: str, user: str = "alice", password: str | None = None) -> dict:
        conf = {"bootstrap.servers": self.bootstrap(mode), "ssl.ca.location": str(self.certs.ca)}
        if mode == "mtls":
            conf |= {
                "security.protocol": "SSL",
                "ssl.certificate.location": str(self.client_cert.cert),
                "ssl.key.location": str(self.client_cert.key),
            }
        else:
            conf |= {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "PLAIN" if mode == "plain" else "SCRAM-SHA-512",
                "sasl.username": user,
                "sasl.password": USERS[user] if password is None else password,
            }
        return conf

    def kafka_python(self, mode: str, user: str = "alice") -> dict:
        conf: dict = {"bootstrap_servers": self.bootstrap(mode), "ssl_cafile": str(self.certs.ca)}
        if mode == "mtls":
            conf |= {
                "security_protocol": "SSL",
                "ssl_certfile": str(self.client_cert.cert),
                "ssl_keyfile": str(self.client_cert.key),
            }
        else:
            conf |= {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN" if mode == "plain" else "SCRAM-SHA-512",
                "sasl_plain_username": user,
                "sasl_plain_password": USERS[user],
            }
        return conf

    def aiokafka(self, mode: str, user: str = "alice") -> dict:
        from aiokafka.helpers import create_ssl_context

        if mode == "mtls":
            ctx = create_ssl_context(
                cafile=str(self.certs.ca),
                certfile=str(self.client_cert.cert),
                keyfile=str(self.client_cert.key),
            )
            return {
                "bootstrap_servers": self.bootstrap(mode),
                "security_protocol": "SSL",
                "ssl_context": ctx,
            }
        return {
            "bootstrap_servers": self.bootstrap(mode),
            "security_protocol": "SASL_SSL",
            "ssl_context": create_ssl_context(cafile=str(self.certs.ca)),
            "sasl_mechanism": "PLAIN" if mode == "plain" else "SCRAM-SHA-512",
            "sasl_plain_username": user,
            "sasl_plain_password": USERS[user],
        }

    def java_properties(self, mode: str, path: Path, user: str = "alice") -> Path:
        lines = [
            f"ssl.truststore.location={self.certs.truststore}",
            "ssl.truststore.type=PKCS12",
            f"ssl.truststore.password={PASSWORD}",
        ]
        if mode == "mtls":
            lines += [
                "security.protocol=SSL",
                f"ssl.keystore.location={self.client_cert.p12}",
                "ssl.keystore.type=PKCS12",
                f"ssl.keystore.password={PASSWORD}",
                f"ssl.key.password={PASSWORD}",
            ]
        else:
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if mode == "plain"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            lines += [
                "security.protocol=SASL_SSL",
                f"sasl.mechanism={'PLAIN' if mode == 'plain' else 'SCRAM-SHA-512'}",
                f'sasl.jaas.config={module} required username="{user}" password="{USERS[user]}";',
            ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def kcat(self, mode: str, user: str = "alice") -> list[str]:
        out = []
        for k, v in self.librdkafka(mode, user).items():
            if k != "bootstrap.servers":
                out += ["-X", f"{k}={v}"]
        return out


def start_secure_broker(directory: Path, *extra: str) -> SecureBroker:
    directory.mkdir(parents=True, exist_ok=True)
    certs = make_certs(directory / "certs")
    client = certs.client("alice")
    users = directory / "users.toml"
    users.write_text("[users]\n" + "".join(f'{u} = "{p}"\n' for u, p in USERS.items()))
    ports = [free_port() for _ in range(4)]
    plaintext, sasl_ssl, ssl, sasl_plaintext = ports
    process = BrokerProcess(
        directory / "data",
        plaintext,
        "--listener",
        f"PLAINTEXT://127.0.0.1:{plaintext}",
        "--listener",
        f"SASL_SSL://127.0.0.1:{sasl_ssl}",
        "--listener",
        f"SSL://127.0.0.1:{ssl}",
        "--listener",
        f"SASL_PLAINTEXT://127.0.0.1:{sasl_plaintext}",
        "--ssl-certfile",
        str(certs.server.cert),
        "--ssl-keyfile",
        str(certs.server.key),
        "--ssl-cafile",
        str(certs.ca),
        "--ssl-client-auth",
        "requested",
        "--sasl-users-file",
        str(users),
        *extra,
        metrics=True,
    ).start()
    return SecureBroker(process, certs, client, plaintext, sasl_ssl, ssl, sasl_plaintext)
