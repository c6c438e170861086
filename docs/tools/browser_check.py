#!/usr/bin/env python3
"""Opens the built site in a real browser (Debian's headless Chromium) and checks what a reader sees.

  browser_check.py HTML_DIR SCREENSHOT_DIR

Pages: the index, a tutorial, the API page of the memory-saving wrapper (its class and a member
must be on the rendered page) and the search page searching "InvertibleModuleWrapper" (the
wrapper's page must be among the results, found by Sphinx's JavaScript search in the browser).
Each page's DOM is read after its scripts ran, and a PNG screenshot of each is written to
SCREENSHOT_DIR. Exits 1 naming what was missing.
"""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

BROWSERS = ["chromium", "chromium-browser", "google-chrome"]
TIMEOUT_S = 120


def browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    sys.exit("browser_check: no Chromium found: run scripts/install-deps.sh (Debian package chromium)")


def run_browser(profile, *arguments):
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
               "--window-size=1280,1000", "--virtual-time-budget=15000", *arguments]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT_S,
                            env=dict(os.environ, HOME=profile))
    if result.returncode != 0:
        sys.exit(f"browser_check: {' '.join(command)} failed ({result.returncode}):\n"
                 f"{result.stderr.decode(errors='replace')[-2000:]}")
    return result.stdout.decode(errors="replace")


def main():
    site, shots = pathlib.Path(sys.argv[1]).resolve(), pathlib.Path(sys.argv[2]).resolve()
    shots.mkdir(parents=True, exist_ok=True)
    checks = [
        ("index", "index.html", ["memcnn", "Getting started", "Tutorials", "API reference"]),
        ("tutorial", "tutorials/custom-coupling.html", ["AdditiveCoupling", "is_invertible_module"]),
        ("api-wrapper", "api/cpp/core-wrapper.html", ["InvertibleModuleWrapperImpl", "keep_input", "inverse"]),
        # Only the results count: the sidebar links every page, the wrapper's included.
        ("search", "search.html?q=InvertibleModuleWrapper", ["api/cpp/core-wrapper.html"]),
    ]
    failures = []
    with tempfile.TemporaryDirectory(prefix="memcnn-browser-") as profile:
        for name, page, expected in checks:
            path, _, query = page.partition("?")
            if not (site / path).is_file():
                failures.append(f"{path}: not in the site")
                continue
            url = (site / path).as_uri() + (f"?{query}" if query else "")
            dom = run_browser(profile, "--dump-dom", url)
            if name == "search":
                dom = dom[dom.find('id="search-results"'):] if 'id="search-results"' in dom else ""
            missing = [text for text in expected if text not in dom]
            if missing:
                failures.append(f"{page}: the rendered page lacks {missing}")
            screenshot = shots / f"{name}.png"
            run_browser(profile, f"--screenshot={screenshot}", url)
            if not screenshot.is_file() or screenshot.stat().st_size < 1000:
                failures.append(f"{page}: no screenshot written to {screenshot}")
            print(f"browser_check: {page}: {'ok' if not missing else 'MISSING ' + str(missing)}; "
                  f"screenshot {screenshot}")
    for failure in failures:
        print(f"browser_check: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
