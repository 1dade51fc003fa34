"""WebAuthn registration and authentication against a software authenticator."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from soft_webauthn import SoftWebauthnDevice
from sqlalchemy import select
from webauthn import base64url_to_bytes
from webauthn.helpers import bytes_to_base64url

from phiguard.clock import FixedClock
from phiguard.errors import EnrolmentError, IdentityError
from phiguard.identity.webauthn import (
    AuthenticationResult,
    CloneSuspected,
    Credential,
    WebAuthnService,
    WebAuthnVerificationError,
)
from phiguard.records.vault import Vault
from phiguard.store.tables import webauthn_credentials

RP_ID = "phiguard.example"
ORIGIN = "https://phiguard.example"
UP, UV = 0x01, 0x04


class Authenticator(SoftWebauthnDevice):  # type: ignore[misc]
    """SoftWebauthnDevice that also verifies its user (PIN/biometric): sets the UV flag.

    The plain device sets only "user present"; phiguard requires user verification.
    """

    def __init__(self, *, verifies_user: bool = True) -> None:
        super().__init__()
        self.verifies_user = verifies_user

    def create(self, options: dict[str, Any], origin: str) -> dict[str, Any]:
        cred: dict[str, Any] = super().create(options, origin)
        if self.verifies_user:
            att = cbor2.loads(cred["response"]["attestationObject"])
            auth = bytearray(att["authData"])
            auth[32] |= UV  # "none" attestation: authData is not signed
            att["authData"] = bytes(auth)
            cred["response"]["attestationObject"] = cbor2.dumps(att)
        return cred

    def get(self, options: dict[str, Any], origin: str) -> dict[str, Any]:
        cred: dict[str, Any] = super().get(options, origin)
        if self.verifies_user:
            auth = bytearray(cred["response"]["authenticatorData"])
            auth[32] |= UV
            client_hash = hashlib.sha256(cred["response"]["clientDataJSON"]).digest()
            cred["response"]["authenticatorData"] = bytes(auth)
            cred["response"]["signature"] = self.private_key.sign(
                bytes(auth) + client_hash, ec.ECDSA(hashes.SHA256())
            )
        return cred


def to_device(options_json: str) -> dict[str, Any]:
    """The server's options JSON as the dict SoftWebauthnDevice reads (bytes challenge)."""
    options = json.loads(options_json)
    options["challenge"] = base64url_to_bytes(options["challenge"])
    return {"publicKey": options}


def to_json(cred: dict[str, Any], **response_extra: Any) -> str:
    """The device's answer as the browser would serialise it (base64url everywhere)."""
    raw_id: bytes = cred["rawId"]
    response = {
        k: bytes_to_base64url(v) if isinstance(v, bytes) else v
        for k, v in cred["response"].items()
        if v is not None
    }
    response.update(response_extra)
    return json.dumps(
        {
            "id": bytes_to_base64url(raw_id),
            "rawId": bytes_to_base64url(raw_id),
            "type": "public-key",
            "response": response,
            "clientExtensionResults": {},
        }
    )


@pytest.fixture
def service(vault: Vault, clock: FixedClock) -> WebAuthnService:
    return WebAuthnService(vault.engine, clock, rp_id=RP_ID, rp_name="phiguard", origin=ORIGIN)


def register(
    service: WebAuthnService, user: str, device: Authenticator, name: str = "laptop"
) -> Credential:
    options_json, challenge = service.registration_options(user, user.title())
    answer = device.create(to_device(options_json), ORIGIN)
    return service.verify_registration(
        user, to_json(answer, transports=["usb"]), expected_challenge=challenge, name=name
    )


def authenticate(
    service: WebAuthnService, user: str, device: Authenticator, *, origin: str = ORIGIN
) -> AuthenticationResult:
    options_json, challenge = service.authentication_options(user)
    answer = device.get(to_device(options_json), origin)
    return service.verify_authentication(user, to_json(answer), expected_challenge=challenge)


def stored(vault: Vault, credential_id: str) -> Any:
    with vault.engine.connect() as conn:
        return conn.execute(
            select(webauthn_credentials).where(
                webauthn_credentials.c.credential_id == credential_id
            )
        ).one()


# -- registration ----------------------------------------------------------------------
def test_registration_options_require_user_verification(service: WebAuthnService) -> None:
    options_json, challenge = service.registration_options("alice", "Alice A.")
    options = json.loads(options_json)
    assert base64url_to_bytes(options["challenge"]) == challenge and len(challenge) >= 16
    assert options["rp"] == {"id": RP_ID, "name": "phiguard"}
    assert base64url_to_bytes(options["user"]["id"]) == b"alice"
    assert options["user"]["displayName"] == "Alice A."
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["attestation"] == "none"
    assert service.registration_options("alice", "Alice A.")[1] != challenge


def test_register_stores_the_credential(service: WebAuthnService, vault: Vault) -> None:
    device = Authenticator()
    credential = register(service, "alice", device)
    assert credential.credential_id == bytes_to_base64url(device.credential_id)
    assert (credential.user_id, credential.name, credential.sign_count) == ("alice", "laptop", 0)
    assert credential.transports == ("usb",) and not credential.flagged_clone
    row = stored(vault, credential.credential_id)
    assert row.user_id == "alice" and bytes(row.public_key) == credential.public_key
    assert row.last_used_at is None and not row.flagged_clone
    assert service.credentials("alice") == [credential]
    assert credential.public_key.hex() not in repr(credential)


def test_registration_without_user_verification_is_refused(service: WebAuthnService) -> None:
    options_json, challenge = service.registration_options("alice", "Alice")
    answer = Authenticator(verifies_user=False).create(to_device(options_json), ORIGIN)
    with pytest.raises(WebAuthnVerificationError) as caught:
        service.verify_registration(
            "alice", to_json(answer), expected_challenge=challenge, name="key"
        )
    assert caught.value.reason == "invalid-response"
    assert service.credentials("alice") == []


def test_registration_with_wrong_challenge_or_origin_is_refused(
    service: WebAuthnService,
) -> None:
    options_json, _ = service.registration_options("alice", "Alice")
    _, other_challenge = service.registration_options("alice", "Alice")
    answer = Authenticator().create(to_device(options_json), ORIGIN)
    with pytest.raises(WebAuthnVerificationError):
        service.verify_registration(
            "alice", to_json(answer), expected_challenge=other_challenge, name="key"
        )
    options_json, challenge = service.registration_options("alice", "Alice")
    answer = Authenticator().create(to_device(options_json), "https://evil.example")
    with pytest.raises(WebAuthnVerificationError):
        service.verify_registration(
            "alice", to_json(answer), expected_challenge=challenge, name="k"
        )
    assert service.credentials("alice") == []


def test_registering_the_same_credential_twice_is_refused(service: WebAuthnService) -> None:
    device = Authenticator()
    register(service, "alice", device)

    def keep_key(rp_id: str, user_handle: bytes) -> None:  # re-attest the same key pair
        device.rp_id, device.user_handle = rp_id, user_handle

    device.cred_init = keep_key
    with pytest.raises(EnrolmentError):
        register(service, "bob", device)
    assert service.credentials("bob") == []


def test_credential_name_is_required(service: WebAuthnService) -> None:
    options_json, challenge = service.registration_options("alice", "Alice")
    answer = Authenticator().create(to_device(options_json), ORIGIN)
    with pytest.raises(EnrolmentError):
        service.verify_registration(
            "alice", to_json(answer), expected_challenge=challenge, name=" "
        )


# -- authentication --------------------------------------------------------------------
def test_authenticate(service: WebAuthnService, vault: Vault, clock: FixedClock) -> None:
    device = Authenticator()
    credential = register(service, "alice", device)
    clock.advance(minutes=1)
    result = authenticate(service, "alice", device)
    assert result == AuthenticationResult(credential.credential_id, 1, clone_suspected=False)
    assert authenticate(service, "alice", device).sign_count == 2
    row = stored(vault, credential.credential_id)
    assert row.sign_count == 2 and row.last_used_at is not None
    assert row.last_used_at > row.created_at


def test_authentication_options_list_the_users_credentials(service: WebAuthnService) -> None:
    first, second = Authenticator(), Authenticator()
    register(service, "alice", first, name="laptop")
    register(service, "alice", second, name="spare key")
    register(service, "bob", Authenticator())
    options = json.loads(service.authentication_options("alice")[0])
    allowed = {c["id"] for c in options["allowCredentials"]}
    assert allowed == {bytes_to_base64url(d.credential_id) for d in (first, second)}
    assert all(c["transports"] == ["usb"] for c in options["allowCredentials"])
    assert options["userVerification"] == "required" and options["rpId"] == RP_ID
    # A new registration excludes what the user already holds.
    excluded = json.loads(service.registration_options("alice", "Alice")[0])
    assert {c["id"] for c in excluded["excludeCredentials"]} == allowed


def test_two_credentials_per_user_both_work(service: WebAuthnService, clock: FixedClock) -> None:
    first, second = Authenticator(), Authenticator()
    a = register(service, "alice", first, name="laptop")
    clock.advance(seconds=1)  # credentials are listed oldest first
    b = register(service, "alice", second, name="spare key")
    assert [c.name for c in service.credentials("alice")] == ["laptop", "spare key"]
    assert authenticate(service, "alice", first).credential_id == a.credential_id
    assert authenticate(service, "alice", second).credential_id == b.credential_id
    assert service.remove("alice", a.credential_id)
    with pytest.raises(WebAuthnVerificationError) as caught:
        authenticate(service, "alice", first)
    assert caught.value.reason == "unknown-credential"
    assert authenticate(service, "alice", second).sign_count == 2


def test_user_without_credentials_gets_no_options(service: WebAuthnService) -> None:
    with pytest.raises(EnrolmentError):
        service.authentication_options("nobody")


def test_wrong_challenge_is_refused(service: WebAuthnService, vault: Vault) -> None:
    device = Authenticator()
    credential = register(service, "alice", device)
    options_json, _ = service.authentication_options("alice")
    _, other_challenge = service.authentication_options("alice")
    answer = device.get(to_device(options_json), ORIGIN)
    with pytest.raises(WebAuthnVerificationError) as caught:
        service.verify_authentication("alice", to_json(answer), expected_challenge=other_challenge)
    assert caught.value.reason == "invalid-response"
    assert stored(vault, credential.credential_id).sign_count == 0


def test_tampered_signature_is_refused(service: WebAuthnService) -> None:
    device = Authenticator()
    register(service, "alice", device)
    options_json, challenge = service.authentication_options("alice")
    answer = device.get(to_device(options_json), ORIGIN)
    signature = bytearray(answer["response"]["signature"])
    signature[-1] ^= 0x01
    answer["response"]["signature"] = bytes(signature)
    with pytest.raises(WebAuthnVerificationError) as caught:
        service.verify_authentication("alice", to_json(answer), expected_challenge=challenge)
    assert caught.value.reason == "invalid-response"


def test_tampered_authenticator_data_is_refused(service: WebAuthnService) -> None:
    device = Authenticator()
    register(service, "alice", device)
    options_json, challenge = service.authentication_options("alice")
    answer = device.get(to_device(options_json), ORIGIN)
    data = bytearray(answer["response"]["authenticatorData"])
    data[-1] ^= 0x10  # a different counter, not covered by the signature any more
    answer["response"]["authenticatorData"] = bytes(data)
    with pytest.raises(WebAuthnVerificationError):
        service.verify_authentication("alice", to_json(answer), expected_challenge=challenge)


def test_wrong_origin_is_refused(service: WebAuthnService) -> None:
    device = Authenticator()
    register(service, "alice", device)
    with pytest.raises(WebAuthnVerificationError) as caught:
        authenticate(service, "alice", device, origin="https://phiguard.example.evil.test")
    assert caught.value.reason == "invalid-response"


def test_authentication_without_user_verification_is_refused(service: WebAuthnService) -> None:
    device = Authenticator()
    register(service, "alice", device)
    device.verifies_user = False
    with pytest.raises(WebAuthnVerificationError):
        authenticate(service, "alice", device)


def test_credential_of_another_user_is_refused(service: WebAuthnService, vault: Vault) -> None:
    register(service, "alice", Authenticator())
    bobs = Authenticator()
    bob_credential = register(service, "bob", bobs)
    # Bob's authenticator answers Alice's challenge with a perfectly valid signature.
    options_json, challenge = service.authentication_options("alice")
    answer = bobs.get(to_device(options_json), ORIGIN)
    with pytest.raises(WebAuthnVerificationError) as caught:
        service.verify_authentication("alice", to_json(answer), expected_challenge=challenge)
    assert caught.value.reason == "unknown-credential"
    assert stored(vault, bob_credential.credential_id).sign_count == 0


def test_mismatched_user_handle_is_refused(service: WebAuthnService) -> None:
    device = Authenticator()
    register(service, "alice", device)
    options_json, challenge = service.authentication_options("alice")
    answer = device.get(to_device(options_json), ORIGIN)
    answer["response"]["userHandle"] = b"bob"
    with pytest.raises(WebAuthnVerificationError) as caught:
        service.verify_authentication("alice", to_json(answer), expected_challenge=challenge)
    assert caught.value.reason == "unknown-credential"


def test_malformed_response_is_an_identity_error(service: WebAuthnService) -> None:
    register(service, "alice", Authenticator())
    _, challenge = service.authentication_options("alice")
    assert issubclass(WebAuthnVerificationError, IdentityError)
    for garbage in ("not json", "[]", json.dumps({"id": "x"})):
        with pytest.raises(WebAuthnVerificationError):
            service.verify_authentication("alice", garbage, expected_challenge=challenge)


def test_replayed_assertion_is_refused(service: WebAuthnService) -> None:
    device = Authenticator()
    register(service, "alice", device)
    options_json, challenge = service.authentication_options("alice")
    answer = to_json(device.get(to_device(options_json), ORIGIN))
    service.verify_authentication("alice", answer, expected_challenge=challenge)
    # The caller forgets to drop the challenge from the session: the counter catches it.
    with pytest.raises(CloneSuspected):
        service.verify_authentication("alice", answer, expected_challenge=challenge)


# -- signature counter -----------------------------------------------------------------
def test_cloned_authenticator_is_flagged_and_refused(
    service: WebAuthnService, vault: Vault
) -> None:
    device = Authenticator()
    credential = register(service, "alice", device)
    assert authenticate(service, "alice", device).sign_count == 1
    clone = copy.deepcopy(device)  # same key, same counter: a cloned authenticator
    assert authenticate(service, "alice", device).sign_count == 2
    with pytest.raises(CloneSuspected) as caught:
        authenticate(service, "alice", clone)  # sends 2 again
    error = caught.value
    assert error.reason == "clone-suspected" and error.stored_sign_count == 2
    assert error.result == AuthenticationResult(credential.credential_id, 2, clone_suspected=True)
    row = stored(vault, credential.credential_id)
    assert row.flagged_clone and row.sign_count == 2
    # The flag sticks: the genuine device is refused too, and no options are offered.
    with pytest.raises(EnrolmentError):
        service.authentication_options("alice")
    challenge = b"c" * 32
    answer = device.get({"publicKey": {"challenge": challenge, "rpId": RP_ID}}, ORIGIN)
    with pytest.raises(WebAuthnVerificationError) as again:
        service.verify_authentication("alice", to_json(answer), expected_challenge=challenge)
    assert again.value.reason == "flagged" and not isinstance(again.value, CloneSuspected)


def test_reset_counter_is_flagged(service: WebAuthnService, vault: Vault) -> None:
    device = Authenticator()
    spare = Authenticator()
    credential = register(service, "alice", device)
    register(service, "alice", spare, name="spare")
    for _ in range(3):
        authenticate(service, "alice", device)
    device.sign_count = 0  # next assertion carries 1, below the stored 3
    with pytest.raises(CloneSuspected) as caught:
        authenticate(service, "alice", device)
    assert caught.value.result.sign_count == 1 and caught.value.stored_sign_count == 3
    assert stored(vault, credential.credential_id).flagged_clone
    # Only that credential is flagged: the spare key still works and is still offered.
    options = json.loads(service.authentication_options("alice")[0])
    assert [c["id"] for c in options["allowCredentials"]] == [
        bytes_to_base64url(spare.credential_id)
    ]
    assert authenticate(service, "alice", spare).sign_count == 1


def test_counterless_authenticator_is_accepted(service: WebAuthnService, vault: Vault) -> None:
    """Passkeys that always send 0 have no counter; that is not a clone signal."""
    device = Authenticator()
    credential = register(service, "alice", device)
    for _ in range(3):
        device.sign_count = -1  # the device adds one before signing: it sends 0
        assert authenticate(service, "alice", device).sign_count == 0
    assert not stored(vault, credential.credential_id).flagged_clone


def test_forged_assertion_does_not_flag(service: WebAuthnService, vault: Vault) -> None:
    """A counter regression with a bad signature is refused without flagging the key."""
    device = Authenticator()
    credential = register(service, "alice", device)
    authenticate(service, "alice", device)
    device.sign_count = 0
    options_json, challenge = service.authentication_options("alice")
    answer = device.get(to_device(options_json), ORIGIN)
    answer["response"]["signature"] = bytes(64)
    with pytest.raises(WebAuthnVerificationError) as caught:
        service.verify_authentication("alice", to_json(answer), expected_challenge=challenge)
    assert not isinstance(caught.value, CloneSuspected)
    assert not stored(vault, credential.credential_id).flagged_clone
