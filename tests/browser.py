"""Headless Chromium for the console tests: Debian's `chromium` (./run installs it),
driven by Playwright from PyPI, which never downloads a browser of its own here."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "console"


@dataclass
class Tab:
    """A page and what went wrong in it: console errors, uncaught exceptions."""

    page: object
    errors: list[str] = field(default_factory=list)

    def open(self, url: str) -> int:
        """Loads `url`; its HTTP status."""
        response = self.page.goto(url, wait_until="load")  # type: ignore[attr-defined]
        assert response is not None
        return response.status

    def shot(self, name: str) -> Path:
        """A 1280×800 screenshot into docs/console/NAME.png."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path))  # type: ignore[attr-defined]
        return path


@contextmanager
def chromium() -> Iterator[object]:
    """A fresh browser profile (its own --user-data-dir), closed and removed after."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (./run test installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="strata-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=FLAGS,
                viewport=VIEWPORT,
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def new_tab(context: object) -> Tab:
    page = context.new_page()  # type: ignore[attr-defined]
    tab = Tab(page)
    page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc}"))
    page.on("dialog", lambda d: d.accept())  # the console's "are you sure?"
    return tab
