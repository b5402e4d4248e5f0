"""Security headers of every page and asset under /ui/ (ui.md): a content security policy allowing only
this site's own files (the pages have no inline script or style), framing refused except for the public
scoreboard (its routes set ``frame-ancestors`` from ``public_frame_ancestors``), no MIME sniffing, and no
page address sent to other sites."""

from __future__ import annotations

# What the browser tests hold every page to (tests/integration/test_pages_browser.py: STRICT_CSP).
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
          "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'")
FIXED = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"))


def content_security_policy(route_policy: str | None) -> str:
    """The page's policy: ours, with the route's ``frame-ancestors`` if it set one, else 'none'."""
    ancestors = "frame-ancestors 'none'"
    for directive in (route_policy or "").split(";"):
        if directive.strip().startswith("frame-ancestors"):
            ancestors = directive.strip()
    return f"{POLICY}; {ancestors}"


class PageSecurityHeaders:
    """Pure ASGI middleware: the headers above on every response under /ui/."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (scope["path"] == "/ui" or scope["path"].startswith("/ui/")):
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ())
                           if k.lower() not in (b"content-security-policy", *(name for name, _ in FIXED))]
                route_policy = next((v.decode("latin-1") for k, v in message.get("headers", ())
                                     if k.lower() == b"content-security-policy"), None)
                headers.append((b"content-security-policy", content_security_policy(route_policy).encode()))
                headers.extend(FIXED)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
