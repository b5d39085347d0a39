"""Take docs/images/mlflow.png: MLflow's UI showing a tracked run's metric charts.

    python -m venv /tmp/mlfenv && /tmp/mlfenv/bin/pip install mlflow==3.18.0
    mirec train --dataset ml-100k --model comirec-sa --output-dir /tmp/mlshot/ml100k-sa \\
        --set max_epochs=3 --quiet --track mlflow
    python docs/make_mlflow_screenshot.py --database /tmp/mlshot/mlflow.db \\
        --mlflow /tmp/mlfenv/bin/mlflow

The UI is the full ``mlflow`` package (Flask and the rest), which mirec's environment does
not have: ``--mlflow`` is the ``mlflow`` command of a scratch environment that has it. This
script runs in mirec's environment (the ``track`` extra's client finds the run, Playwright
drives the browser), starts ``mlflow ui`` on a free loopback port for as long as it needs
it, and shoots the run's Model metrics tab in Debian's ``chromium``; the PNG is written
whole or not at all.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# headless, and none of Chromium's own connections (the machine may have no network)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ui(mlflow: str, uri: str, port: int) -> subprocess.Popen[bytes]:
    """``mlflow ui`` on ``uri``, on loopback ``port``, answering (its first start creates
    its tables, which takes a while)."""
    server = subprocess.Popen(
        [mlflow, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: its workers stop with it
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                stop_ui(server)
                raise SystemExit(f"mlflow ui did not start ({mlflow})") from None
            time.sleep(0.5)


def stop_ui(server: subprocess.Popen[bytes]) -> None:
    """``mlflow ui`` and the web server workers it started."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def tidy(page: Page, url: str, metrics: str) -> None:
    """The run's page at ``url`` as docs/tracking.md describes it: the "Model training"
    side of the UI (which it remembers, so the page is opened again after it), its
    assistant panel closed, the charts filtered to ``metrics``. Those are MLflow 3.18's
    controls; one that another version lacks is passed over."""
    with contextlib.suppress(PlaywrightError):
        page.get_by_text("Model training", exact=True).first.click(timeout=5_000)
    page.goto(url)
    charts(page)
    with contextlib.suppress(PlaywrightError):
        page.get_by_role("button", name="Close").first.click(timeout=5_000)
    with contextlib.suppress(PlaywrightError):
        page.get_by_placeholder("Search metric charts").fill(metrics, timeout=10_000)


def charts(page: Page) -> None:
    """Wait for the run's charts: a single-page app draws them (plotly) after the page
    has loaded."""
    page.wait_for_selector(".js-plotly-plot, canvas", timeout=60_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=Path, required=True, help="a run's mlflow.db")
    parser.add_argument("--mlflow", default="mlflow", help="the full package's `mlflow` command")
    parser.add_argument("--experiment", default="mirec", help="the run's experiment")
    parser.add_argument("--run-name", default="ml100k-sa", help="the run to show")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).with_name("images") / "mlflow.png")  # fmt: skip
    parser.add_argument("--metrics", default="^(train/loss|valid/recall_at_50)$",
                        help="the charts' filter (the search box's)")  # fmt: skip
    parser.add_argument("--width", type=int, default=1280, help="the window's width in pixels")
    args = parser.parse_args()

    uri = f"sqlite:///{args.database.resolve().as_posix()}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"{args.database}: no experiment {args.experiment!r}")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = '{args.run_name}'"
    )
    if not runs:
        raise SystemExit(f"{args.database}: no run {args.run_name!r} in {args.experiment!r}")
    run = runs[0]  # the latest

    port = free_port()
    server = start_ui(args.mlflow, uri, port)
    tmp = args.out.with_name(f".{args.out.name}.tmp.png")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 1080})
            url = (
                f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}"
                f"/runs/{run.info.run_id}/model-metrics"
            )
            page.goto(url)
            charts(page)
            tidy(page, url, args.metrics)
            page.wait_for_timeout(3_000)
            page.screenshot(path=str(tmp))
            browser.close()
        os.replace(tmp, args.out)
    finally:
        tmp.unlink(missing_ok=True)
        stop_ui(server)
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
