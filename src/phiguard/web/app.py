"""The application factory.

``create_app`` wires a built ``System`` into FastAPI: the FHIR router, the
authenticator, security headers on every response, body limits, PHI-free request
logs and OperationOutcome errors.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from phiguard import __version__
from phiguard.access import breakglass
from phiguard.access import routes as access_routes
from phiguard.access.resident import ResidentFacts
from phiguard.errors import AuthenticationError, PhiGuardError
from phiguard.fhir import auditevents, bulk
from phiguard.fhir.outcome import ApiError, FhirResponse, error_response, outcome
from phiguard.fhir.paging import PageStore
from phiguard.fhir.routes import router as fhir_router
from phiguard.identity.accounts import Accounts
from phiguard.identity.challenges import ChallengeStore
from phiguard.identity.sessions import SessionStore
from phiguard.identity.tokens import TokenService
from phiguard.monitor.emergency import break_glass_notifier
from phiguard.records.context import AccessContext
from phiguard.system import System, authenticate_api_token

from . import logs, oauth
from .console import access as access_pages
from .console import account, admin, passkeys, privacy, signin
from .console import monitor as monitor_pages
from .console.session import Console

PURPOSES = frozenset({"TREAT", "ETREAT", "BTG", "HPAYMT", "HOPERAT", "HRESCH", "PUBHLTH"})

# Pages: nothing but our own stylesheet and images; no script at all yet.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def bearer_authenticator(
    system: System, tokens: TokenService | None = None
) -> Callable[[Request], AccessContext]:
    """Authenticates bearer tokens: OAuth2 access tokens (JWTs) and operator API tokens.

    An OAuth token is verified (signature, issuer, audience, expiry), then checked live
    (revoked id, account suspended or terminated since issue) on every request, so a
    termination takes effect at the next call.  Users act for treatment unless they
    say otherwise; operators for operations.
    """
    token_service = tokens or TokenService.from_system(system)

    def authenticate(request: Request) -> AccessContext:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError()
        launch_patient: str | None = None
        if token.count(".") == 2:
            claims = token_service.verify(token)
            principal = token_service.live_principal(claims)
            launch_patient = claims.patient
            default_purpose = "TREAT"
        else:
            principal = authenticate_api_token(system, token)
            default_purpose = "HOPERAT"
        allowed = principal.purposes
        if allowed:
            # An application acts for the purposes it was registered for (the first
            # is its default); any other is refused before anything is read.
            default_purpose = allowed[0]
        purpose = request.headers.get("x-purpose-of-use", default_purpose).strip().upper()
        if purpose not in PURPOSES:
            raise ApiError(400, "invalid", "unknown purpose of use")
        if allowed is not None and purpose not in allowed:
            raise ApiError(
                403,
                "forbidden",
                f"this application may not act for purpose of use {purpose} "
                f"(allowed: {', '.join(allowed)})",
            )
        return AccessContext(
            principal=principal,
            purpose=purpose,
            tenant=system.settings.tenant,
            request_id=request.state.request_id,
            source=request.client.host if request.client else "",
            launch_patient=launch_patient,
        )

    return authenticate


def create_app(
    system: System,
    *,
    authenticate: Callable[[Request], AccessContext] | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Break-the-glass declarations made through this server reach the privacy
        # officer at once (e-mail / webhook), not only at the next monitoring scan.
        subscriber = break_glass_notifier(system)
        if subscriber is not None:
            breakglass.on_break_glass.append(subscriber)
        # The access facts of the hospital held in memory and kept current, so no
        # decision waits on the relationship index (access/resident.py).
        resident = None
        limit = system.settings.access_resident_patients
        if system.access is not None and limit > 0:
            resident = ResidentFacts(system.access.attributes, limit=limit)
            resident.start()
        _app.state.resident_facts = resident
        try:
            yield
        finally:
            if resident is not None:
                resident.stop()
            if subscriber is not None and subscriber in breakglass.on_break_glass:
                breakglass.on_break_glass.remove(subscriber)

    app = FastAPI(
        lifespan=lifespan,
        title="phiguard",
        version=__version__,
        description="Encrypted FHIR R4 vault. Every resource is sealed with its patient's key.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.vault = system.vault
    app.state.system = system
    app.state.tokens = TokenService.from_system(system)
    accounts = Accounts.from_system(system)
    # TLS here, or at a front end that base_url names (https://...): either way the
    # browser speaks HTTPS to us, so cookies are __Host-/Secure and HSTS is sent.
    tls = bool(system.settings.tls_cert) or system.settings.public_base.startswith("https://")
    app.state.console = Console(
        accounts=accounts,
        sessions=SessionStore(system.engine, system.clock, is_revoked=accounts.is_revoked),
        secure_cookies=tls,
        challenges=ChallengeStore(system.engine, system.clock),
    )
    app.state.authenticate = authenticate or bearer_authenticator(system, app.state.tokens)
    app.state.max_body_bytes = system.settings.max_body_bytes
    app.state.pages = PageStore()
    app.state.base_url = system.settings.base_url.rstrip("/")
    logger = logs.configure(system.settings.log_path)

    @app.middleware("http")
    async def envelope(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.request_id = uuid.uuid4().hex
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as exc:  # errors that escaped every handler: no details out
            response = error_response(exc)
            # For the operator: what failed and where, never the message (it may quote
            # data); the request id ties it to the client's error.
            tb = traceback.extract_tb(exc.__traceback__)
            where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
            logger.error(
                logs.line(
                    t=time.time(),
                    id=request.state.request_id,
                    error=type(exc).__name__,
                    where=where,
                )
            )
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers["X-Request-Id"] = request.state.request_id
        if request.url.path.startswith("/fhir") and request.url.path != "/fhir/metadata":
            response.headers["Cache-Control"] = "no-store"
        if tls:
            response.headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
        logger.info(
            logs.line(
                t=time.time(),
                id=request.state.request_id,
                method=request.method,
                path=request.url.path,
                status=response.status_code,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
        )
        return response

    @app.exception_handler(PhiGuardError)
    async def domain_error(_request: Request, exc: PhiGuardError) -> Response:
        return error_response(exc)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, _exc: RequestValidationError) -> Response:
        return FhirResponse(
            outcome("error", "invalid", ["the request is malformed"]), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        text = {404: "no such endpoint", 405: "method not allowed"}.get(
            exc.status_code, "request failed"
        )
        return FhirResponse(outcome("error", code, [text]), status_code=exc.status_code)

    app.include_router(signin.router)
    app.include_router(account.router)
    app.include_router(admin.router)
    app.include_router(privacy.router)
    app.include_router(passkeys.router)
    app.include_router(monitor_pages.router)
    app.include_router(access_pages.router)
    app.include_router(oauth.router)
    app.include_router(access_routes.router)
    app.include_router(auditevents.router)  # before the generic /fhir/{type} routes
    app.include_router(bulk.router)
    app.include_router(fhir_router)

    templates = Environment(
        loader=PackageLoader("phiguard.web", "templates"), autoescape=select_autoescape(["html"])
    )
    app.mount("/static", StaticFiles(packages=[("phiguard.web", "static")]), name="static")

    @app.get("/", include_in_schema=False)
    async def home() -> HTMLResponse:
        checkpoints = system.ledger.checkpoints()
        html = templates.get_template("home.html").render(
            version=__version__,
            mode=system.settings.mode,
            provider=system.provider.describe().get("provider", system.settings.key_provider),
            ledger_size=system.ledger.size,
            checkpoint=checkpoints[-1].size if checkpoints else None,
            base=system.settings.base_url or "",
        )
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    return app
