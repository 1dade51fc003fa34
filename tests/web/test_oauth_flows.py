"""OAuth2 / SMART against a live ``phiguard serve``, driven by Authlib's client library.

The user's browser is a ``requests`` session holding the console cookies of a
signed-in AAL2 session; the app is Authlib's ``OAuth2Session``.  Every token is then
used against ``/fhir``: authenticated callers get past authentication (the access
policy then decides: 200, 403 or 404, never 401), revoked, terminated, expired and
forged ones get 401 with an OperationOutcome.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign

from phiguard.clock import FixedClock
from phiguard.identity.accounts import Accounts
from phiguard.identity.clients import ClientRegistry
from phiguard.identity.passwords import PasswordHashing
from phiguard.identity.sessions import SessionStore
from phiguard.identity.tokens import TokenService
from phiguard.records.context import system_context
from phiguard.system import System
from tests.cli import cli_env, make_home, opened
from tests.identity.conftest import CHEAP
from tests.support.oauth import BackendKey, unsigned
from tests.support.server import LiveServer, live_server

REDIRECT = "https://app.example.org/callback"
PASSWORD = "violet-Ferry-orbit-57"
ADMIN = "operator/test"


@dataclass
class Env:
    server: LiveServer
    home: Path
    public_id: str
    backend_id: str
    backend_key: BackendKey

    @property
    def token_url(self) -> str:
        return f"{self.server.base}/oauth/token"

    def fhir_get(self, token: str) -> requests.Response:
        return requests.get(
            f"{self.server.fhir}/Patient/nobody",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )


def _fill(system: System) -> None:
    system.vault.repository(system_context()).create(
        {"resourceType": "Patient", "name": [{"family": "Exported"}]}
    )
    accounts = Accounts.from_system(system, hashing=PasswordHashing(CHEAP))
    for user_id, roles in (
        ("doc01", ["physician"]),
        ("doc02", ["physician"]),
        ("doc03", ["physician"]),
        ("clerk01", ["registration"]),
    ):
        accounts.add(
            user_id,
            f"Staff {user_id}",
            f"{user_id}@example.org",
            roles,
            PASSWORD,
            by=ADMIN,
            practitioner_id="pr-1" if user_id == "doc01" else None,
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    home = make_home(tmp_path_factory.mktemp("oauth-live") / "home", _fill)
    key = BackendKey.rsa()
    with opened(home) as system:
        registry = ClientRegistry.from_system(system)
        public = registry.add(
            "Ward app",
            "public",
            by=ADMIN,
            redirect_uris=[REDIRECT],
            scopes=[
                "openid",
                "fhirUser",
                "launch/patient",
                "offline_access",
                "online_access",
                "user/*.cruds",
            ],
        )
        backend = registry.add("Lab feed", "backend", by=ADMIN, jwks=key.jwks(), roles=["him"])
    with live_server(home, "", cli_env()) as server:
        yield Env(server, home, public.client_id, backend.client_id, key)


def browser_for(env: Env, user_id: str) -> tuple[requests.Session, str]:
    """A browser signed in to the console as ``user_id`` (AAL2), and its CSRF token."""
    with opened(env.home) as system:
        new = SessionStore(system.engine, system.clock).create(user_id, 2, address="127.0.0.1")
    browser = requests.Session()
    browser.cookies.set("phiguard", new.session_id, domain="127.0.0.1", path="/")
    browser.cookies.set("phiguard-csrf", new.csrf_token, domain="127.0.0.1", path="/")
    return browser, new.csrf_token


def app_session(env: Env, scope: str) -> OAuth2Session:
    return OAuth2Session(
        env.public_id,
        redirect_uri=REDIRECT,
        scope=scope,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )


def consent_form(page: requests.Response) -> str:
    match = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert match, page.text[:500]
    return html.unescape(match.group(1))


def sign_in_and_get_tokens(
    env: Env, user_id: str, scope: str, *, patient: str | None = None
) -> dict[str, Any]:
    app = app_session(env, scope)
    verifier = secrets.token_urlsafe(48)
    url, state = app.create_authorization_url(
        f"{env.server.base}/oauth/authorize",
        code_verifier=verifier,
        nonce="n-1",
        aud=env.server.fhir,
    )
    browser, csrf = browser_for(env, user_id)
    page = browser.get(url, allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.text[:500]
    csp = page.headers["content-security-policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp
    assert "form-action 'self' https://app.example.org" in csp
    assert page.headers["cache-control"] == "no-store"
    form = {"csrf": csrf, "decision": "approve"}
    if patient:
        form["patient"] = patient
    answer = browser.post(
        env.server.base + consent_form(page), data=form, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 303, answer.text[:500]
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?")
    assert parse_qs(urlsplit(location).query)["state"] == [state]
    token: dict[str, Any] = app.fetch_token(
        env.token_url, authorization_response=location, code_verifier=verifier
    )
    return token


class FreshPrivateKeyJWT(PrivateKeyJWT):  # type: ignore[misc]
    """Authlib's PrivateKeyJWT with a fresh jti and a four-minute lifetime per assertion
    (its defaults -- one hour, and a jti kept across calls -- are refused here)."""

    def sign(self, auth: Any, token_endpoint: str) -> str:
        token: str = private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            alg=self.alg,
            claims={"jti": secrets.token_hex(16)},
            header={"kid": "k1"},
            expires_in=240,
        )
        return token


def backend_session(env: Env, scope: str = "system/*.rs") -> OAuth2Session:
    session = OAuth2Session(
        env.backend_id,
        env.backend_key.key,
        scope=scope,
        token_endpoint_auth_method="private_key_jwt",
    )
    session.register_client_auth_method(FreshPrivateKeyJWT(env.token_url, alg="RS384"))
    return session


def assert_401_outcome(response: requests.Response) -> None:
    assert response.status_code == 401, response.text[:300]
    doc = response.json()
    assert doc["resourceType"] == "OperationOutcome"
    assert "authentication failed" in response.text


# -- discovery --------------------------------------------------------------------------


def test_smart_configuration_and_jwks(env: Env) -> None:
    conf = requests.get(f"{env.server.base}/.well-known/smart-configuration", timeout=10).json()
    assert conf["issuer"] == env.server.base
    assert conf["token_endpoint"] == env.token_url
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert conf["token_endpoint_auth_methods_supported"] == ["private_key_jwt", "none"]
    assert conf["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert {
        "launch-standalone",
        "client-public",
        "client-confidential-asymmetric",
        "context-standalone-patient",
        "permission-v2",
        "sso-openid-connect",
    } <= set(conf["capabilities"])
    keys = requests.get(conf["jwks_uri"], timeout=10).json()["keys"]
    assert keys and all(k["kty"] == "RSA" and "d" not in k for k in keys)
    metadata = requests.get(f"{env.server.fhir}/metadata", timeout=10).json()
    security = metadata["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["token"] == conf["token_endpoint"]
    assert uris["authorize"] == conf["authorization_endpoint"]


# -- authorization code + PKCE ----------------------------------------------------------


def test_authorization_code_with_pkce_gives_a_token_that_passes_authentication(
    env: Env,
) -> None:
    token = sign_in_and_get_tokens(env, "doc01", "openid fhirUser user/*.rs offline_access")
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 900
    assert "id_token" in token and token["refresh_token"].startswith("pgr_")
    response = env.fhir_get(token["access_token"])
    assert response.status_code in (200, 403, 404), response.text[:300]


def test_standalone_patient_launch_over_http(env: Env) -> None:
    token = sign_in_and_get_tokens(env, "doc02", "launch/patient user/*.rs", patient="pat-9")
    assert token["patient"] == "pat-9"


def test_not_signed_in_goes_to_login_and_no_csrf_changes_nothing(env: Env) -> None:
    app = app_session(env, "user/*.rs")
    verifier = secrets.token_urlsafe(48)
    url, _ = app.create_authorization_url(
        f"{env.server.base}/oauth/authorize", code_verifier=verifier
    )
    anonymous = requests.get(url, allow_redirects=False, timeout=10)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/login?next=%2Foauth%2Fauthorize%3F")

    browser, _csrf = browser_for(env, "doc03")
    page = browser.get(url, allow_redirects=False, timeout=10)
    forged = browser.post(
        env.server.base + consent_form(page),
        data={"csrf": "not-the-token", "decision": "approve"},
        allow_redirects=False,
        timeout=10,
    )
    assert forged.status_code == 403
    assert "location" not in forged.headers


def test_bad_authorization_input_is_refused(env: Env) -> None:
    browser, _ = browser_for(env, "doc03")
    base = f"{env.server.base}/oauth/authorize"
    common = {
        "response_type": "code",
        "client_id": env.public_id,
        "scope": "user/*.rs",
        "state": "s",
        "code_challenge": "A" * 43,
        "code_challenge_method": "S256",
    }
    wrong_redirect = browser.get(
        base, params={**common, "redirect_uri": "https://evil.example/cb"}, allow_redirects=False
    )
    assert wrong_redirect.status_code == 400
    assert "location" not in wrong_redirect.headers
    for override in ({"code_challenge_method": "plain"}, {"code_challenge": ""}):
        refused = browser.get(
            base, params={**common, "redirect_uri": REDIRECT, **override}, allow_redirects=False
        )
        assert refused.status_code == 302
        found = parse_qs(urlsplit(refused.headers["location"]).query)
        assert found["error"] == ["invalid_request"] and "code" not in found
    huge = browser.get(base, params={**common, "state": "x" * 10_000}, allow_redirects=False)
    assert huge.status_code == 400


# -- refresh, revocation, termination ---------------------------------------------------


def test_refresh_rotation_with_reuse_detection(env: Env) -> None:
    first = sign_in_and_get_tokens(env, "doc01", "user/*.rs offline_access")
    app = app_session(env, "user/*.rs offline_access")
    second = app.refresh_token(env.token_url, refresh_token=first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    assert env.fhir_get(second["access_token"]).status_code != 401

    reuse = requests.post(
        env.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": env.public_id,
        },
        timeout=10,
    )
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    again = requests.post(
        env.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": second["refresh_token"],
            "client_id": env.public_id,
        },
        timeout=10,
    )
    assert again.json()["error"] == "invalid_grant"
    assert_401_outcome(env.fhir_get(second["access_token"]))


def _refresh(env: Env, refresh_token: str) -> requests.Response:
    return requests.post(
        env.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": env.public_id,
        },
        timeout=10,
    )


def test_online_access_ends_when_the_user_signs_out(env: Env) -> None:
    online = sign_in_and_get_tokens(env, "doc03", "user/*.rs online_access")
    offline = sign_in_and_get_tokens(env, "doc03", "user/*.rs offline_access")
    renewed = _refresh(env, online["refresh_token"])
    assert renewed.status_code == 200, renewed.text  # signed in: refreshes like any other
    online_next = renewed.json()["refresh_token"]
    with opened(env.home) as system:  # the user signs out everywhere
        assert SessionStore(system.engine, system.clock).revoke_all("doc03") >= 1
    refused = _refresh(env, online_next)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    # The family is gone with it: its last access token no longer works either.
    assert_401_outcome(env.fhir_get(renewed.json()["access_token"]))
    # offline_access is meant to outlive the session.
    assert _refresh(env, offline["refresh_token"]).status_code == 200


def test_revoked_access_token_is_refused_at_fhir(env: Env) -> None:
    token = sign_in_and_get_tokens(env, "doc01", "user/*.rs")
    assert env.fhir_get(token["access_token"]).status_code != 401
    app = app_session(env, "user/*.rs")
    revoked = app.revoke_token(
        f"{env.server.base}/oauth/revoke",
        token=token["access_token"],
        token_type_hint="access_token",
    )
    assert revoked.status_code == 200
    assert_401_outcome(env.fhir_get(token["access_token"]))


def test_termination_ends_access_and_refresh_at_the_next_request(env: Env) -> None:
    token = sign_in_and_get_tokens(env, "clerk01", "user/*.cruds offline_access")
    assert set(token["scope"].split()) == {"offline_access", "user/*.crus"}  # no delete
    assert env.fhir_get(token["access_token"]).status_code != 401
    with opened(env.home) as system:
        Accounts.from_system(system).terminate("clerk01", by=ADMIN)
    assert_401_outcome(env.fhir_get(token["access_token"]))
    refresh = requests.post(
        env.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": env.public_id,
        },
        timeout=10,
    )
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"


# -- backend services and introspection -------------------------------------------------


def test_backend_service_with_a_signed_assertion_and_introspection(env: Env) -> None:
    backend = backend_session(env)
    token = backend.fetch_token(env.token_url, grant_type="client_credentials")
    assert token["scope"] == "system/*.rs"
    assert "refresh_token" not in token
    assert env.fhir_get(token["access_token"]).status_code != 401

    user_token = sign_in_and_get_tokens(env, "doc01", "user/*.rs")
    described = backend.introspect_token(
        f"{env.server.base}/oauth/introspect", token=user_token["access_token"]
    ).json()
    assert described["active"] is True and described["sub"] == "doc01"
    inactive = backend.introspect_token(
        f"{env.server.base}/oauth/introspect", token="pgr_unknown"
    ).json()
    assert inactive == {"active": False}


def test_assertion_replay_and_wrong_audience_are_refused(env: Env) -> None:
    now = dt.datetime.now(dt.UTC)
    key, cid = env.backend_key, env.backend_id
    good = key.assertion(cid, env.token_url, now)
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    first = requests.post(env.token_url, data={**form, "client_assertion": good}, timeout=10)
    assert first.status_code == 200
    for assertion in (
        good,  # replay
        key.assertion(cid, f"{env.server.base}/oauth/introspect", now),
        key.assertion(cid, env.token_url, now, lifetime_s=3600),
    ):
        refused = requests.post(
            env.token_url, data={**form, "client_assertion": assertion}, timeout=10
        )
        assert refused.status_code == 401
        assert refused.json() == {
            "error": "invalid_client",
            "error_description": "client authentication failed",
        }


# -- tokens that must never pass --------------------------------------------------------


def test_expired_forged_and_unsigned_tokens_get_401(env: Env) -> None:
    genuine = sign_in_and_get_tokens(env, "doc01", "user/*.rs")["access_token"]
    with opened(env.home) as system:
        past = FixedClock(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20))
        expired = TokenService(
            system.engine,
            system.keyring,
            past,
            issuer=env.server.base,
            audience=env.server.fhir,
        ).issue(kind="user", subject="doc01", client_id=env.public_id, scopes=["user/*.rs"])
    head, body, sig = genuine.split(".")
    tampered = f"{head}.{body[:-2]}{'AA' if body[-2:] != 'AA' else 'BB'}.{sig}"
    none_alg = unsigned(
        {"sub": "doc01", "iss": env.server.base, "aud": env.server.fhir, "kind": "user"},
        {"alg": "none", "typ": "at+jwt", "kid": "1"},
    )
    for bad in (expired.token, tampered, none_alg, genuine[:-4], "x" * 5000):
        assert_401_outcome(env.fhir_get(bad))


def test_oversized_token_request_changes_nothing(env: Env) -> None:
    response = requests.post(
        env.token_url,
        data={"grant_type": "authorization_code", "code": "c" * 20_000},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request"}


def test_an_application_acts_only_for_its_registered_purposes(env: Env) -> None:
    def get(token: str, purpose: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if purpose is not None:
            headers["X-Purpose-Of-Use"] = purpose
        return requests.get(f"{env.server.fhir}/Patient/nobody", headers=headers, timeout=10)

    ward = sign_in_and_get_tokens(env, "doc03", "user/*.rs")["access_token"]
    assert get(ward).status_code == 404  # TREAT by default: decided, and absent
    assert get(ward, "TREAT").status_code == 404
    # The person's emergency purposes pass to the policies (no grant here: absent).
    assert get(ward, "BTG").status_code == 404
    refused = get(ward, "HRESCH")
    assert refused.status_code == 403
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "may not act for purpose of use HRESCH (allowed: TREAT, ETREAT, BTG)" in refused.text

    feed = backend_session(env).fetch_token(env.token_url, grant_type="client_credentials")
    token = feed["access_token"]
    assert get(token).status_code not in (401, 403)  # HOPERAT by default
    for purpose in ("TREAT", "BTG"):
        assert get(token, purpose).status_code == 403, purpose


def test_a_backend_service_runs_a_bulk_export(env: Env) -> None:
    """SMART Backend Services + Bulk Data: the HIM feed exports over a real server."""
    session = backend_session(env)
    session.fetch_token(env.token_url, grant_type="client_credentials")
    kicked = session.get(
        f"{env.server.fhir}/$export?_type=Patient", headers={"Prefer": "respond-async"}
    )
    assert kicked.status_code == 202, kicked.text[:300]
    status = kicked.headers["Content-Location"]
    deadline = time.monotonic() + 60
    while True:
        polled = session.get(status)
        if polled.status_code == 200:
            break
        assert polled.status_code == 202 and time.monotonic() < deadline, polled.text[:300]
        time.sleep(0.2)
    manifest = polled.json()
    assert manifest["requiresAccessToken"] is True
    assert [o["type"] for o in manifest["output"]] == ["Patient"]
    for item in manifest["output"]:
        got = session.get(item["url"])
        assert got.status_code == 200
        assert len(got.text.splitlines()) == item["count"]
    # Another caller cannot see it; the owner discards it.
    other = sign_in_and_get_tokens(env, "doc02", "user/*.rs")["access_token"]
    assert (
        requests.get(status, headers={"Authorization": f"Bearer {other}"}, timeout=10).status_code
        == 404
    )
    assert session.delete(status).status_code == 202
    assert session.get(status).status_code == 404
