"""The HTML report in a real headless browser: it loads offline, draws its four plots,
prints to PDF and paints a non-blank page.

Needs Chromium (Debian: ``apt-get install chromium``); skipped with a reason without it.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from records_helpers import (
    CODE,
    TODAY,
    Clock,
    clock_fixture,  # noqa: F401  (fixture "clock")
    ready_course,
    run_session,
    store_fixture,  # noqa: F401  (fixture "store")
)

from estim.records.diary import DiaryEntry
from estim.records.models import Outcome
from estim.records.report import build_report
from estim.records.report_html import render_html
from estim.records.store import Store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed (apt-get install chromium); the HTML report's "
        "browser rendering is not checked",
    ),
]


@pytest.fixture
def report_file(store: Store, clock: Clock, tmp_path: Path) -> Path:
    clock.now -= timedelta(days=14)
    record = ready_course(store)
    for n in range(14):
        store.add_diary(
            CODE,
            [DiaryEntry(day=clock.today(), hold_s=0, repetitions=0, blocks_done=2 + n % 5)],
        )
        if n % 3 == 0:
            run_session(store, record, outcome=Outcome.COMPLETED, amplitude_ua=12_000 + 500 * n)
        clock.advance(days=1)
    report = build_report(
        patient=store.patient(CODE),
        courses=store.prescriptions(CODE),
        diary=store.diary(CODE),
        sessions=store.sessions(CODE),
        generated_at=clock.now,
        end=TODAY,
    )
    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        # No network at all: a report that needed anything from outside would show it.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, timeout=120, check=False)


def test_the_report_renders_in_a_headless_browser(report_file: Path, tmp_path: Path) -> None:
    result = chromium(tmp_path, "--dump-dom", report_file.as_uri())
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    dom = result.stdout.decode()
    assert f"Progress report: {CODE}" in dom
    for section in ("flags", "stimulation", "exercise", "trend", "amplitude", "incidents"):
        assert f'id="{section}"' in dom, section
    assert dom.count("<svg") == 4


def test_the_report_prints_to_pdf(report_file: Path, tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    result = chromium(
        tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", report_file.as_uri()
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    assert data.count(b"/Type /Page") - data.count(b"/Type /Pages") >= 2  # A4, several pages


def test_the_report_paints_a_page(report_file: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    png = tmp_path / "report.png"
    result = chromium(
        tmp_path, f"--screenshot={png}", "--window-size=1000,2000", report_file.as_uri()
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    pixels = imread(png)
    assert pixels.shape[0] == 2000
    assert pixels.std() > 0.05  # text and plots, not a blank page
