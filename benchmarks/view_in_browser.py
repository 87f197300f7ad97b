"""``cnnir view`` as a person sees it: serve a model, open it in headless Chromium, click a
node and check that its costs are on the page; save a screenshot.

Needs Playwright's Python package and a Chromium from the system (not a downloaded build):

    apt-get install chromium && pip install playwright
    python benchmarks/view_in_browser.py examples/resnet.py:resnet50 resnet50.png [--node Conv]
        [--chromium /usr/bin/chromium] [-- extra cnnir view options, e.g. -O]

Prints the URL, the number of nodes drawn and the properties panel of the clicked node (the
first whose box shows ``--node``); exits 1 if that panel has no cnnir cost.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time


def served_url(server: subprocess.Popen) -> str:
    for line in server.stdout:
        found = re.search(r"serving .* at (http://\S+)", line)
        if found:
            return found.group(1)
    raise SystemExit("cnnir view printed no URL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("screenshot")
    parser.add_argument("--node", default="Conv", help="text of the node box to click")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("view_options", nargs="*")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    server = subprocess.Popen([sys.executable, "-m", "cnnir.cli", "view", args.model,
                               "--no-browser", "--port", "0", *args.view_options],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = served_url(server)
        print("url", url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url)
            accept = page.get_by_text("Accept")  # Netron's first-run notice
            accept.wait_for(timeout=60_000)
            accept.click()
            page.wait_for_selector("g.node", timeout=60_000)
            print("nodes drawn", page.locator("g.node").count())
            page.locator("g.node", has_text=args.node).first.click()
            time.sleep(1.5)
            panel = page.locator("#sidebar").inner_text()
            print(panel)
            page.screenshot(path=args.screenshot)
            browser.close()
    finally:
        server.terminate()
    if "MACs" not in panel:
        raise SystemExit("the clicked node shows no cnnir cost")
    print(f"ok: costs shown; screenshot {args.screenshot}")


if __name__ == "__main__":
    main()
