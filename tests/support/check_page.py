"""Loads an offline HTML page in headless Chromium and reports what a reader's browser would see.

    python check_page.py PAGE.html SCREENSHOT.png

Drives the system's Chromium (/usr/bin/chromium, or $CHROMIUM) through Playwright, which downloads no
browser. Prints one JSON object: the console errors, every request the page made that is not the page
itself or a data: URI (an offline page makes none), how many images loaded and how many failed, and the
page's title. Writes a full-page screenshot.
"""

import json
import os
import sys

from playwright.sync_api import sync_playwright

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main():
    page_path, screenshot = os.path.abspath(sys.argv[1]), sys.argv[2]
    url = "file://" + page_path
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url) if r.url != url and not r.url.startswith("data:") else None)
        page.goto(url, wait_until="load")
        images = page.evaluate("""() => {
            const all = Array.from(document.images);
            return {loaded: all.filter(i => i.complete && i.naturalWidth > 0).length,
                    broken: all.filter(i => !(i.complete && i.naturalWidth > 0)).length};
        }""")
        svgs = page.evaluate("() => document.querySelectorAll('svg').length")
        title = page.title()
        page.screenshot(path=screenshot, full_page=True)
        browser.close()
    print(json.dumps({"console_errors": errors, "requests": requests, "images": images, "svgs": svgs, "title": title}))


if __name__ == "__main__":
    main()
