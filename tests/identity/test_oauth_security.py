"""The authorization server against an attacker: what ends a token, what a repr shows.

Builds on the in-process world of ``test_oauth.py`` (fixed clock, plain requests).
"""

from __future__ import annotations

from phiguard.identity.oauth import HttpRequest, OAuthResponse
from tests.identity.test_oauth import (
    ADMIN,
    REDIRECT,
    World,
    authorize_params,
    body,
    exchange,
    get,
    live,
    login_flow,
    post,
    world,  # noqa: F401 - the fixture
)
from tests.support.oauth import pkce_pair


def test_revoking_a_client_ends_every_access_token_it_holds(world: World) -> None:  # noqa: F811
    """``client revoke`` ends a client at once, tokens without a refresh token too."""
    world.user("doc01", ["physician"])
    client = world.public()
    online = login_flow(world, "doc01", client, "user/*.rs")
    offline = login_flow(world, "doc01", client, "user/*.rs offline_access")
    assert "refresh_token" not in online and "refresh_token" in offline
    assert live(world, online["access_token"]) and live(world, offline["access_token"])
    other = world.public()
    bystander = login_flow(world, "doc01", other, "user/*.rs")

    world.clients.revoke(client.client_id, by=ADMIN)
    assert not live(world, online["access_token"])
    assert not live(world, offline["access_token"])
    assert live(world, bystander["access_token"])  # another app is not touched


def test_operator_tokens_outlive_no_client(world: World) -> None:  # noqa: F811
    """``phiguard token issue`` tokens name no registered client; they stay valid."""
    world.user("doc01", ["physician"])
    issued = world.service.issue_for_user("doc01", ["user/*.rs"], by=ADMIN)
    assert live(world, issued.token)


def test_requests_and_responses_keep_their_secrets_out_of_repr(world: World) -> None:  # noqa: F811
    """A logged or traced request object must not carry a code, verifier, token or cookie."""
    world.user("doc01", ["physician"])
    client = world.public()
    verifier, challenge = pkce_pair()
    consent = world.service.decide(
        get(authorize_params(client.client_id, challenge)), "doc01", approve=True, patient=None
    )
    assert consent.location is not None
    code = consent.location.split("code=")[1].split("&")[0]
    request = post(
        "/oauth/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": client.client_id,
            "code_verifier": verifier,
        },
    )
    request.headers["cookie"] = "phiguard=session-secret-value"
    request.headers["authorization"] = "Bearer bearer-secret-value"
    issued = world.service.token(request)
    tokens = body(issued)
    for thing in (request, issued, consent):
        text = repr(thing)
        for secret in (
            code,
            verifier,
            tokens["access_token"],
            "session-secret-value",
            "bearer-secret-value",
        ):
            assert secret not in text, (type(thing).__name__, secret[:8])
    assert isinstance(request, HttpRequest) and isinstance(issued, OAuthResponse)
    assert exchange(world, client.client_id, code, verifier).status == 400  # (used once)
