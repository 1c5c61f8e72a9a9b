"""The source-security settings of a link: checked at create, secrets hidden, turned into
the broker's own client settings."""

from __future__ import annotations

import pytest

from broker.links.model import LinkError
from broker.links.security import checked, parse_pairs, peer_security, redacted

pytestmark = pytest.mark.unit


def test_a_sasl_source_gets_a_plain_login_by_default_and_the_password_is_hidden() -> None:
    s = checked(
        parse_pairs(
            ["security.protocol=sasl_plaintext", "sasl.username=mirror", "sasl.password=a=b"]
        )
    )
    assert s["security.protocol"] == "SASL_PLAINTEXT"
    assert s["sasl.mechanism"] == "PLAIN"
    assert redacted(s)["sasl.password"] == "********"
    sec = peer_security(s)
    assert (sec.sasl_user, sec.sasl_password, sec.sasl_mechanism) == ("mirror", "a=b", "PLAIN")
    assert sec.tls is None


def test_no_settings_mean_plaintext_without_login() -> None:
    s = checked({})
    assert s == {"security.protocol": "PLAINTEXT"}
    assert peer_security(s).sasl_user == "" and peer_security(s).tls is None


def test_an_ssl_source_gets_a_tls_context_that_may_skip_the_host_name_check() -> None:
    s = checked({"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "none"})
    tls = peer_security(s).tls
    assert tls is not None and tls.check_hostname is False


@pytest.mark.parametrize(
    "settings, says",
    [
        ({"security.protocol": "SASL_SSL", "sasl.username": "u"}, "needs sasl.username"),
        ({"security.protocol": "KERBEROS"}, "security.protocol"),
        ({"sasl.username": "u", "sasl.password": "p"}, "need a SASL protocol"),
        (
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.username": "u",
                "sasl.password": "p",
                "ssl.ca.location": "/x",
            },
            "need SSL",
        ),
        (
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "GSSAPI",
                "sasl.username": "u",
                "sasl.password": "p",
            },
            "sasl.mechanism",
        ),
        ({"bootstrap.servers": "x:1"}, "unknown setting"),
    ],
)
def test_incomplete_or_unknown_settings_are_refused_with_the_reason(settings, says) -> None:
    with pytest.raises(LinkError, match=says):
        checked(settings)


def test_a_command_line_pair_without_an_equals_sign_is_refused() -> None:
    with pytest.raises(LinkError, match="KEY=VALUE"):
        parse_pairs(["security.protocol"])
