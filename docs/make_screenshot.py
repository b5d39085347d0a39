"""Take docs/serve-page.png: the web page of ``mirec serve`` for one user, in headless Chromium.

    python docs/make_screenshot.py --model-dir runs/ml-100k-sa --user 1

``--model-dir`` is a model folder written by ``mirec train`` (the picture in the README:
``mirec train --dataset ml-100k --model comirec-sa --output-dir runs/ml-100k-sa``). The
page is served on loopback from this process and shot by Debian's ``chromium`` through
Playwright; the PNG is written whole or not at all.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from mirec import Recommender
from mirec.serving.app import create_app

CHROMIUM = "/usr/bin/chromium"
# headless, and none of Chromium's own connections (the machine may have no network)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def serve(model_dir: Path) -> tuple[uvicorn.Server, threading.Thread, int]:
    """Serve the page of the model folder ``model_dir`` on a free loopback port, in a thread."""
    app = create_app(Recommender.load(model_dir))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("the page's server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a `mirec train` folder")
    parser.add_argument("--user", default="1", help="the user to show (default 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("serve-page.png"))
    parser.add_argument("--width", type=int, default=1360, help="the window's width in pixels")
    args = parser.parse_args()

    server, thread, port = serve(args.model_dir)
    tmp = args.out.with_name(f".{args.out.name}.tmp.png")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/?user={args.user}")
            page.wait_for_selector(".interest", timeout=30_000)
            page.screenshot(path=str(tmp), full_page=True)
            browser.close()
        os.replace(tmp, args.out)
    finally:
        tmp.unlink(missing_ok=True)
        server.should_exit = True
        thread.join(timeout=10)
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
