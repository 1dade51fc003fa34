// WebAuthn ceremonies for the phiguard console (security keys and passkeys).
// The only script the console loads; the CSP allows no inline code.
"use strict";

(function () {
  function b64urlToBytes(value) {
    const pad = "=".repeat((4 - (value.length % 4)) % 4);
    const raw = atob((value + pad).replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }

  function bytesToB64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let text = "";
    bytes.forEach((b) => { text += String.fromCharCode(b); });
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function csrf() {
    const field = document.querySelector("input[name=csrf]");
    return field ? field.value : "";
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body || {}),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(data.error || "request failed");
      error.reauth = data.reauth;
      throw error;
    }
    return data;
  }

  function show(message) {
    const box = document.getElementById("webauthn-status");
    if (box) { box.textContent = message; box.hidden = false; }
  }

  function credentialJSON(credential) {
    const r = credential.response;
    const out = {
      id: credential.id,
      rawId: bytesToB64url(credential.rawId),
      type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: bytesToB64url(r.clientDataJSON) },
    };
    if (credential.authenticatorAttachment) {
      out.authenticatorAttachment = credential.authenticatorAttachment;
    }
    if (r.attestationObject) {
      out.response.attestationObject = bytesToB64url(r.attestationObject);
      if (r.getTransports) { out.response.transports = r.getTransports(); }
    } else {
      out.response.authenticatorData = bytesToB64url(r.authenticatorData);
      out.response.signature = bytesToB64url(r.signature);
      if (r.userHandle) { out.response.userHandle = bytesToB64url(r.userHandle); }
    }
    return out;
  }

  async function register(button) {
    try {
      const options = await post("/account/webauthn/options");
      options.challenge = b64urlToBytes(options.challenge);
      options.user.id = b64urlToBytes(options.user.id);
      (options.excludeCredentials || []).forEach((c) => { c.id = b64urlToBytes(c.id); });
      const credential = await navigator.credentials.create({ publicKey: options });
      const name = (document.getElementById("key-name") || {}).value || "Security key";
      await post("/account/webauthn/register", { credential: credentialJSON(credential), name: name });
      window.location.reload();
    } catch (error) {
      if (error.reauth) { window.location.assign(error.reauth); return; }
      show("The key was not registered: " + error.message);
      button.disabled = false;
    }
  }

  async function signIn(button) {
    try {
      const options = await post("/login/webauthn/options");
      options.challenge = b64urlToBytes(options.challenge);
      (options.allowCredentials || []).forEach((c) => { c.id = b64urlToBytes(c.id); });
      const credential = await navigator.credentials.get({ publicKey: options });
      const next = button.dataset.next || "/account";
      const result = await post("/login/webauthn/verify", { credential: credentialJSON(credential), next: next });
      window.location.assign(result.next);
    } catch (error) {
      show("The key was not accepted. Try again or use a code.");
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const add = document.getElementById("add-key");
    if (add) { add.addEventListener("click", () => { add.disabled = true; register(add); }); }
    const use = document.getElementById("use-key");
    if (use) { use.addEventListener("click", () => { use.disabled = true; signIn(use); }); }
  });
})();
