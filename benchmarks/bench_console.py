"""The web console's sessions page with 1,000 sessions: time to first meaningful paint in Chromium.

A manager without agents (SQLite) gets 1,000 sessions of the fixture user written straight into its database
(a third each PENDING, RUNNING and TERMINATED, as the API would have left them), and a webserver serves the
console. Debian's Chromium (headless, Playwright) logs in once as the user and loads ``/sessions`` several
times; each load records, from the navigation's start:

* ``fcp``: first contentful paint;
* ``fmp``: the first paint of the sessions table (Element Timing on the table's first cell, ``elementtiming``
  attribute), i.e. when the user sees their sessions;
* ``load``: the load event.

The baseline in the same run is the same page for the admin, who has no sessions (an empty table): the
ratio ``fmp(1,000 sessions) / fmp(empty)`` is what the 1,000 sessions cost. The server's time for the HTML
(``responseEnd - requestStart``) is recorded too.

Run: ``.venv/bin/python benchmarks/bench_console.py [--sessions N] [--rounds R]``. Results:
``benchmarks/results/console.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update

from ai.backend.manager.db import create_engine, session_factory
from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.manager.models import KernelRow, SessionRow
from ai.backend.manager.models.base import utcnow
from ai.backend.testutils.cluster import launch_manager
from ai.backend.testutils.scheduler_rows import insert_pending, unlimit_fixture_user
from ai.backend.testutils.web import launch_webserver

CHROMIUM = "/usr/bin/chromium"
SLOTS = {"cpu": "1", "mem": "268435456"}

# Runs in the page after load: the navigation timing, FCP and the table's element timing.
_TIMINGS_JS = """
async () => {
  const nav = performance.getEntriesByType('navigation')[0];
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const elements = await new Promise((resolve) => {
    const seen = [];
    try {
      new PerformanceObserver((list) => { seen.push(...list.getEntries()); })
        .observe({type: 'element', buffered: true});
    } catch (e) {}
    setTimeout(() => resolve(seen.map(e => ({id: e.identifier, t: e.renderTime || e.loadTime}))), 300);
  });
  const table = elements.filter(e => e.id === 'sessions-table').map(e => e.t);
  return {
    fcp: fcp ? fcp.startTime : null,
    fmp: table.length ? Math.min(...table) : null,
    load: nav.loadEventEnd,
    server: nav.responseEnd - nav.requestStart,
    bytes: nav.transferSize,
  };
}
"""


async def _populate(db_url: str, count: int) -> None:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as db:
            await unlimit_fixture_user(db, 10 * count)
            now = utcnow() - timedelta(hours=1)
            names = [f"bench-{i:04d}" for i in range(count)]
            await insert_pending(db, names, SLOTS, now, status_history={"PENDING": now.isoformat()})
            third = count // 3
            for status, chunk in (("RUNNING", names[:third]), ("TERMINATED", names[third : 2 * third])):
                sids = [
                    r[0]
                    for r in (await db.execute(SessionRow.__table__.select().where(SessionRow.name.in_(chunk)))).all()
                ]
                values: dict[str, Any] = {"status": status, "occupying_slots": SLOTS if status == "RUNNING" else {}}
                if status == "TERMINATED":
                    values["terminated_at"] = now + timedelta(minutes=5)
                await db.execute(update(SessionRow).where(SessionRow.id.in_(sids)).values(**values))
                await db.execute(update(KernelRow).where(KernelRow.session_id.in_(sids)).values(status=status))
            await db.commit()
    finally:
        await engine.dispose()


def _measure(page: Any, path: str, rounds: int) -> dict[str, Any]:
    samples = []
    for _ in range(rounds + 1):  # the first load warms caches and is not counted
        page.goto(path, wait_until="load")
        samples.append(page.evaluate(_TIMINGS_JS))
    samples = samples[1:]
    out: dict[str, Any] = {"samples": samples}
    for key in ("fcp", "fmp", "load", "server"):
        values = [s[key] for s in samples if s[key] is not None]
        out[key] = statistics.median(values) if values else None
    out["bytes"] = samples[-1]["bytes"]
    return out


def _login(page: Any, who: dict[str, Any]) -> None:
    page.goto("/login")
    page.get_by_label("Email or user name").fill(who["email"])
    page.get_by_label("Password").fill(who["password"])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/sessions*")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bai-bench-console-") as tmp:
        m = launch_manager(Path(tmp) / "manager")
        web = None
        try:
            t = time.perf_counter()
            asyncio.run(_populate(m.db_url, args.sessions))
            print(f"{args.sessions} sessions written in {time.perf_counter() - t:.1f}s", flush=True)
            web = launch_webserver(Path(tmp) / "web", m.endpoint)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
                try:
                    results: dict[str, Any] = {}
                    for label, who in (("empty", ADMIN), ("sessions", USER)):
                        ctx = browser.new_context(base_url=web.url, viewport={"width": 1366, "height": 768})
                        page = ctx.new_page()
                        _login(page, who)
                        results[label] = _measure(page, "/sessions", args.rounds)
                        ctx.close()
                finally:
                    browser.close()
        finally:
            if web is not None:
                web.shutdown()
            m.shutdown()
    full, empty = results["sessions"], results["empty"]
    res = {
        "sessions": args.sessions,
        "rounds": args.rounds,
        "with_sessions": {k: v for k, v in full.items() if k != "samples"},
        "empty": {k: v for k, v in empty.items() if k != "samples"},
        "fmp_ratio": (full["fmp"] / empty["fmp"]) if full["fmp"] and empty["fmp"] else None,
        "fcp_ratio": (full["fcp"] / empty["fcp"]) if full["fcp"] and empty["fcp"] else None,
    }
    for label, r in (("empty page", empty), (f"{args.sessions} sessions", full)):
        print(
            f"{label:>15}: fcp {r['fcp']:.0f} ms, fmp {r['fmp'] or float('nan'):.0f} ms, load {r['load']:.0f} ms, "
            f"server {r['server']:.0f} ms, {r['bytes'] / 1024:.0f} KiB",
            flush=True,
        )
    print(f"ratio (fmp, {args.sessions} sessions / empty): {res['fmp_ratio']}", flush=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "console.json").write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
