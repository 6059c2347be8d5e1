"""Who may see the dashboard and act on it: the ``auth`` check, the CSRF token, and the
response headers every page carries.

- **auth**: ``None`` lets every request in (the dashboard binds 127.0.0.1 by default); a
  string is a token, given as HTTP Basic's password (any user name: the browser asks for it)
  or as ``Authorization: Bearer TOKEN``; a callable gets the Starlette ``Request`` and returns
  (or awaits to) whether to let it in.
- **CSRF**: every browser gets a random token in a cookie (``SameSite=Strict``, ``HttpOnly``,
  scoped to the dashboard's path); every form carries it in a hidden field, and a POST whose
  field does not match its cookie is refused before any handler runs (the double-submit
  pattern: another site can make a browser send the cookie, but cannot read it to put it in
  the form).
- **headers**: a Content-Security-Policy allowing only the dashboard's own scripts and styles
  (so even a page that escaped something wrongly would run no injected script), no framing,
  no sniffing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import secrets
from collections.abc import Awaitable
from http.cookies import SimpleCookie
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ConfigurationError
from ..options import shown

#: ``auth=``: a token, or a callable given the request that says whether to let it in.
AuthCheck = Callable[[Request], Union[bool, Awaitable[bool]]]
Auth = Union[str, AuthCheck, None]

CSRF_COOKIE = "kathikon_csrf"
CSRF_FIELD = "csrf"
#: Where the request's CSRF token is kept in the ASGI scope for the pages to render.
CSRF_SCOPE_KEY = "kathikon.csrf"
#: The largest form an action accepts: a bulk action's holds a page of job ids (at most
#: ``MAX_PAGE``, each up to 20 digits) and the list's filter.
MAX_FORM_BYTES = 64 * 1024

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


def check_auth(auth: object) -> Auth:
    """``auth`` if it is a usable setting, else :class:`ConfigurationError` saying why."""
    if auth is None or callable(auth):
        return auth
    if isinstance(auth, str):
        if len(auth) < 8:
            raise ConfigurationError(
                f"auth={shown(auth)}: a token shorter than 8 characters is too easy to "
                "guess; use a long random one, e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe())'"
            )
        return auth
    raise ConfigurationError(
        f"auth={shown(auth)} must be None, a token (a str) or a callable taking the "
        "Starlette Request and returning whether to let it in"
    )


def _token_given(request: Request) -> Optional[str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


async def _allowed(auth: Auth, request: Request) -> Optional[Response]:
    """``None`` when ``request`` may go on, else the response refusing it."""
    if auth is None:
        return None
    if isinstance(auth, str):
        given = _token_given(request)
        if given is not None and hmac.compare_digest(given.encode(), auth.encode()):
            return None
        return PlainTextResponse(
            "this dashboard needs its token: as the password of HTTP Basic (any user name) or "
            "as 'Authorization: Bearer TOKEN'",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="kathikon", charset="UTF-8"'},
        )
    verdict = auth(request)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    if verdict is True:
        return None
    return PlainTextResponse("the dashboard's auth check refused this request", status_code=403)


def _cookie_token(scope: Scope) -> Optional[str]:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header carries no token
                continue
            morsel = jar.get(CSRF_COOKIE)
            if morsel is not None and morsel.value:
                return morsel.value
    return None


def form_fields(body: bytes) -> dict[str, str]:
    """A url-encoded form's fields (the first value of each)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


class Guard:
    """ASGI middleware in front of every route: auth, then (for a POST) the CSRF check on the
    form, then the handler with the form's body replayed to it; every response gets the
    security headers and, for a browser without one, its CSRF cookie."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        refused = await _allowed(self.auth, request)
        cookie = _cookie_token(scope)
        token = cookie or secrets.token_urlsafe(32)
        scope[CSRF_SCOPE_KEY] = token
        send = self._with_headers(scope, send, None if cookie else token)
        if refused is not None:
            await refused(scope, receive, send)
            return
        if scope["method"] == "POST":
            body = await self._read_form(request)
            if isinstance(body, Response):
                await body(scope, receive, send)
                return
            given = form_fields(body).get(CSRF_FIELD, "")
            if cookie is None or not hmac.compare_digest(given.encode(), cookie.encode()):
                await PlainTextResponse(
                    "refused: the form's CSRF token does not match this browser's cookie "
                    "(reload the page and submit the form again)",
                    status_code=403,
                )(scope, receive, send)
                return
            receive = _replay(body)
        await self.app(scope, receive, send)

    @staticmethod
    async def _read_form(request: Request) -> Union[bytes, Response]:
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return PlainTextResponse(
                "an action is a form POST (application/x-www-form-urlencoded)", status_code=415
            )
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return PlainTextResponse("the form is too large", status_code=413)
        return body

    @staticmethod
    def _with_headers(scope: Scope, send: Send, new_token: Optional[str]) -> Send:
        root = scope.get("root_path", "") or "/"
        secure = "; Secure" if scope.get("scheme") == "https" else ""

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if new_token is not None:
                    cookie = (
                        f"{CSRF_COOKIE}={new_token}; Path={root}; HttpOnly; SameSite=Strict{secure}"
                    )
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        return send_with_headers


def _replay(body: bytes) -> Receive:
    """A ``receive`` that gives the handler the body the guard already read."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def csrf_token(request: Request) -> str:
    """The CSRF token the pages put in their forms."""
    token: Any = request.scope.get(CSRF_SCOPE_KEY, "")
    return str(token)
