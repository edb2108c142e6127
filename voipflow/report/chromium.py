"""Headless Chromium for the report: print to PDF, screenshot, dump the drawn DOM.

Chromium is the printing engine because the page is HTML and CSS with
``@page`` rules: printing it with a browser gives exactly what a reader who
presses Ctrl+P gets, with no second layout engine to keep in step. Debian's
``chromium`` package is enough: the command line has ``--print-to-pdf``,
``--screenshot`` and ``--dump-dom``, so no driver library is needed.

Each run gets a fresh profile directory and no network services (no
component updates, sync or background fetches); the page itself needs none.
As root Chromium refuses its sandbox, so ``--no-sandbox`` is added only then.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from voipflow.report import PdfError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium binary to run: ``explicit`` if given, else the first on PATH."""
    if explicit:
        if shutil.which(explicit) is None:
            raise PdfError(f"--chromium {explicit}: no such executable")
        return explicit
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise PdfError(
        "headless Chromium is needed to print the report: install Debian's `chromium` "
        "package (scripts/setup.sh does) or pass --chromium PATH"
    )


def _base_args(binary: str, profile: str) -> list[str]:
    args = [
        binary,
        "--headless",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")
    return args


def run_chromium(
    page: Path, extra: list[str], *, binary: str | None = None, timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``page`` (a local file) with ``extra`` flags."""
    exe = find_chromium(binary)
    with tempfile.TemporaryDirectory(prefix="voipflow-chromium-") as profile:
        cmd = [*_base_args(exe, profile), *extra, page.resolve().as_uri()]
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise PdfError(f"Chromium did not finish within {timeout_s:.0f} s") from exc
        except OSError as exc:
            raise PdfError(f"cannot run {exe}: {exc}") from exc


def print_pdf(page: Path, pdf: Path, *, binary: str | None = None, timeout_s: float = 60.0) -> Path:
    """Print ``page`` to ``pdf`` as a reader's browser would (A4 from the page's CSS)."""
    pdf.parent.mkdir(parents=True, exist_ok=True)
    if pdf.exists():
        pdf.unlink()
    res = run_chromium(
        page,
        [f"--print-to-pdf={pdf.resolve()}", "--no-pdf-header-footer"],
        binary=binary,
        timeout_s=timeout_s,
    )
    if not pdf.exists() or pdf.stat().st_size == 0:
        tail = res.stderr.strip().splitlines()[-3:]
        raise PdfError(f"Chromium wrote no PDF (exit {res.returncode}): {' | '.join(tail)}")
    return pdf


def screenshot(
    page: Path,
    png: Path,
    *,
    width: int = 900,
    height: int = 4000,
    binary: str | None = None,
    timeout_s: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """A PNG of the page at ``width`` x ``height`` CSS pixels; the run, for its log."""
    png.parent.mkdir(parents=True, exist_ok=True)
    return run_chromium(
        page,
        [
            f"--screenshot={png.resolve()}",
            f"--window-size={width},{height}",
            "--enable-logging=stderr",
            "--v=0",
        ],
        binary=binary,
        timeout_s=timeout_s,
    )


def dump_dom(
    page: Path, *, binary: str | None = None, timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """The DOM after Chromium parsed and laid out the page (stdout), console log on stderr."""
    return run_chromium(
        page,
        ["--dump-dom", "--enable-logging=stderr", "--v=0"],
        binary=binary,
        timeout_s=timeout_s,
    )
