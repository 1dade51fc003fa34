"""Client registration rules: exact redirect URIs, public keys only, kinds kept apart."""

from __future__ import annotations

import json

import pytest
from joserfc.jwk import ECKey

from phiguard.audit.events import ListAuditSink
from phiguard.clock import FixedClock
from phiguard.identity.clients import ClientError, ClientRegistry, check_redirect_uri
from phiguard.records.vault import Vault
from tests.support.oauth import BackendKey


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.org/cb",
        "http://127.0.0.1:8765/cb",
        "http://[::1]/cb",
        "http://localhost:3000/callback",
        "org.example.ward:/oauth/cb",
    ],
)
def test_acceptable_redirect_uris(uri: str) -> None:
    assert check_redirect_uri(uri) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example.org/cb",  # plain http off loopback
        "https://app.example.org/cb#x",
        "javascript:alert(1)",
        "data:text/html,x",
        "https:///nohost",
        "https://app.example.org/c b",
        "https://app.example.org/" + "a" * 600,
        "custom://host/cb",  # a private-use scheme must be reverse-domain, no authority
    ],
)
def test_refused_redirect_uris(uri: str) -> None:
    with pytest.raises(ClientError):
        check_redirect_uri(uri)


@pytest.fixture
def registry(vault: Vault, clock: FixedClock) -> ClientRegistry:
    return ClientRegistry(vault.engine, clock, ListAuditSink())


def test_backend_keys(registry: ClientRegistry) -> None:
    rsa, ec = BackendKey.rsa("r1"), BackendKey.ec("e1")
    both = {"keys": json.loads(rsa.jwks())["keys"] + json.loads(ec.jwks())["keys"]}
    client = registry.add("Feed", "backend", by="operator/t", jwks=json.dumps(both), roles=["him"])
    assert client.key_ids == ("r1", "e1")
    assert all("d" not in k for k in (client.jwks or {})["keys"])

    p256 = {**ECKey.generate_key("P-256").as_dict(private=False), "kid": "p"}
    for bad in (
        {"keys": [p256]},
        {"keys": []},
        {"keys": [{**json.loads(rsa.jwks())["keys"][0], "alg": "RS256"}]},
        {"keys": [{**json.loads(rsa.jwks())["keys"][0], "use": "enc"}]},
        {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]},
        {"keys": json.loads(rsa.jwks())["keys"] * 2},  # duplicate kid
    ):
        with pytest.raises(ClientError):
            registry.add("Feed", "backend", by="operator/t", jwks=json.dumps(bad), roles=["him"])
    with pytest.raises(ClientError):
        registry.add("Feed", "backend", by="operator/t", jwks="{not json", roles=["him"])
    assert len(registry.list()) == 1


def test_kinds_use_only_their_own_grants(registry: ClientRegistry) -> None:
    public = registry.add(
        "App", "public", by="operator/t", redirect_uris=["https://app.example.org/cb"]
    )
    backend = registry.add(
        "Feed", "backend", by="operator/t", jwks=BackendKey.rsa().jwks(), roles=["him"]
    )
    assert public.check_grant_type("authorization_code") and public.check_grant_type(
        "refresh_token"
    )
    assert not public.check_grant_type("client_credentials")
    assert backend.check_grant_type("client_credentials")
    assert not backend.check_grant_type("authorization_code")
    assert public.check_endpoint_auth_method("none", "token")
    assert not backend.check_endpoint_auth_method("none", "token")
    assert not public.check_client_secret("anything")
    assert public.check_redirect_uri("https://app.example.org/cb")
    assert not public.check_redirect_uri("https://app.example.org/cb/")
    registry.revoke(public.client_id, by="operator/t")
    assert registry.active(public.client_id) is None
    assert registry.active("../../etc") is None


def test_purposes_of_use_are_registered_not_assumed(registry: ClientRegistry) -> None:
    uri = ["https://app.example.org/cb"]
    ward = registry.add("Ward", "public", by="operator/t", redirect_uris=uri)
    assert ward.purposes == ("TREAT",)
    feed = registry.add(
        "Feed", "backend", by="operator/t", jwks=BackendKey.rsa().jwks(), roles=["him"]
    )
    assert feed.purposes == ("HOPERAT",)
    billing = registry.add(
        "Billing",
        "public",
        by="operator/t",
        redirect_uris=uri,
        purposes=["hpaymt", "TREAT", "HPAYMT"],
    )
    assert billing.purposes == ("HPAYMT", "TREAT")  # order kept: the first is the default
    assert registry.get(billing.client_id).purposes == ("HPAYMT", "TREAT")
    before = len(registry.list())
    for bad, says in (
        (["BTG"], "emergency purpose"),
        (["ETREAT"], "emergency"),
        (["FUN"], "unknown"),
    ):
        with pytest.raises(ClientError, match=says):
            registry.add("Bad", "public", by="operator/t", redirect_uris=uri, purposes=bad)
    assert len(registry.list()) == before  # nothing registered
