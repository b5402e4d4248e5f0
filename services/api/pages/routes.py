"""The pages people read (ui.md): server-rendered HTML in Vietnamese, every asset served from here.

Every number comes from the functions that answer the API (the score document, the league table, the
drill-downs, the breakdowns, the history), so a page and the API never disagree. Pages only read.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from services.api import drilldown, exports
from services.api import http as api_http
from services.api.breakdown import load_tables
from services.api.history import history, totals_before_latest_day
from services.api.params import chosen_period, known_unit
from services.api.pages import present
from services.api.pages.session import end_session, page_reader, reader_of_key, start_session
from services.indicators.rules.scoring import COMPONENTS_BY_ID
from services.notify import http as targets_api
from shared.auth import Principal
from shared.problems import Problem
from shared.runtime import Runtime

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(number=present.number, count=present.count, signed=present.signed,
                             local_time=present.local_time, reason=present.reason, period_label=present.period_label)
templates.env.globals.update(LEVELS=present.LEVELS, FLAGS=present.FLAGS, CHANNELS=present.CHANNELS,
                             RATING_CLASS=present.RATING_CLASS, TARGET_STATUS=present.TARGET_STATUS,
                             NO_TARGET_VALUE=present.NO_TARGET_VALUE)
static = StaticFiles(directory=HERE / "static")
router = APIRouter(include_in_schema=False)

# Where a component's points go: the API's dossier flags where one matches, else its items.
COMPONENT_FLAG = {"2.1": "overdue", "3.3": "not_online"}
PAGE_ROWS = 100
PROCEDURE_ROWS = 30  # the unit page's per-procedure table: the procedures with most dossiers


class NotSignedIn(Exception):
    pass


def _reader(request: Request) -> Principal:
    who = page_reader(request)
    if who is None:
        raise NotSignedIn()
    return who


def _change(total: float, before: float | None) -> float | None:
    return None if before is None else round(total - before, 2)


def _ancestors(runtime: Runtime, code: str) -> list:
    out, current = [], runtime.units.get(code)
    while current is not None and current.parent and current.parent in runtime.units:
        current = runtime.units.get(current.parent)
        out.insert(0, current)
    return out


def _render(request: Request, name: str, status: int = 200, *, public: bool = False, **context) -> HTMLResponse:
    context.setdefault("signed_in", not public)
    response = templates.TemplateResponse(request, name, {"public": public, **context}, status_code=status)
    if public:
        ancestors = " ".join(request.app.state.runtime.settings.public_frame_ancestors) or "'none'"
        response.headers["content-security-policy"] = f"frame-ancestors {ancestors}"
    else:
        response.headers["x-frame-options"] = "DENY"
        response.headers["cache-control"] = "private, no-store"
    return response


def sign_in_form(request: Request, *, status: int, next_url: str, error: str | None = None):
    return _render(request, "sign_in.html", status, next_url=_safe_next(next_url), error=error, signed_in=False)


def _safe_next(target: str | None) -> str:
    # Only a page of this site: never an open redirect.
    if not target or not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target


def install(app) -> None:
    """Mount the pages and their assets on the application."""
    app.include_router(router)
    app.mount("/ui/static", static, name="ui-static")

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, _: NotSignedIn):
        # To the sign-in form, which brings the reader back here: never the numbers.
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = RedirectResponse(f"/ui/sign-in?{urlencode({'next': target})}", status_code=303)
        response.headers["cache-control"] = "no-store"
        return response


PROBLEMS = {
    "bad_period": "Kỳ đánh giá phải có dạng 2026-08 (tháng), 2026-Q3 (quý) hoặc 2026 (năm).",
    "unknown_unit": "Không có đơn vị mã {unit} trong danh sách đơn vị.",
    "unknown_component": "Chỉ số này không có danh sách mục bị trừ điểm.",
    "bad_flag": "Loại hồ sơ không hợp lệ.",
    "bad_cursor": "Đường dẫn trang sau không hợp lệ.",
}


def _problem_text(request: Request, exc: Problem) -> str:
    return PROBLEMS.get(exc.code, "Không hiển thị được số liệu.").format(
        unit=request.path_params.get("unit_code", ""))


async def _page_problem(request: Request, work, *, public: bool = False):
    """Render a page, or its error in Vietnamese (a page never answers problem JSON)."""
    try:
        return await work()
    except Problem as exc:
        return _render(request, "error.html", exc.status, public=public, message=_problem_text(request, exc))


# --- sign-in -------------------------------------------------------------------------------------------

@router.get("/ui/sign-in")
async def sign_in_page(request: Request, next: str = "/ui/"):  # noqa: A002 - the query parameter's name
    return sign_in_form(request, status=200, next_url=next)


@router.post("/ui/sign-in")
async def sign_in(request: Request, key: str = Form(""), next: str = Form("/ui/")):  # noqa: A002
    if reader_of_key(request, key) is None:
        return sign_in_form(request, status=401, error="Khóa truy cập không đúng hoặc không có quyền xem số liệu.",
                            next_url=next)
    response = RedirectResponse(_safe_next(next), status_code=303)
    start_session(request, response, key)
    return response


@router.post("/ui/sign-out")
async def sign_out(request: Request):
    response = RedirectResponse("/ui/sign-in", status_code=303)
    end_session(request, response)
    return response


# --- pages for readers ---------------------------------------------------------------------------------

@router.get("/ui/")
async def home(request: Request, period: str | None = None):
    _reader(request)
    runtime: Runtime = request.app.state.runtime
    tree = runtime.units
    roots = sorted(code for code, unit in tree.units.items() if not unit.parent or unit.parent not in tree.units)
    if len(roots) == 1:
        query = f"?{urlencode({'period': period})}" if period else ""
        return RedirectResponse(f"/ui/units/{roots[0]}{query}", status_code=307)
    return _render(request, "home.html", units=[tree.units[code] for code in roots], period=period)


@router.get("/ui/units/{unit_code}")
async def unit_page(request: Request, unit_code: str, period: str | None = None):
    who = _reader(request)

    async def work():
        runtime: Runtime = request.app.state.runtime
        unit = known_unit(runtime, unit_code)
        chosen = chosen_period(period)
        document, children, days, warning, tables, targets = await asyncio.gather(
            api_http.score_document(request, unit.code, chosen),
            api_http.league_table(request, unit.code, chosen),
            history(request, unit.code, chosen),
            drilldown.early_warning(request, who, unit, chosen, days=None, limit=20),
            load_tables(runtime, unit.code, chosen),
            targets_api.unit_targets(request, who, unit, chosen),
        )
        if children:
            before = await totals_before_latest_day(runtime, [row["unit"]["code"] for row in children], chosen)
            children = [{**row, "change": _change(row["total"], before.get(row["unit"]["code"]))} for row in children]
        return _render(request, "unit.html", unit=unit, period=chosen, doc=document, children=children,
                       days=days, chart=present.trend(days), warning=warning,
                       procedures=tables.procedures(PROCEDURE_ROWS), procedure_count=len(tables.per_procedure),
                       fields=tables.fields(), targets=targets.targets,
                       names={code: u.name for code, u in runtime.units.units.items()},
                       ancestors=_ancestors(runtime, unit.code),
                       component_flag=COMPONENT_FLAG)

    return await _page_problem(request, work)


@router.get("/ui/units/{unit_code}/dossiers")
async def dossiers_page(request: Request, unit_code: str, period: str | None = None, flag: str | None = None,
                        component: str | None = None, cursor: str | None = None):
    who = _reader(request)

    async def work():
        runtime: Runtime = request.app.state.runtime
        unit = known_unit(runtime, unit_code)
        chosen = chosen_period(period)
        if component:
            if component not in COMPONENTS_BY_ID or component == "2.2":
                raise Problem(404, "unknown_component", f"no drill-down for component {component!r}")
            answer = await drilldown.component_items(request, who, unit, component, chosen, limit=PAGE_ROWS,
                                                     cursor=cursor)
            title = f"{component}. {COMPONENTS_BY_ID[component].name}"
        else:
            chosen_flag = flag or "overdue"
            if chosen_flag not in present.FLAGS:
                raise Problem(400, "bad_flag", f"no flag {chosen_flag!r}")
            answer = await api_http.list_dossiers(request, who, unit, chosen, flag=chosen_flag, limit=PAGE_ROWS,
                                                  cursor=cursor)
            title = present.FLAGS[chosen_flag]
        next_query = None
        if answer["next_cursor"]:
            next_query = urlencode({k: v for k, v in (("period", chosen.key), ("flag", flag),
                                                      ("component", component),
                                                      ("cursor", answer["next_cursor"])) if v})
        names = {code: u.name for code, u in runtime.units.units.items()}
        return _render(request, "dossiers.html", unit=unit, period=chosen, title=title, items=answer["items"],
                       flag=flag, component=component, next_query=next_query, names=names,
                       ancestors=_ancestors(runtime, unit.code) + [unit])

    return await _page_problem(request, work)


@router.get("/ui/units/{unit_code}/report")
async def report_page(request: Request, unit_code: str, period: str | None = None):
    _reader(request)

    async def work():
        runtime: Runtime = request.app.state.runtime
        unit = known_unit(runtime, unit_code)
        chosen = chosen_period(period)
        document, children, days, tables = await asyncio.gather(
            api_http.score_document(request, unit.code, chosen),
            api_http.league_table(request, unit.code, chosen),
            history(request, unit.code, chosen),
            load_tables(runtime, unit.code, chosen),
        )
        late = [p for p in tables.procedures(5, most="overdue") if p.overdue]
        return _render(request, "report.html", unit=unit, period=chosen, doc=document,
                       best=children[:5], worst=children[-5:][::-1] if len(children) > 5 else [],
                       children_count=len(children), chart=present.trend(days, width=520, height=150),
                       days=days, late=late)

    return await _page_problem(request, work)


@router.get("/ui/units/{unit_code}/report.xlsx")
async def report_xlsx_page(request: Request, unit_code: str, period: str | None = None) -> Response:
    who = _reader(request)
    try:
        runtime: Runtime = request.app.state.runtime
        return await exports.report_xlsx(request, who, known_unit(runtime, unit_code), chosen_period(period))
    except Problem as exc:
        return _render(request, "error.html", exc.status, message=_problem_text(request, exc))


# --- the public scoreboard -----------------------------------------------------------------------------

@router.get("/ui/public/{unit_code}")
async def public_page(request: Request, unit_code: str, period: str | None = None):
    async def work():
        runtime: Runtime = request.app.state.runtime
        unit = known_unit(runtime, unit_code)
        chosen = chosen_period(period)
        document, children = await asyncio.gather(
            api_http.score_document(request, unit.code, chosen),
            api_http.league_table(request, unit.code, chosen),
        )
        # Scores only: the document's counters and the children's rows carry no dossier and no person,
        # and the template shows nothing but the scores.
        return _render(request, "public.html", public=True, unit=unit, period=chosen, doc=document,
                       children=children, parent=runtime.units.get(unit.parent) if unit.parent else None)

    return await _page_problem(request, work, public=True)
