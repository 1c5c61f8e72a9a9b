"""The security cores without a broker: listener settings, SCRAM exchanges (RFC 5802 /
7677 vectors), Kafka's authorizer decisions and the failed-authentication limiter."""

from __future__ import annotations

import base64

import pytest

from broker.security import scram
from broker.security.acl import (
    AclBinding,
    AclFilter,
    Authorizer,
    InvalidAcl,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    all_operations,
    validate,
)
from broker.security.gate import FailureLimiter
from broker.security.listeners import ListenerError, parse_listeners

pytestmark = pytest.mark.unit

T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
LIT, PRE = PatternType.LITERAL, PatternType.PREFIXED
ALLOW, DENY = Permission.ALLOW, Permission.DENY


def acl(rtype, name, op, perm=ALLOW, principal="User:alice", host="*", pattern=LIT):
    return AclBinding(rtype, name, pattern, principal, host, op, perm)


# --- listeners ------------------------------------------------------------------------


def test_listeners_take_their_protocol_from_the_name_or_the_map() -> None:
    ls = parse_listeners(
        "PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093,INTERNAL://127.0.0.1:9094",
        "127.0.0.1:1",
        "SASL_SSL://broker.example:19093",
        "INTERNAL:SASL_PLAINTEXT",
    )
    assert [(lst.name, lst.protocol, lst.port) for lst in ls] == [
        ("PLAINTEXT", "PLAINTEXT", 9092),
        ("SASL_SSL", "SASL_SSL", 9093),
        ("INTERNAL", "SASL_PLAINTEXT", 9094),
    ]
    assert (ls[1].advertised_host, ls[1].advertised_port) == ("broker.example", 19093)
    assert (ls[0].advertised_host, ls[0].advertised_port) == ("127.0.0.1", 9092)
    assert ls[1].tls and ls[1].sasl and not ls[0].tls and ls[2].sasl and not ls[2].tls


def test_without_listeners_the_listen_address_is_one_plaintext_listener() -> None:
    (only,) = parse_listeners("", "127.0.0.1:9092", "pod-0.svc:9092")
    assert (only.name, only.protocol, only.host, only.port) == (
        "PLAINTEXT",
        "PLAINTEXT",
        "127.0.0.1",
        9092,
    )
    assert only.advertised_host == "pod-0.svc"


@pytest.mark.parametrize(
    "listeners,advertised,pmap",
    [
        ("CUSTOM://127.0.0.1:1", "", ""),  # no protocol for the name
        ("SSL://127.0.0.1:1,SSL://127.0.0.1:2", "", ""),  # duplicate
        ("127.0.0.1:1", "", ""),  # no name
        ("SSL://127.0.0.1:1", "OTHER://h:1", ""),  # advertises no listener
        ("X://127.0.0.1:1", "", "X:BOGUS"),
    ],
)
def test_bad_listener_settings_are_refused(listeners, advertised, pmap) -> None:
    with pytest.raises(ListenerError):
        parse_listeners(listeners, "127.0.0.1:9092", advertised, pmap)


# --- SCRAM ------------------------------------------------------------------------------


def test_scram_sha_256_matches_the_rfc_7677_example() -> None:
    """RFC 7677 section 3: user 'user', password 'pencil'."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    cred = scram.new_credential("SCRAM-SHA-256", "pencil", 4096, salt)
    server = scram.ScramServer(
        "SCRAM-SHA-256",
        lambda u: cred if u == "user" else None,
        nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    )
    first = server.first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    final = server.final(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert server.done


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_a_scram_exchange_succeeds_with_the_password_and_fails_without(mechanism) -> None:
    cred = scram.new_credential(mechanism, "s3cret")
    assert set(cred.to_dict()) == {"salt", "iterations", "stored_key", "server_key"}
    client = scram.ScramClient(mechanism, "alice", "s3cret")
    server = scram.ScramServer(mechanism, {"alice": cred}.get)
    final = server.final(client.final(server.first(client.first())))
    assert client.check(final)
    wrong = scram.ScramClient(mechanism, "alice", "guess")
    server = scram.ScramServer(mechanism, {"alice": cred}.get)
    with pytest.raises(scram.ScramError):
        server.final(wrong.final(server.first(wrong.first())))
    with pytest.raises(scram.ScramError):
        scram.ScramServer(mechanism, {}.get).first(client.first())
    assert scram.verify_password(mechanism, cred, "s3cret")
    assert not scram.verify_password(mechanism, cred, "s3cret!")


def test_a_scram_final_message_with_another_nonce_is_refused() -> None:
    cred = scram.new_credential("SCRAM-SHA-256", "pw")
    client = scram.ScramClient("SCRAM-SHA-256", "bob", "pw")
    server = scram.ScramServer("SCRAM-SHA-256", {"bob": cred}.get)
    server.first(client.first())
    with pytest.raises(scram.ScramError):
        server.final(b"c=biws,r=someothernonce,p=AAAA")


# --- the authorizer -----------------------------------------------------------------------


def test_read_on_a_topic_implies_describe_but_not_write() -> None:
    a = Authorizer([acl(T, "a", Operation.READ)])
    assert a.authorize("User:alice", "10.0.0.1", Operation.READ, T, "a")
    assert a.authorize("User:alice", "10.0.0.1", Operation.DESCRIBE, T, "a")
    assert not a.authorize("User:alice", "10.0.0.1", Operation.WRITE, T, "a")
    assert not a.authorize("User:alice", "10.0.0.1", Operation.READ, T, "b")
    assert not a.authorize("User:bob", "10.0.0.1", Operation.READ, T, "a")


def test_deny_wins_over_allow_and_all() -> None:
    a = Authorizer(
        [
            acl(T, "*", Operation.ALL, principal="User:*"),
            acl(T, "secret", Operation.READ, DENY),
        ]
    )
    assert a.authorize("User:alice", "h", Operation.WRITE, T, "secret")
    assert not a.authorize("User:alice", "h", Operation.READ, T, "secret")
    assert a.authorize("User:alice", "h", Operation.READ, T, "public")
    assert a.authorize("User:bob", "h", Operation.READ, T, "secret")


def test_a_deny_for_read_does_not_deny_describe() -> None:
    a = Authorizer([acl(T, "t", Operation.ALL), acl(T, "t", Operation.READ, DENY)])
    assert a.authorize("User:alice", "h", Operation.DESCRIBE, T, "t")
    assert not a.authorize("User:alice", "h", Operation.READ, T, "t")


def test_prefixed_acls_cover_names_that_start_with_the_prefix() -> None:
    a = Authorizer(
        [
            acl(T, "agent-", Operation.WRITE, pattern=PRE),
            acl(T, "agent-secret", Operation.WRITE, DENY),
        ]
    )
    assert a.authorize("User:alice", "h", Operation.WRITE, T, "agent-events")
    assert a.authorize("User:alice", "h", Operation.DESCRIBE, T, "agent-events")
    assert not a.authorize("User:alice", "h", Operation.WRITE, T, "agent-secret")
    assert not a.authorize("User:alice", "h", Operation.WRITE, T, "agen")
    assert not a.authorize("User:alice", "h", Operation.WRITE, G, "agent-events")


def test_hosts_must_match_and_super_users_may_do_everything() -> None:
    a = Authorizer([acl(G, "g", Operation.READ, host="10.0.0.1")], super_users=["User:admin"])
    assert a.authorize("User:alice", "10.0.0.1", Operation.READ, G, "g")
    assert not a.authorize("User:alice", "10.0.0.2", Operation.READ, G, "g")
    assert a.authorize("User:admin", "10.0.0.2", Operation.DELETE, G, "other")


def test_allow_everyone_if_no_acl_found_applies_only_to_resources_without_acls() -> None:
    a = Authorizer([acl(T, "a", Operation.READ)], allow_if_no_acl=True)
    assert a.authorize("User:bob", "h", Operation.WRITE, T, "b")  # no ACL on b
    assert not a.authorize("User:bob", "h", Operation.READ, T, "a")  # a has ACLs
    assert not Authorizer([]).authorize("User:bob", "h", Operation.READ, T, "b")


def test_authorized_operations_are_a_bit_field_of_the_allowed_ones() -> None:
    a = Authorizer([acl(T, "a", Operation.READ)])
    bits = a.authorized_operations("User:alice", "h", T, "a")
    assert bits == (1 << Operation.READ) | (1 << Operation.DESCRIBE)
    assert all_operations(G) == (1 << 3) | (1 << 8) | (1 << 6)


def test_filters_match_as_describe_acls_does() -> None:
    bindings = [
        acl(T, "a", Operation.READ),
        acl(T, "ag", Operation.WRITE, pattern=PRE),
        acl(G, "a", Operation.READ),
        acl(T, "*", Operation.DESCRIBE, principal="User:bob"),
    ]
    assert [b for b in bindings if AclFilter(resource_type=T).matches(b)] == [
        bindings[0],
        bindings[1],
        bindings[3],
    ]
    match = AclFilter(resource_type=T, resource_name="agent", pattern_type=PatternType.MATCH)
    assert [b for b in bindings if match.matches(b)] == [bindings[1], bindings[3]]
    by_principal = AclFilter(principal="User:alice", operation=Operation.READ)
    assert [b for b in bindings if by_principal.matches(b)] == [bindings[0], bindings[2]]
    assert AclBinding.from_dict(bindings[1].to_dict()) == bindings[1]


@pytest.mark.parametrize(
    "binding",
    [
        acl(ResourceType.ANY, "a", Operation.READ),
        acl(T, "a", Operation.ANY),
        acl(C, "not-the-cluster", Operation.ALTER),
        acl(G, "g", Operation.WRITE),  # groups have no WRITE
        acl(T, "a", Operation.READ, principal="alice"),
    ],
)
def test_bindings_kafka_refuses_are_refused(binding) -> None:
    with pytest.raises(InvalidAcl):
        validate(binding)


# --- failed-authentication limiter -------------------------------------------------------


def test_failures_from_one_address_limit_it_and_not_others() -> None:
    lim = FailureLimiter(burst=3, rate=1.0)
    for _ in range(3):
        assert lim.may_try("10.0.0.1", 100.0)
        lim.failed("10.0.0.1", 100.0)
    assert not lim.may_try("10.0.0.1", 100.0)
    assert lim.may_try("10.0.0.2", 100.0)
    assert lim.may_try("10.0.0.1", 101.1)  # a token came back


# --- the API table ---------------------------------------------------------------------


def test_every_api_the_broker_serves_says_what_it_needs_and_readme_shows_it() -> None:
    from pathlib import Path

    from broker.handlers import HANDLERS
    from broker.security.api_table import API_ACCESS, markdown
    from protocol.versions import SUPPORTED

    assert set(HANDLERS) | set(SUPPORTED) <= set(API_ACCESS)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("<!-- api-access-table:start -->\n") + len(
        "<!-- api-access-table:start -->\n"
    )
    end = readme.index("<!-- api-access-table:end -->")
    assert readme[start:end] == markdown(), "regenerate: python -m broker.security.api_table"


# --- quotas ------------------------------------------------------------------------------


def test_the_most_specific_quota_applies_in_kafkas_order() -> None:
    from broker.security.quotas import PRODUCE, QuotaTable

    table = QuotaTable(
        [
            {"entity": [["client-id", None]], "values": {PRODUCE: 10.0}},
            {"entity": [["client-id", "slow"]], "values": {PRODUCE: 1.0}},
            {"entity": [["user", "alice"]], "values": {PRODUCE: 5.0}},
            {"entity": [["user", "alice"], ["client-id", "slow"]], "values": {PRODUCE: 2.0}},
            {"entity": [["user", None]], "values": {PRODUCE: 7.0}},
        ]
    )
    both = (("client-id", "slow"), ("user", "alice"))
    assert table.lookup("alice", "slow", PRODUCE) == (both, 2.0)
    assert table.lookup("alice", "other", PRODUCE) == ((("user", "alice"),), 5.0)
    assert table.lookup("bob", "slow", PRODUCE) == ((("user", None),), 7.0)
    assert table.lookup(None, "slow", PRODUCE) == ((("client-id", "slow"),), 1.0)
    assert table.lookup(None, "other", PRODUCE) == ((("client-id", None),), 10.0)
    assert table.lookup(None, "other", "consumer_byte_rate") is None


def _simulate(manager, client: str, request: int, seconds: float, pipeline: int) -> float:
    """A client that always has `pipeline` requests of `request` bytes queued and whose
    connection is muted for each throttle; bytes applied per second after the burst."""
    from broker.security.quotas import PRODUCE

    now, muted_until, applied, start = 0.0, 0.0, 0, None
    burst_over = manager.window.burst_s
    while now < seconds:
        if now >= muted_until:
            for _ in range(pipeline):  # read together, applied one by one between mutes
                ms = manager.record(PRODUCE, None, client, request, now)
                if now >= burst_over:
                    start = now if start is None else start
                    applied += request
                if ms:
                    muted_until = now + ms / 1000
                    break
        now += 0.001
    assert start is not None
    return applied / (seconds - start)


def test_a_muted_client_runs_at_its_byte_rate_quota_whatever_its_request_size() -> None:
    from broker.security.quotas import PRODUCE, QuotaManager, QuotaTable, QuotaWindow

    for request, pipeline in ((10_000, 1), (65_536, 5), (300_000, 2)):
        q = QuotaManager(QuotaWindow(11, 0.2))
        q.table = QuotaTable([{"entity": [["client-id", "slow"]], "values": {PRODUCE: 1e6}}])
        rate = _simulate(q, "slow", request, 20.0, pipeline)
        assert 0.95e6 <= rate <= 1.05e6, (request, pipeline, rate)
        assert q.record(PRODUCE, None, "fast", 10**9, 20.0) == 0  # no quota: never throttled


def test_a_fresh_client_may_burst_one_window_span_and_no_throttle_exceeds_the_windows() -> None:
    from broker.security.quotas import PRODUCE, QuotaManager, QuotaTable, QuotaWindow

    q = QuotaManager(QuotaWindow(11, 1.0))
    q.table = QuotaTable([{"entity": [["user", "alice"]], "values": {PRODUCE: 1000.0}}])
    assert q.record(PRODUCE, "alice", "c", 10_000, 100.0) == 0  # the 10 s burst
    assert q.record(PRODUCE, "alice", "c", 500, 100.0) == 500  # 500 bytes short: 0.5 s
    assert q.record(PRODUCE, "alice", "c", 10**9, 100.0) == 11_000  # capped at 11 windows
    assert q.record(PRODUCE, "alice", "other-client", 1, 100.0) > 0  # the user's bucket


def test_a_changed_quota_applies_to_the_next_request() -> None:
    from broker.security.quotas import REQUEST, QuotaManager, QuotaTable, QuotaWindow

    q = QuotaManager(QuotaWindow(2, 1.0))  # burst: 1 s of quota
    q.table = QuotaTable([{"entity": [["client-id", None]], "values": {REQUEST: 50.0}}])
    assert q.record(REQUEST, None, "c", 100.0, 0.0) == 1000  # 1 s of loop time at 50%
    q.table = QuotaTable([{"entity": [["client-id", None]], "values": {REQUEST: 100.0}}])
    assert q.record(REQUEST, None, "c", 0.0, 1.0) == 0  # refilled twice as fast


def test_an_unsent_fetch_answer_is_taken_back_so_the_refetch_after_the_throttle_fits() -> None:
    from broker.security.quotas import FETCH, QuotaManager, QuotaTable, QuotaWindow

    q = QuotaManager(QuotaWindow(11, 0.1))  # burst: 1 s of quota
    q.table = QuotaTable([{"entity": [["client-id", "c"]], "values": {FETCH: 1000.0}}])
    assert q.burst(FETCH, None, "c") == 1000.0 and q.burst(FETCH, None, "other") is None
    assert q.record(FETCH, None, "c", 800, 0.0) == 0
    throttle = q.record(FETCH, None, "c", 800, 0.0)  # 600 short: 0.6 s
    assert throttle == 600
    q.record(FETCH, None, "c", -800, 0.0)  # answered empty: the bytes are given back
    assert q.record(FETCH, None, "c", 800, throttle / 1000) == 0  # fits after the throttle
    assert q.over_burst(FETCH, None, "c", 1001) and not q.over_burst(FETCH, None, "c", 1000)


# --- OAUTHBEARER -------------------------------------------------------------------------


def _bearer(token: str, authzid: str = "") -> bytes:
    return f"n,{'a=' + authzid if authzid else ''},\x01auth=Bearer {token}\x01\x01".encode()


def test_oauthbearer_accepts_a_signed_unexpired_token_and_names_its_subject(tmp_path) -> None:
    from broker.security.oauth import JwksValidator, OAuthSettings, parse_client_first
    from devkit.jwks import Issuer

    issuer = Issuer()
    v = JwksValidator(
        OAuthSettings(str(issuer.write_jwks(tmp_path / "jwks.json")), ("strata",), "idp")
    )
    token = issuer.token("alice", 600, aud="strata", iss="idp")
    assert parse_client_first(_bearer(token, "alice")) == ("alice", token)
    valid = v.validate(token)
    assert valid.principal == "User:alice"
    assert 590 < valid.expires_at - __import__("time").time() <= 600


def test_oauthbearer_refuses_expired_foreign_unsigned_and_misaddressed_tokens(tmp_path) -> None:
    import jwt as pyjwt

    from broker.security.oauth import InvalidToken, JwksValidator, OAuthSettings
    from devkit.jwks import Issuer

    issuer, stranger = Issuer(), Issuer("key-1")  # same kid, other key
    path = issuer.write_jwks(tmp_path / "jwks.json")
    v = JwksValidator(OAuthSettings(str(path), ("strata",), "idp"))
    good = {"aud": "strata", "iss": "idp"}
    bad = {
        "expired": issuer.token("alice", -120, **good),
        "foreign key": stranger.token("alice", 600, **good),
        "unsigned": pyjwt.encode({"sub": "alice", "exp": 2**40, **good}, None, algorithm="none"),
        "shared secret": pyjwt.encode(
            {"sub": "alice", "exp": 2**40, **good}, "k" * 32, algorithm="HS256"
        ),
        "wrong audience": issuer.token("alice", 600, aud="other", iss="idp"),
        "wrong issuer": issuer.token("alice", 600, aud="strata", iss="evil"),
        "no subject": pyjwt.encode(
            {"exp": 2**40, **good}, issuer.private_key, "RS256", headers={"kid": "key-1"}
        ),
        "garbage": "not-a-jwt",
    }
    for why, token in bad.items():
        with pytest.raises(InvalidToken):
            v.validate(token)
            pytest.fail(f"accepted a token with {why}")
    # a rotated key set is read again: a token signed with the new key verifies
    rotated = Issuer("key-2")
    rotated.write_jwks(path, issuer)
    assert v.validate(rotated.token("bob", 600, **good)).principal == "User:bob"


def test_a_malformed_oauthbearer_message_is_refused() -> None:
    from broker.security.oauth import InvalidToken, parse_client_first

    for msg in (b"", b"y,,\x01auth=Bearer t\x01\x01", b"n,,\x01auth=Bearer t\x01",
                b"n,,\x01auth=Basic t\x01\x01", b"n,,\x01\x01", b"\xff"):  # fmt: skip
        with pytest.raises(InvalidToken):
            parse_client_first(msg)


def test_a_session_lasts_max_reauth_or_to_its_tokens_expiry_whichever_is_first() -> None:
    from broker.security.gate import session_lifetime_ms

    assert session_lifetime_ms(0, None, 100.0) == 0  # re-authentication off
    assert session_lifetime_ms(0, 150.0, 100.0) == 0  # off: a token's expiry is not enforced
    assert session_lifetime_ms(5000, None, 100.0) == 5000
    assert session_lifetime_ms(5000, 102.0, 100.0) == 2000
    assert session_lifetime_ms(5000, 900.0, 100.0) == 5000
    assert session_lifetime_ms(5000, 99.0, 100.0) == 1  # already expired: the next request
