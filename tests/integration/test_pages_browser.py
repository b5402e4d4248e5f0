"""The pages in a real headless Chromium (Debian's, driven by playwright) against a live dvc766 on
127.0.0.1: each page shows the API's numbers for the same data, nothing is requested from anywhere else,
no console errors, a 390 px phone needs no horizontal scrolling, the report prints on one A4 page, the
public page shows no dossier without a key, a page without a key is refused. Screenshots of every page
(desktop and phone) go to docs/screenshots/ (linked from the README)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import tempfile
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from playwright.async_api import async_playwright

from services.app import create_app
from tests.conftest import READER_KEY, auth
from tests.support.database import truncate_event_tables
from tests.support.pages import PERIOD, load_month

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# The committed screenshots (README: "What it looks like") are rewritten only when asked, so that a test
# run does not leave the working tree changed: DVC766_UPDATE_SCREENSHOTS=1 ./dev test <this file>.
SHOTS = (Path(__file__).resolve().parents[2] / "docs" / "screenshots" if os.environ.get("DVC766_UPDATE_SCREENSHOTS")
         else Path(tempfile.gettempdir()) / "dvc766-screenshots")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
DOSSIER_CODE = re.compile(r"H44\.\d+-(\d\d|now)-\d")


def vi_number(text: str) -> Decimal | None:
    """``1.234,56 %`` → 1234.56 (the pages' Vietnamese style); an en dash → None."""
    text = text.strip().split("/")[0].replace("%", "").strip()
    if text in ("–", ""):
        return None
    return Decimal(text.replace(".", "").replace(",", "."))


def same(shown: str, value) -> bool:
    number = vi_number(shown)
    return (number is None and value is None) or (value is not None and number == Decimal(str(value)))


@pytest.fixture(scope="module")
async def site(runtime):
    """dvc766 on a free loopback port with the month of tests/support/pages.py, and an API client."""
    await truncate_event_tables(runtime)
    app = create_app(("ingest", "api"), runtime=runtime)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await load_month(client, runtime)
        client.headers.update(auth(READER_KEY))
        yield base, client
    server.should_exit = True
    await task
    sock.close()


@pytest.fixture(scope="module")
async def browser():
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        await chromium.close()


# The strictest policy the pages must live under (issue 19 sets the real one): no inline script or style,
# nothing from elsewhere. A violation is a console error, which fails the test.
STRICT_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; font-src 'self'; script-src 'self'; "
              "form-action 'self'; base-uri 'none'")


class Watch:
    """Every request leaving 127.0.0.1 is aborted and remembered; every answer from dvc766 is given the
    strict policy above; console errors are remembered."""

    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict
        self.outside: list[str] = []
        self.errors: list[str] = []

    async def attach(self, context) -> None:
        async def route(r):
            if urlsplit(r.request.url).hostname != "127.0.0.1":
                self.outside.append(r.request.url)
                await r.abort()
                return
            if not self.strict and not r.request.is_navigation_request():
                await r.continue_()
                return
            response = await r.fetch(max_redirects=0)
            headers = {k: v for k, v in response.headers.items() if k.lower() != "content-security-policy"}
            if self.strict:
                headers["content-security-policy"] = STRICT_CSP
            # Not strict: the page without any policy (dvc766's own would stop what the guard must see).
            await r.fulfill(response=response, headers=headers)

        await context.route("**/*", route)

    def page(self, page) -> None:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def check(self) -> None:
        assert self.outside == [], f"requests leaving 127.0.0.1: {self.outside}"
        assert self.errors == [], f"console errors: {self.errors}"


async def close(context) -> None:
    """Close a context whose route handler may still be fetching a late request (the race made a test
    fail with "Request context disposed" about one run in three): such handlers' errors are ignored."""
    await context.unroute_all(behavior="ignoreErrors")
    await context.close()


async def open_page(browser, base, path, *, viewport=DESKTOP, key: str | None = READER_KEY, status=200,
                    strict=True):
    watch = Watch(strict=strict)
    context = await browser.new_context(viewport=viewport, is_mobile=viewport is PHONE, has_touch=viewport is PHONE,
                                        extra_http_headers=auth(key) if key else None, locale="vi-VN")
    await watch.attach(context)
    page = await context.new_page()
    watch.page(page)
    response = await page.goto(base + path)
    assert response.status == status, (path, response.status)
    return context, page, watch


async def no_sideways_scroll(page) -> None:
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page.url}: {overflow}px of horizontal scrolling"


async def shot(page, name: str, viewport, *, start: str | None = None) -> None:
    """The page from its top (or from the element ``start``), at most 2,600 px of it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    kind = "phone" if viewport is PHONE else "desktop"
    height = await page.evaluate("document.documentElement.scrollHeight")
    top = 0
    if start:
        top = int(await page.locator(start).evaluate("e => e.getBoundingClientRect().top + window.scrollY"))
    clip = {"x": 0, "y": top, "width": viewport["width"], "height": min(height - top, 2600)}
    # A 10,000 px page on a 2-core machine shared with other test runs can take long to paint.
    await page.screenshot(path=SHOTS / f"{name}-{kind}.png", full_page=True, clip=clip, timeout=120_000)


async def text_of(page, key: str) -> str:
    return await page.locator(f'[data-key="{key}"]').first.inner_text()


async def api(client, path, **params) -> dict:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_unit_page_shows_the_api_numbers(site, browser, viewport):
    base, client = site
    context, page, watch = await open_page(browser, base, f"/ui/units/H44?period={PERIOD}", viewport=viewport)
    document = await api(client, "/v1/scores/H44", period=PERIOD)
    assert same(await text_of(page, "total"), document["total"]["score"])
    assert (await text_of(page, "rating")).strip() == document["rating"]
    for group in document["groups"]:
        assert same(await text_of(page, f"group-{group['code']}"), group["score"])
        for c in group["components"]:
            assert same(await text_of(page, f"component-{c['id']}-score"), c["score"]), c["id"]
            assert same(await text_of(page, f"component-{c['id']}-denominator"), c["denominator"]), c["id"]
            assert same(await text_of(page, f"component-{c['id']}-ratio"), c["ratio"]), c["id"]
    for name in ("received", "on_time", "overdue", "open_overdue", "received_online", "overdue_steps"):
        assert same(await text_of(page, f"counter-{name}"), document["counters"][name]), name
    league = (await api(client, "/v1/scores", parent="H44", period=PERIOD, limit=500))["items"]
    assert await page.locator("table.league tbody tr").count() == len(league)
    for row in league[:12]:
        code = row["unit"]["code"]
        assert same(await text_of(page, f"child-{code}-total"), row["total"])
        assert same(await text_of(page, f"child-{code}-rank"), row["rank"])
    for by, path in (("procedure", "procedures"), ("field", "fields")):
        for row in (await api(client, f"/v1/scores/H44/{path}", period=PERIOD))["items"]:
            assert same(await text_of(page, f"{by}-{row['code']}-received"), row["received"])
            assert same(await text_of(page, f"{by}-{row['code']}-on_time_ratio"), row["on_time_ratio"])
    for day in await api(client, "/v1/scores/H44/history", period=PERIOD):
        assert same(await page.locator(f'[data-key="day-{day["date"]}"]').text_content(), day["total"])
    targets = (await api(client, "/v1/units/H44/targets", period=PERIOD))["targets"]
    assert targets
    for target in targets:
        assert same(await text_of(page, f"target-{target['id']}-value"), target["value"]), target["id"]
    warning = await api(client, "/v1/units/H44/early-warning", period=PERIOD)
    for item in warning["items"]:
        assert await page.get_by_text(item["dossier_code"]).count() == 1
    assert len(warning["items"]) >= 2
    await no_sideways_scroll(page)
    await shot(page, "unit", viewport)
    await shot(page, "unit-trend-targets", viewport, start="section:has(#dien-bien)")
    if viewport is DESKTOP:  # keyboard: the first Tab lands on the skip link, Enter moves to the content
        await page.keyboard.press("Tab")
        assert "Bỏ qua" in await page.evaluate("document.activeElement.textContent")
        await page.keyboard.press("Enter")
        assert page.url.endswith("#noi-dung")
    watch.check()
    await close(context)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_dossiers_page_lists_what_the_api_lists_with_reasons(site, browser, viewport):
    base, client = site
    context, page, watch = await open_page(browser, base, f"/ui/units/H44/dossiers?period={PERIOD}&flag=overdue",
                                           viewport=viewport)
    expected = (await api(client, "/v1/units/H44/dossiers", period=PERIOD, flag="overdue"))["items"]
    shown = await page.locator("table.items tbody tr").evaluate_all("rows => rows.map(r => r.dataset.item)")
    assert shown == [i["dossier_code"] for i in expected] and shown
    reasons = await page.locator("table.items tbody tr .reason").all_inner_texts()
    assert "Giải quyết quá hạn" in reasons and "Yêu cầu bổ sung từ 2 lần trở lên" in reasons
    await no_sideways_scroll(page)
    await shot(page, "dossiers", viewport)
    # Every component's link leads to its items (here 1.4: dossiers not synced to the national portal).
    await page.goto(base + f"/ui/units/H44/dossiers?period={PERIOD}&component=1.4")
    items = (await api(client, "/v1/units/H44/components/1.4/items", period=PERIOD))["items"]
    shown = await page.locator("table.items tbody tr").evaluate_all("rows => rows.map(r => r.dataset.item)")
    assert shown == [i["dossier_code"] for i in items] and shown
    assert "Chưa đồng bộ lên Cổng DVCQG" in await page.locator("table.items").inner_text()
    watch.check()
    await close(context)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_report_prints_on_one_a4_page(site, browser, viewport):
    base, client = site
    context, page, watch = await open_page(browser, base, f"/ui/units/H44/report?period={PERIOD}", viewport=viewport)
    document = await api(client, "/v1/scores/H44", period=PERIOD)
    assert same(await text_of(page, "total"), document["total"]["score"])
    for group in document["groups"]:
        assert same(await text_of(page, f"group-{group['code']}"), group["score"])
    assert same(await text_of(page, "counter-overdue"), document["counters"]["overdue"])
    await no_sideways_scroll(page)
    await shot(page, "report", viewport)
    if viewport is DESKTOP:
        pdf = await page.pdf(format="A4", print_background=True, prefer_css_page_size=True)
        pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
        assert pages == 1, f"the report prints on {pages} A4 pages"
        (SHOTS / "report.pdf").write_bytes(pdf)
    watch.check()
    await close(context)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_public_scoreboard_without_a_key(site, browser, viewport):
    base, client = site
    context, page, watch = await open_page(browser, base, f"/ui/public/H44?period={PERIOD}", viewport=viewport,
                                           key=None)
    document = await api(client, "/v1/scores/H44", period=PERIOD)
    assert same(await text_of(page, "total"), document["total"]["score"])
    for group in document["groups"]:
        assert same(await text_of(page, f"group-{group['code']}"), group["score"])
    league = (await api(client, "/v1/scores", parent="H44", period=PERIOD, limit=500))["items"]
    for row in league[:12]:
        assert same(await text_of(page, f"child-{row['unit']['code']}-total"), row["total"])
    html = await page.content()
    assert not DOSSIER_CODE.search(html) and "/dossiers" not in html and "/ui/units/" not in html
    await no_sideways_scroll(page)
    await shot(page, "public", viewport)
    watch.check()
    await close(context)


async def test_without_a_key_a_page_is_refused_and_the_form_signs_in_by_keyboard(site, browser):
    base, client = site
    document = await api(client, "/v1/scores/H44", period=PERIOD)
    context, page, watch = await open_page(browser, base, f"/ui/units/H44?period={PERIOD}", key=None)
    assert "/ui/sign-in?next=" in page.url
    assert await page.locator('[data-key="total"]').count() == 0
    assert await page.locator("input[name=key]").count() == 1
    await shot(page, "sign-in", DESKTOP)
    for _ in range(4):  # the skip link, the site name, then the key field
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.name") == "key":
            break
    else:
        pytest.fail("the key field cannot be reached with the keyboard")
    await page.keyboard.type(READER_KEY)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert re.search(r"/ui/units/H44\?period=", page.url)
    assert same(await text_of(page, "total"), document["total"]["score"])
    cookies = await context.cookies()
    session = next(c for c in cookies if c["name"] == "dvc766_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["expires"] > 0
    watch.check()
    await close(context)


async def test_the_guards_see_a_request_leaving_loopback_and_an_inline_style(site, browser):
    """The checks above can fail: a request to another host is caught, and so is what the strict policy
    refuses."""
    base, _ = site
    context, page, watch = await open_page(browser, base, f"/ui/public/H44?period={PERIOD}", key=None, strict=False)
    await page.evaluate("() => new Promise(done => { const i = new Image(); i.onload = i.onerror = done; "
                        "i.src = 'http://192.0.2.1/pixel.png'; })")
    assert watch.outside == ["http://192.0.2.1/pixel.png"]
    await close(context)
    context, page, watch = await open_page(browser, base, f"/ui/public/H44?period={PERIOD}", key=None)
    async with page.expect_console_message(lambda m: m.type == "error"):
        await page.evaluate("() => new Promise(done => { document.addEventListener('securitypolicyviolation', "
                            "done, {once: true}); const s = document.createElement('style'); "
                            "s.textContent = 'body{}'; document.head.append(s); })")
    assert any("Content Security Policy" in e or "Refused" in e for e in watch.errors), watch.errors
    await close(context)
