"""The authorization server in process, on a fixed clock: every grant, and every refusal.

These drive ``OAuthService`` with plain ``HttpRequest`` objects (what the web adapter
builds), so time can be moved: code expiry, assertion lifetimes, refresh-family
expiry.  The same flows run against a live server with a real client library in
``tests/web/test_oauth_flows.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey
from sqlalchemy import Engine, func, select

from phiguard.audit.events import ListAuditSink
from phiguard.clock import FixedClock
from phiguard.crypto.keyring import Keyring
from phiguard.errors import AuthenticationError
from phiguard.identity.accounts import Accounts
from phiguard.identity.clients import Client, ClientRegistry
from phiguard.identity.oauth import (
    BadAuthorization,
    ConsentView,
    HttpRequest,
    OAuthResponse,
    OAuthService,
    PatientRequired,
)
from phiguard.identity.oauth_keys import IdTokenSigner
from phiguard.identity.oauth_store import OAuthStore
from phiguard.identity.passwords import PasswordHashing
from phiguard.identity.tokens import TokenService
from phiguard.records.vault import Vault
from phiguard.store.tables import oauth_codes, oauth_refresh_tokens
from tests.identity.test_accounts import PASSWORD, make_accounts
from tests.support.oauth import BackendKey, pkce_pair, unsigned

ISSUER = "https://phiguard.test"
FHIR = f"{ISSUER}/fhir"
TOKEN_URL = f"{ISSUER}/oauth/token"
REDIRECT = "https://app.example.org/callback"
ADMIN = "operator/test"


@dataclass
class World:
    service: OAuthService
    accounts: Accounts
    clients: ClientRegistry
    tokens: TokenService
    sink: ListAuditSink
    clock: FixedClock
    engine: Engine

    def user(self, user_id: str, roles: list[str], practitioner: str | None = None) -> None:
        self.accounts.add(
            user_id,
            f"Staff {user_id}",
            f"{user_id}@example.org",
            roles,
            PASSWORD,
            by=ADMIN,
            practitioner_id=practitioner,
        )

    def public(self, scopes: list[str] | None = None) -> Client:
        return self.clients.add(
            "Ward app", "public", by=ADMIN, redirect_uris=[REDIRECT], scopes=scopes or []
        )

    def backend(self, key: BackendKey, scopes: list[str] | None = None) -> Client:
        return self.clients.add(
            "Lab feed", "backend", by=ADMIN, jwks=key.jwks(), scopes=scopes or [], roles=["him"]
        )

    def actions(self) -> list[str]:
        return [e.action for e in self.sink.events]


def make_world(
    engine: Engine, keyring: Keyring, clock: FixedClock, hashing: PasswordHashing
) -> World:
    sink = ListAuditSink()
    accounts = make_accounts(engine, keyring, clock, sink, hashing)
    tokens = TokenService(engine, keyring, clock, issuer=ISSUER, audience=FHIR)
    clients = ClientRegistry(engine, clock, sink, tenant=accounts.tenant)
    service = OAuthService(
        tokens=tokens,
        clients=clients,
        accounts=accounts,
        store=OAuthStore(engine),
        signer=IdTokenSigner(engine, keyring, clock),
        audit=sink,
        clock=clock,
        issuer=ISSUER,
        fhir_base=FHIR,
    )
    return World(service, accounts, clients, tokens, sink, clock, engine)


@pytest.fixture
def world(vault: Vault, clock: FixedClock, hashing: PasswordHashing) -> World:
    return make_world(vault.engine, vault.keyring, clock, hashing)


# -- building requests ------------------------------------------------------------------


def authorize_params(
    client_id: str, challenge: str | None, scope: str = "user/*.rs", **override: str
) -> list[tuple[str, str]]:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "st-1",
        "nonce": "nonce-1",
        "aud": FHIR,
        "code_challenge": challenge or "",
        "code_challenge_method": "S256",
        **override,
    }
    return [(k, v) for k, v in params.items() if v is not None and v != ""]


def get(params: list[tuple[str, str]]) -> HttpRequest:
    return HttpRequest(
        "GET", f"{ISSUER}/oauth/authorize?{urlencode(params)}", {}, query=params, source="t"
    )


def post(path: str, form: dict[str, str]) -> HttpRequest:
    return HttpRequest(
        "POST",
        f"{ISSUER}{path}",
        {"content-type": "application/x-www-form-urlencoded"},
        form=list(form.items()),
        source="t",
    )


def redirect_params(response: OAuthResponse) -> dict[str, str]:
    assert response.location is not None, response.body
    parts = urlsplit(response.location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(parts.query).items()}


def approve(
    w: World, user_id: str, params: list[tuple[str, str]], patient: str | None = None
) -> str:
    response = w.service.decide(get(params), user_id, approve=True, patient=patient)
    found = redirect_params(response)
    assert found["state"] == "st-1"
    return found["code"]


def exchange(
    w: World, client_id: str, code: str, verifier: str, redirect: str = REDIRECT
) -> OAuthResponse:
    return w.service.token(
        post(
            "/oauth/token",
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "client_id": client_id,
                "code_verifier": verifier,
            },
        )
    )


def refresh(w: World, client_id: str, token: str, scope: str | None = None) -> OAuthResponse:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    if scope is not None:
        form["scope"] = scope
    return w.service.token(post("/oauth/token", form))


def body(response: OAuthResponse) -> dict[str, Any]:
    assert isinstance(response.body, dict)
    return response.body


def login_flow(
    w: World, user_id: str, client: Client, scope: str, patient: str | None = None
) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    code = approve(w, user_id, authorize_params(client.client_id, challenge, scope), patient)
    response = exchange(w, client.client_id, code, verifier)
    assert response.status == 200, response.body
    return body(response)


def live(w: World, token: str) -> bool:
    try:
        w.tokens.live_principal(w.tokens.verify(token))
    except AuthenticationError:
        return False
    return True


def counts(w: World) -> tuple[int, int]:
    with w.engine.connect() as conn:
        codes = conn.execute(
            select(func.count()).select_from(oauth_codes).where(oauth_codes.c.used.is_(True))
        ).scalar_one()
        refresh_rows = conn.execute(
            select(func.count()).select_from(oauth_refresh_tokens)
        ).scalar_one()
    return int(codes), int(refresh_rows)


# -- authorization code + PKCE ----------------------------------------------------------


def test_code_flow_issues_scoped_tokens_and_an_id_token(world: World) -> None:
    world.user("doc01", ["physician"], practitioner="pr-17")
    client = world.public()
    view = world.service.consent_view(
        get(authorize_params(client.client_id, pkce_pair()[1], "openid fhirUser user/*.rs")),
        "doc01",
    )
    assert isinstance(view, ConsentView)
    assert view.client.client_id == client.client_id
    assert view.scopes == ("openid", "fhirUser", "user/*.rs")

    tokens = login_flow(world, "doc01", client, "openid fhirUser user/*.rs offline_access")
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    assert set(tokens["scope"].split()) == {"openid", "fhirUser", "user/*.rs", "offline_access"}
    assert tokens["refresh_token"].startswith("pgr_")
    claims = world.tokens.verify(tokens["access_token"])
    assert claims.subject == "doc01"
    assert claims.client_id == client.client_id
    assert claims.fhir_user == "Practitioner/pr-17"
    principal = world.tokens.live_principal(claims)
    assert principal.roles == {"physician"}

    keys = KeySet.import_key_set(world.service.jwks())
    id_token = jwt.decode(tokens["id_token"], keys, algorithms=["RS256"]).claims
    assert id_token["iss"] == ISSUER
    assert id_token["aud"] == client.client_id
    assert id_token["sub"] == "doc01"
    assert id_token["nonce"] == "nonce-1"
    assert id_token["fhirUser"] == f"{FHIR}/Practitioner/pr-17"
    assert "oauth-consent-grant" in world.actions()
    assert "oauth-token-issue" in world.actions()


def test_standalone_patient_launch_binds_the_token_to_the_patient(world: World) -> None:
    world.user("nurse01", ["nurse"])
    client = world.public()
    verifier, challenge = pkce_pair()
    params = authorize_params(client.client_id, challenge, "launch/patient patient/*.rs")
    view = world.service.consent_view(get(params), "nurse01")
    assert isinstance(view, ConsentView) and view.needs_patient
    with pytest.raises(PatientRequired):
        world.service.decide(get(params), "nurse01", approve=True, patient="")
    with pytest.raises(PatientRequired):
        world.service.decide(get(params), "nurse01", approve=True, patient="../Patient/x y")
    code = approve(world, "nurse01", params, patient="pat-42")
    tokens = body(exchange(world, client.client_id, code, verifier))
    assert tokens["patient"] == "pat-42"
    assert world.tokens.verify(tokens["access_token"]).patient == "pat-42"
    grant = next(e for e in world.sink.events if e.action == "oauth-consent-grant")
    assert grant.patient_ids == ("pat-42",)


def test_denied_consent_redirects_with_access_denied_and_issues_nothing(world: World) -> None:
    world.user("doc01", ["physician"])
    client = world.public()
    params = authorize_params(client.client_id, pkce_pair()[1])
    response = world.service.decide(get(params), "doc01", approve=False, patient=None)
    found = redirect_params(response)
    assert found["error"] == "access_denied"
    assert found["state"] == "st-1"
    assert "code" not in found
    assert counts(world) == (0, 0)
    assert "oauth-consent-deny" in world.actions()


def test_scopes_only_narrow(world: World) -> None:
    """Requested x client ceiling x role ceiling: a clerk asking for everything gets
    what the ceiling allows, without delete; system/ never reaches a user."""
    world.user("clerk01", ["registration"])
    world.user("bill01", ["billing"])
    wide = world.public(scopes=["user/*.cruds", "patient/Patient.rs"])
    narrow = world.public()  # default ceiling: user/*.rs patient/*.rs ...

    clerk = login_flow(world, "clerk01", wide, "user/*.cruds system/*.rs")
    assert clerk["scope"] == "user/*.crus"
    billing = login_flow(world, "bill01", wide, "user/*.cruds")
    assert billing["scope"] == "user/*.rs"
    limited = login_flow(world, "clerk01", narrow, "user/Observation.cruds")
    assert limited["scope"] == "user/Observation.rs"
    v1 = login_flow(world, "clerk01", narrow, "user/Patient.read")
    assert v1["scope"] == "user/Patient.read"  # unchanged scopes keep the app's spelling

    _verifier, challenge = pkce_pair()
    response = world.service.consent_view(
        get(authorize_params(wide.client_id, challenge, "system/*.rs")), "clerk01"
    )
    assert isinstance(response, OAuthResponse)
    assert redirect_params(response)["error"] == "invalid_scope"


@pytest.mark.parametrize(
    "override",
    [
        {"code_challenge": ""},  # PKCE missing
        {"code_challenge_method": "plain"},
        {"code_challenge_method": ""},  # defaults to plain: refused
        {"code_challenge": "short"},
        {"scope": "user/Observation.rs?category=laboratory"},  # v2 query scope
        {"scope": "user/*.rs " * 300},  # oversized
        {"scope": ""},
        {"response_type": "token"},  # implicit grant
        {"aud": "https://elsewhere.example/fhir"},
    ],
)
def test_bad_authorization_requests_are_refused_and_store_nothing(
    world: World, override: dict[str, str]
) -> None:
    world.user("doc01", ["physician"])
    client = world.public()
    params = authorize_params(client.client_id, pkce_pair()[1], **override)
    if override.get("code_challenge_method") == "":
        params = [(k, v) for k, v in params if k != "code_challenge_method"]
    try:
        response = world.service.decide(get(params), "doc01", approve=True, patient=None)
    except BadAuthorization:
        pass
    else:
        found = redirect_params(response)
        assert found["error"] in ("invalid_request", "invalid_scope", "unsupported_response_type")
        assert "code" not in found
        # Generic: the description never echoes the request.
        assert found.get("error_description", "") in (
            "the request is invalid",
            "the requested scope is invalid",
            "unsupported response type",
        )
    assert counts(world) == (0, 0)
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(oauth_codes)).scalar_one() == 0
    assert "oauth-request-refuse" in world.actions()


def test_unregistered_redirect_uri_or_client_is_never_redirected_to(world: World) -> None:
    world.user("doc01", ["physician"])
    client = world.public()
    challenge = pkce_pair()[1]
    for params in (
        authorize_params(client.client_id, challenge, redirect_uri="https://evil.example/cb"),
        authorize_params(client.client_id, challenge, redirect_uri=REDIRECT + "/x"),
        authorize_params(client.client_id, challenge, redirect_uri=REDIRECT + "?a=1"),
        authorize_params("no-such-client", challenge),
    ):
        with pytest.raises(BadAuthorization):
            world.service.consent_view(get(params), "doc01")
        with pytest.raises(BadAuthorization):
            world.service.decide(get(params), "doc01", approve=True, patient=None)
    assert counts(world) == (0, 0)


def test_token_exchange_refusals_change_nothing(world: World) -> None:
    world.user("doc01", ["physician"])
    client = world.public()
    other = world.public()
    verifier, challenge = pkce_pair()
    code = approve(world, "doc01", authorize_params(client.client_id, challenge))

    wrong_verifier = pkce_pair()[0]
    for response in (
        exchange(world, client.client_id, code, wrong_verifier),
        exchange(world, client.client_id, code, ""),  # verifier missing
        exchange(world, client.client_id, code, verifier, redirect="https://evil.example/cb"),
        exchange(world, other.client_id, code, verifier),  # another client's code
        exchange(world, client.client_id, code + "x", verifier),
        exchange(world, client.client_id, "x" * 5000, verifier),
    ):
        assert response.status in (400, 401), response.body
        assert body(response)["error"] in ("invalid_grant", "invalid_request", "invalid_client")
        assert set(body(response)) <= {"error", "error_description"}
    assert counts(world) == (0, 0)  # the code is still unused

    ok = exchange(world, client.client_id, code, verifier)
    assert ok.status == 200


def test_code_is_single_use_and_reuse_revokes_what_it_bought(world: World) -> None:
    world.user("doc01", ["physician"])
    client = world.public()
    verifier, challenge = pkce_pair()
    code = approve(
        world, "doc01", authorize_params(client.client_id, challenge, "user/*.rs offline_access")
    )
    first = body(exchange(world, client.client_id, code, verifier))
    assert live(world, first["access_token"])

    again = exchange(world, client.client_id, code, verifier)
    assert again.status == 400 and body(again)["error"] == "invalid_grant"
    assert not live(world, first["access_token"])
    assert refresh(world, client.client_id, first["refresh_token"]).status == 400
    assert "oauth-code-reuse" in world.actions()


def test_code_expires_after_sixty_seconds(world: World) -> None:
    world.user("doc01", ["physician"])
    client = world.public()
    verifier, challenge = pkce_pair()
    code = approve(world, "doc01", authorize_params(client.client_id, challenge))
    world.clock.advance(seconds=61)
    response = exchange(world, client.client_id, code, verifier)
    assert body(response)["error"] == "invalid_grant"
    assert counts(world) == (0, 0)


def test_code_of_a_user_terminated_since_consent_buys_nothing(world: World) -> None:
    world.user("doc01", ["physician"])
    client = world.public()
    verifier, challenge = pkce_pair()
    code = approve(world, "doc01", authorize_params(client.client_id, challenge))
    world.clock.advance(seconds=5)
    world.accounts.terminate("doc01", by=ADMIN)
    response = exchange(world, client.client_id, code, verifier)
    assert body(response)["error"] == "invalid_grant"


# -- refresh tokens ---------------------------------------------------------------------


def test_refresh_rotates_and_reuse_revokes_the_family(world: World) -> None:
    world.user("doc01", ["physician"])
    client = world.public()
    first = login_flow(world, "doc01", client, "user/*.rs offline_access")

    world.clock.advance(minutes=1)
    second = body(refresh(world, client.client_id, first["refresh_token"]))
    assert second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == first["scope"]
    assert live(world, second["access_token"])

    # The old refresh token again: reuse.  Everything in the family dies.
    replay = refresh(world, client.client_id, first["refresh_token"])
    assert body(replay)["error"] == "invalid_grant"
    assert body(refresh(world, client.client_id, second["refresh_token"]))["error"] == (
        "invalid_grant"
    )
    assert not live(world, second["access_token"])
    reuse = next(e for e in world.sink.events if e.action == "oauth-refresh-reuse")
    assert reuse.outcome == "denied"
    assert reuse.detail["refresh_tokens_revoked"] >= 1


def test_refresh_never_widens_and_can_narrow(world: World) -> None:
    world.user("doc01", ["physician"])
    client = world.public(scopes=["user/*.cruds", "offline_access"])
    first = login_flow(world, "doc01", client, "user/Observation.rs offline_access")
    wider = refresh(world, client.client_id, first["refresh_token"], scope="user/*.rs")
    assert body(wider)["error"] == "invalid_scope"
    other_client = world.public(scopes=["user/*.cruds", "offline_access"])
    assert refresh(world, other_client.client_id, first["refresh_token"]).status == 400
    narrower = body(
        refresh(world, client.client_id, first["refresh_token"], scope="user/Observation.r")
    )
    assert narrower["scope"] == "user/Observation.r"
    assert "refresh_token" not in narrower  # offline_access was dropped with it


def test_refresh_stops_for_terminated_users_and_revoked_clients(world: World) -> None:
    world.user("doc01", ["physician"])
    world.user("doc02", ["physician"])
    client = world.public()
    mine = login_flow(world, "doc01", client, "user/*.rs offline_access")
    theirs = login_flow(world, "doc02", client, "user/*.rs offline_access")
    world.clock.advance(seconds=2)
    world.accounts.terminate("doc01", by=ADMIN)
    assert not live(world, mine["access_token"])
    assert body(refresh(world, client.client_id, mine["refresh_token"]))["error"] == (
        "invalid_grant"
    )

    world.clients.revoke(client.client_id, by=ADMIN)
    assert not live(world, theirs["access_token"])  # issued with a revoked refresh row
    response = refresh(world, client.client_id, theirs["refresh_token"])
    assert response.status in (400, 401)
    assert body(response)["error"] == "invalid_client"


def test_refresh_family_ends_after_twelve_hours(world: World) -> None:
    world.user("doc01", ["physician"])
    client = world.public()
    tokens = login_flow(world, "doc01", client, "user/*.rs offline_access")
    for _ in range(11):  # rotation never extends the family
        world.clock.advance(hours=1)
        tokens = body(refresh(world, client.client_id, tokens["refresh_token"]))
    world.clock.advance(hours=1, seconds=1)
    assert body(refresh(world, client.client_id, tokens["refresh_token"]))["error"] == (
        "invalid_grant"
    )


# -- backend services -------------------------------------------------------------------


def backend_token(w: World, client_id: str, assertion: str, scope: str = "system/*.rs") -> Any:
    return w.service.token(
        post(
            "/oauth/token",
            {
                "grant_type": "client_credentials",
                "scope": scope,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
            },
        )
    )


@pytest.mark.parametrize("make_key", [BackendKey.rsa, BackendKey.ec])
def test_backend_service_gets_a_client_token(world: World, make_key: Any) -> None:
    key = make_key()
    client = world.backend(key, scopes=["system/*.rs"])
    assertion = key.assertion(client.client_id, TOKEN_URL, world.clock.now())
    response = backend_token(world, client.client_id, assertion, "system/Patient.rs user/*.rs")
    tokens = body(response)
    assert response.status == 200, tokens
    assert tokens["scope"] == "system/Patient.rs"
    assert "refresh_token" not in tokens
    principal = world.tokens.live_principal(world.tokens.verify(tokens["access_token"]))
    assert principal.kind == "client"
    assert principal.roles == {"him"}

    world.clients.revoke(client.client_id, by=ADMIN)
    assert not live(world, tokens["access_token"])


def test_bad_assertions_are_refused(world: World) -> None:
    key = BackendKey.rsa()
    client = world.backend(key)
    stranger = BackendKey.rsa()  # same kid, unregistered key: a forgery
    now = world.clock.now()
    cid = client.client_id
    good = key.assertion(cid, TOKEN_URL, now, jti="once")
    assert backend_token(world, cid, good).status == 200
    hs_key = OctKey.generate_key(256)
    bad = {
        "replayed": good,
        "wrong audience": key.assertion(cid, f"{ISSUER}/oauth/authorize", now),
        "audience list": key.assertion(cid, [TOKEN_URL, "https://other"], now),  # type: ignore[arg-type]
        "too long-lived": key.assertion(cid, TOKEN_URL, now, lifetime_s=3600),
        "expired": key.assertion(cid, TOKEN_URL, now, lifetime_s=-1),
        "forged": stranger.assertion(cid, TOKEN_URL, now),
        "RS256": key.assertion(cid, TOKEN_URL, now, alg="RS256"),
        "alg none": unsigned(
            {"iss": cid, "sub": cid, "aud": TOKEN_URL, "exp": int(now.timestamp()) + 60}
        ),
        "HS384": jwt.encode(
            {"alg": "HS384", "kid": "k1"},
            {"iss": cid, "sub": cid, "aud": TOKEN_URL, "exp": int(now.timestamp()) + 60},
            hs_key,
            algorithms=["HS384"],
        ),
        "sub differs": key.assertion(cid, TOKEN_URL, now, sub="someone-else"),
        "no jti": key.assertion(cid, TOKEN_URL, now, jti=""),
        "garbage": "a." + "b" * 8000 + ".c",
    }
    before = world.actions().count("oauth-token-issue")
    for name, assertion in bad.items():
        response = backend_token(world, cid, assertion)
        assert response.status == 401, name
        assert body(response) == {
            "error": "invalid_client",
            "error_description": "client authentication failed",
        }, name
    assert world.actions().count("oauth-token-issue") == before
    refusals = [e for e in world.sink.events if e.action == "oauth-assertion-refuse"]
    reasons = {e.detail["reason"] for e in refusals}
    assert {"replayed-jti", "wrong-audience", "expiry-too-far-ahead", "bad-signature"} <= reasons
    assert "algorithm-not-allowed" in reasons
    # Nothing of an assertion is kept in the ledger events.
    dumped = json.dumps([e.detail for e in world.sink.events])
    assert good not in dumped and good.split(".")[2] not in dumped


def test_backend_scopes_stay_within_the_registered_ceiling(world: World) -> None:
    key = BackendKey.rsa()
    client = world.backend(key, scopes=["system/Observation.rs"])
    now = world.clock.now()
    ok = backend_token(world, client.client_id, key.assertion(client.client_id, TOKEN_URL, now))
    assert body(ok)["scope"] == "system/Observation.rs"
    none = backend_token(
        world,
        client.client_id,
        key.assertion(client.client_id, TOKEN_URL, now),
        scope="system/Patient.rs",
    )
    assert body(none)["error"] == "invalid_scope"


def test_a_public_client_cannot_use_client_credentials(world: World) -> None:
    client = world.public()
    response = world.service.token(
        post(
            "/oauth/token",
            {"grant_type": "client_credentials", "client_id": client.client_id, "scope": "x"},
        )
    )
    assert response.status in (400, 401)
    assert body(response)["error"] in ("invalid_client", "invalid_scope")


# -- revocation and introspection -------------------------------------------------------


def test_revocation_of_access_and_refresh_tokens(world: World) -> None:
    world.user("doc01", ["physician"])
    client = world.public()
    other = world.public()
    tokens = login_flow(world, "doc01", client, "user/*.rs offline_access")

    # Another client cannot revoke it: 200 all the same, and nothing changes.
    response = world.service.revoke(
        post("/oauth/revoke", {"token": tokens["access_token"], "client_id": other.client_id})
    )
    assert response.status == 200
    assert live(world, tokens["access_token"])

    response = world.service.revoke(
        post("/oauth/revoke", {"token": tokens["access_token"], "client_id": client.client_id})
    )
    assert response.status == 200
    assert not live(world, tokens["access_token"])

    world.service.revoke(
        post("/oauth/revoke", {"token": tokens["refresh_token"], "client_id": client.client_id})
    )
    assert body(refresh(world, client.client_id, tokens["refresh_token"]))["error"] == (
        "invalid_grant"
    )
    unknown = world.service.revoke(
        post("/oauth/revoke", {"token": "pgr_nothing", "client_id": client.client_id})
    )
    assert unknown.status == 200
    assert world.actions().count("oauth-token-revoke") == 2


def test_introspection_is_for_backend_clients_and_says_little_when_inactive(
    world: World,
) -> None:
    world.user("doc01", ["physician"])
    app = world.public()
    key = BackendKey.rsa()
    backend = world.backend(key)
    tokens = login_flow(world, "doc01", app, "user/*.rs offline_access")

    def introspect(token: str) -> OAuthResponse:
        assertion = key.assertion(backend.client_id, TOKEN_URL, world.clock.now())
        return world.service.introspect(
            post(
                "/oauth/introspect",
                {
                    "token": token,
                    "client_assertion_type": (
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                    ),
                    "client_assertion": assertion,
                },
            )
        )

    active = body(introspect(tokens["access_token"]))
    assert active["active"] is True
    assert active["sub"] == "doc01"
    assert active["client_id"] == app.client_id
    assert active["scope"] == "offline_access user/*.rs"
    assert body(introspect(tokens["refresh_token"]))["active"] is True

    world.tokens.revoke(world.tokens.verify(tokens["access_token"]))
    assert body(introspect(tokens["access_token"])) == {"active": False}
    assert body(introspect("garbage")) == {"active": False}
    world.clock.advance(minutes=16)
    assert body(introspect(tokens["access_token"])) == {"active": False}

    # A public client may not introspect at all.
    response = world.service.introspect(
        post("/oauth/introspect", {"token": tokens["refresh_token"], "client_id": app.client_id})
    )
    assert response.status == 401
    assert body(response)["error"] == "invalid_client"


# -- operator tokens and events ---------------------------------------------------------


def test_operator_issued_user_token(world: World) -> None:
    from phiguard.identity.oauth import OAuthError

    world.user("doc01", ["physician"])
    issued = world.service.issue_for_user("doc01", ["user/*.cruds"], by=ADMIN)
    assert issued.claims.scopes == {"user/*.crus"}
    assert live(world, issued.token)
    with pytest.raises(OAuthError):
        world.service.issue_for_user("doc01", ["system/*.rs"], by=ADMIN)
    with pytest.raises(OAuthError):
        world.service.issue_for_user("nobody", [], by=ADMIN)
    world.accounts.suspend("doc01", by=ADMIN)
    with pytest.raises(OAuthError):
        world.service.issue_for_user("doc01", [], by=ADMIN)
    event = next(e for e in world.sink.events if e.action == "oauth-token-issue")
    assert event.principal == ADMIN
    assert event.detail["account"] == "doc01"


def test_no_event_carries_a_secret(world: World) -> None:
    world.user("doc01", ["physician"])
    client = world.public()
    verifier, challenge = pkce_pair()
    params = authorize_params(client.client_id, challenge, "openid user/*.rs offline_access")
    code = approve(world, "doc01", params)
    tokens = body(exchange(world, client.client_id, code, verifier))
    rotated = body(refresh(world, client.client_id, tokens["refresh_token"]))
    refresh(world, client.client_id, tokens["refresh_token"])  # reuse
    secrets_seen = [
        code,
        verifier,
        tokens["access_token"],
        tokens["refresh_token"],
        tokens["id_token"],
        rotated["access_token"],
        rotated["refresh_token"],
    ]
    dumped = json.dumps([(e.action, e.principal, e.detail) for e in world.sink.events])
    for secret in secrets_seen:
        assert secret not in dumped
        assert secret.split(".")[-1] not in dumped
