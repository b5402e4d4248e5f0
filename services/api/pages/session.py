"""Who reads a page: an API key as ``Authorization: Bearer`` (reverse proxies, tests) or the session
cookie the sign-in form gives for a key: the key ring's own session token (bound to the key, signed with
it, expiring; it never holds the key, and it dies with the key)."""

from __future__ import annotations

from fastapi import Request, Response

from shared.auth import Principal

COOKIE = "dvc766_session"


def page_reader(request: Request) -> Principal | None:
    """The reader of this request, or None (the page then leads to the sign-in form)."""
    keyring = request.app.state.keyring
    header = request.headers.get("authorization")
    found = None
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found = keyring.lookup_cached(token.strip())
    elif cookie := request.cookies.get(COOKIE):
        session = keyring.lookup_session(cookie)
        found = session if isinstance(session, Principal) else None  # None, or "expired"
    return found if found is not None and found.can_read() else None


def reader_of_key(request: Request, key: str) -> Principal | None:
    found = request.app.state.keyring.lookup(key.strip()) if key.strip() else None
    return found if found is not None and found.can_read() else None


def _seconds(request: Request) -> int:
    return int(request.app.state.runtime.settings.session_hours * 3600)


def start_session(request: Request, response: Response, key: str) -> None:
    token = request.app.state.keyring.issue_session(key.strip(), _seconds(request))
    response.set_cookie(COOKIE, token, max_age=_seconds(request), path="/ui/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def end_session(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path="/ui/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
