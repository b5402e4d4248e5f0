"""Security headers of the pages (issue 19, ui.md): a strict content security policy everywhere under
/ui/, framing only for the public scoreboard, no MIME sniffing, session cookie flags."""

from __future__ import annotations

import httpx

from tests.conftest import READER_KEY, auth


def directives(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return {d.strip().split(" ", 1)[0]: d.strip().partition(" ")[2] for d in policy.split(";") if d.strip()}


async def test_pages_refuse_framing_and_inline_code_and_the_public_page_may_be_embedded(app_client):
    unit = await app_client.get("/ui/units/H44", headers=auth(READER_KEY))
    public = await app_client.get("/ui/public/H44")
    sign_in = await app_client.get("/ui/sign-in")
    style = await app_client.get("/ui/static/style.css")
    for response in (unit, public, sign_in, style):
        assert response.status_code == 200, response.request.url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        policy = directives(response)
        assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
        assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
        assert response.headers["content-security-policy"].count("frame-ancestors") == 1
    assert directives(unit)["frame-ancestors"] == "'none'"
    assert directives(sign_in)["frame-ancestors"] == "'none'"
    configured = app_client.app.state.runtime.settings.public_frame_ancestors
    assert directives(public)["frame-ancestors"] == " ".join(configured)
    api = await app_client.get("/v1/units", headers=auth(READER_KEY))
    assert "content-security-policy" not in api.headers  # the JSON API is not a page


async def test_the_session_cookie_is_httponly_strict_and_secure_over_https(app_client):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_client.app),
                                 base_url="https://testserver") as secure:
        response = await secure.post("/ui/sign-in", data={"key": READER_KEY, "next": "/ui/"})
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
    assert "max-age=" in cookie and "path=/ui/" in cookie
    assert READER_KEY not in response.headers["set-cookie"]
