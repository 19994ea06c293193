#!/usr/bin/env python
r"""Browser check of a running variant-pipeline Dagster UI with headless Chromium.

Opens the lineage page (global asset graph) and one partition of the ``overlay``
asset, checks in the DOM that each page shows what it should, and saves 1400x900
PNG screenshots under ``docs/screenshots/``:

- ``lineage.png``: all eleven stage assets in their groups ``variant_stages`` and
  ``job_stages``, each drawn as materialized;
- ``overlay-partition.png``: the partition's key headed "Materialized", its latest
  materialization and metadata;
- ``overlay-thumbnail.png``: the same page with the metadata's "image: overlaid"
  entry opened, the inline thumbnail (a data: URI) loaded;
- ``runs.png``: the runs list with successful runs (skip with ``--no-runs``);
- ``checks.png``: the Checks tab of the ``readability_eval`` asset for the same variant: its
  two WCAG checks, each with its outcome (passed, or a warning saying why);
- ``gallery.png``: the ``instagram_feed_gen`` partition of that variant's job with its
  "gallery" metadata opened: every variant's image side by side with scores, check outcomes
  and the job's Korean ad copy, Instagram copy and hashtags;
- ``results-html.png`` (with ``--results-html FILE``): the self-contained gallery that
  ``variant-pipeline results JOB_ID --html FILE`` wrote, opened from the file.

With ``--recovery``, against a demo whose fault drill made the recovery sensor retry a
stage, also:

- ``automation.png``: the Automation page (``/automation``) listing ``outbox_sensor``,
  ``manual_run_continuation_sensor`` and ``recovery_sensor``, each switched on (running),
  the recovery sensor's latest launched run drawn as succeeded;
- ``recovery-runs.png``: the runs of the retried partition (the runs list filtered by its
  ``dagster/partition`` tag): the failed run the outbox sensor launched, and the run the
  recovery sensor launched, tagged ``variant_pipeline/launched_by: recovery_sensor`` and
  ``variant_pipeline/recovery: retry``, which succeeded.

Start the demo first (it prints the UI links and keeps serving), then, for example:

    .venv/bin/python -m variant_pipeline.cli demo --port 3400 &
    .venv/bin/python scripts/browser_check.py --base-url http://127.0.0.1:3400

For ``--recovery``, variant 2's ``vlm_analyze`` fails on its first attempt and the
recovery sensor retries it (a private home keeps the demo out of ``var/``); once the demo
log says the job ended at ``(instagram_feed_gen, done)``:

    VARIANT_PIPELINE_HOME=/tmp/vp-ui-home VP_FAULTS="vlm_analyze:raise:attempt=1,variant=2" \
        VP_RETRY_BACKOFF_S=2 VP_RECOVERY_INTERVAL_S=3 \
        .venv/bin/python -m variant_pipeline.cli demo --port 3400 &
    .venv/bin/python scripts/browser_check.py --base-url http://127.0.0.1:3400 --recovery

Needs Debian's ``chromium`` (``apt-get install chromium``), ``websockets`` and
``Pillow`` (both already in the project's environment). Chromium is driven over
the DevTools protocol directly; no browser-automation package is needed.
Exits non-zero, naming what is missing, if a page does not show what it should.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from PIL import Image
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parent.parent

VARIANT_ASSETS = [
    "img_gen",
    "vlm_analyze",
    "yolo_detect",
    "planner",
    "overlay",
    "vlm_judge",
    "ocr_eval",
    "readability_eval",
    "iou_eval",
]
JOB_ASSETS = ["ad_copy_gen_kor", "instagram_feed_gen"]
SENSORS = ["outbox_sensor", "manual_run_continuation_sensor", "recovery_sensor"]
READABILITY_CHECKS = ["wcag_contrast_mean", "wcag_contrast_worst_case"]
# The tags the recovery sensor puts on a run that retries a failed attempt.
RETRY_TAGS = {"variant_pipeline/launched_by": "recovery_sensor", "variant_pipeline/recovery": "retry"}

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]

# The Dagster UI opens a "Join the Dagster community" dialog on a first visit from
# localhost; it stays closed once this localStorage flag is set.
# The navigation sidebar is collapsed to give the asset graph more room.
PREPARE_STORAGE = """
try {
  localStorage.setItem('communityNux', '1');
  localStorage.setItem('dagster-nav-collapsed', 'true');
} catch (e) {}
"""


class CheckFailed(Exception):
    pass


class Chromium:
    """A headless Chromium and one page in it, driven over the DevTools protocol."""

    def __init__(self, binary: str, width: int, height: int) -> None:
        self.profile = tempfile.mkdtemp(prefix="vp-chromium-")
        self.proc = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise CheckFailed(f"{binary} did not start its DevTools endpoint")
            time.sleep(0.2)
        port, path = port_file.read_text().split("\n")[:2]
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(
            connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30)
        )
        self.ids = itertools.count(1)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.call("Page.addScriptToEvaluateOnNewDocument", session=True, source=PREPARE_STORAGE)

    def call(self, method: str, session: bool = False, timeout: float = 60, **params):
        msg_id = next(self.ids)
        msg = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckFailed(f"DevTools call {method} timed out")
            reply = json.loads(self.ws.recv(timeout=left))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise CheckFailed(f"DevTools call {method} failed: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CheckFailed(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def press(self, key: str, code: str, keycode: int, modifiers: int = 0) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent",
                session=True,
                type=kind,
                key=key,
                code=code,
                windowsVirtualKeyCode=keycode,
                modifiers=modifiers,
            )

    def click(self, selector_js: str) -> bool:
        """Scroll the element that selector_js evaluates to into view and click its centre."""
        box = self.evaluate(f"""
          (() => {{
            const el = {selector_js};
            if (!el) return null;
            el.scrollIntoView({{block: "center"}});
            const r = el.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2];
          }})()""")
        if not box:
            return False
        for kind in ("mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                session=True,
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )
        return True

    def screenshot(self) -> bytes:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        return base64.b64decode(data)

    def close(self) -> None:
        stack = getattr(self, "stack", None)
        if stack is not None:
            with contextlib.suppress(Exception):
                stack.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Chromium's helper processes may still write into the profile for a moment.
        for _ in range(10):
            shutil.rmtree(self.profile, ignore_errors=True)
            if not Path(self.profile).exists():
                break
            time.sleep(0.5)


def graphql(base_url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"{base_url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            reply = json.load(resp)
    except (urllib.error.URLError, OSError) as exc:
        raise CheckFailed(f"no Dagster UI answers at {base_url}: {exc}") from exc
    if reply.get("errors"):
        raise CheckFailed(f"GraphQL errors: {reply['errors']}")
    return reply["data"]


def latest_overlay_partition(base_url: str) -> str:
    data = graphql(
        base_url,
        """
        query {
          assetOrError(assetKey: {path: ["overlay"]}) {
            ... on Asset { assetMaterializations(limit: 1) { partition runId } }
            ... on AssetNotFoundError { message }
          }
        }""",
    )
    mats = (data.get("assetOrError") or {}).get("assetMaterializations") or []
    if not mats or not mats[0].get("partition"):
        raise CheckFailed(
            "the overlay asset has no partitioned materialization yet; wait for the demo job to finish"
        )
    return mats[0]["partition"]


def retried_partition(base_url: str) -> str:
    """The partition of the latest run the recovery sensor launched to retry a stage."""
    data = graphql(
        base_url,
        """
        query($tags: [ExecutionTag!]) {
          runsOrError(filter: {tags: $tags}, limit: 1) {
            ... on Runs { results { runId tags { key value } } }
            ... on PythonError { message }
          }
        }""",
        {"tags": [{"key": k, "value": v} for k, v in RETRY_TAGS.items()]},
    )
    runs = (data.get("runsOrError") or {}).get("results") or []
    partition = runs and {t["key"]: t["value"] for t in runs[0]["tags"]}.get("dagster/partition")
    if not partition:
        raise CheckFailed(
            "no partitioned run launched by the recovery sensor yet; start the demo with a fault "
            'drill (VP_FAULTS="vlm_analyze:raise:attempt=1,variant=2") and wait for the job to end'
        )
    return partition


PAGE_STATE = r"""
(() => {
  const text = document.body ? document.body.innerText : "";
  const all = document.body ? document.body.textContent : "";
  const imgs = [...document.querySelectorAll("img")]
    .filter(i => i.src.startsWith("data:image") && i.complete && i.naturalWidth > 0)
    .map(i => { const r = i.getBoundingClientRect();
                return {w: i.naturalWidth, h: i.naturalHeight, shownW: r.width, top: r.top}; });
  // A spinner among a list item's controls is state, not loading: the Automation page
  // draws a sensor's tick in progress so, and the outbox sensor spends most of each tick
  // waiting for a NOTIFY.
  const spinners = [...document.querySelectorAll('[class*="Spinner"], [role="progressbar"]')]
    .filter(el => !el.closest('[class*="HorizontalControls_item"]')).length;
  // Asset graph nodes: name -> how the node is drawn. Zoomed out, Dagster draws
  // "minimal" nodes whose colour (a CSS variable) is the status: green = materialized.
  const nodes = {};
  for (const el of document.querySelectorAll('[class*="AssetNode_assetName"]')) {
    const box = el.closest('[class*="AssetNode_minimalAssetNodeBox"], [class*="AssetNode_assetNodeContainer"]');
    const style = box ? (box.getAttribute("style") || "") : "";
    nodes[el.textContent.trim()] = {
      green: /--minimal-bg:\s*var\(--color-background-green\)/.test(style),
      text: box ? box.innerText : "",
    };
  }
  // Automation page: sensor name -> its switch (checked: running) and latest run's icon.
  const sensors = {};
  for (const a of document.querySelectorAll('a[href*="/sensors/"]')) {
    const item = a.closest('[class*="ListItem_listItem__"]');
    if (!item) continue;
    const sw = item.querySelector('[class*="formatSwitch"] input[type="checkbox"]');
    const run = item.querySelector('[aria-label^="run_"]');
    sensors[a.getAttribute("href").split("/").pop()] = {
      running: !!(sw && sw.checked && !sw.disabled),
      latestRun: run ? run.getAttribute("aria-label") : null,
      text: item.innerText,
    };
  }
  // Runs list: one entry per row, its run link and all its text (tags, launcher, status).
  const runRows = [...document.querySelectorAll('[class*="RunsFeedRow_row"]')].map(row => {
    const link = row.querySelector('a[href^="/runs/"]');
    return {run: link ? link.getAttribute("href").split("/").pop() : null, text: row.innerText};
  });
  return {text, all, imgs, spinners, nodes, sensors, runRows, title: document.title};
})()
"""


def dismiss_dialogs(browser: Chromium) -> bool:
    """Click "Skip" on the community dialog if it shows anyway; True if it did."""
    return bool(
        browser.evaluate("""
      (() => {
        const dlg = [...document.querySelectorAll('.bp5-dialog, [role="dialog"]')]
          .find(d => d.textContent.includes("Join the Dagster community"));
        if (!dlg) return false;
        const skip = [...dlg.querySelectorAll("button")].find(b => b.textContent.trim() === "Skip");
        if (skip) skip.click();
        return true;
      })()""")
    )


def wait_for(browser: Chromium, url: str, check, timeout: float, settle: float, fix=None) -> dict:
    """Load url and poll the DOM until check(state) returns no missing items.

    fix(browser, state), if given, may act on the page (once) while items are missing.
    """
    browser.navigate(url)
    deadline = time.monotonic() + timeout
    missing: list[str] = ["page not loaded"]
    stable_since = None
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if dismiss_dialogs(browser):
            stable_since = None
            continue
        state = browser.evaluate(PAGE_STATE)
        missing = check(state)
        if missing and fix is not None and fix(browser, state):
            fix = None
        if missing or state["spinners"]:
            stable_since = None
            continue
        stable_since = stable_since or time.monotonic()
        if time.monotonic() - stable_since >= settle:
            return state
    raise CheckFailed(f"{url}: after {timeout:.0f}s the page still lacks: {', '.join(missing)}")


def save_png(data: bytes, path: Path, max_bytes: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(data) > max_bytes:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        buf = io.BytesIO()
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
        data = buf.getvalue()
    path.write_bytes(data)
    return len(data)


def check_lineage(state: dict) -> list[str]:
    missing = [g for g in ("variant_stages", "job_stages") if g not in state["all"]]
    for name in VARIANT_ASSETS + JOB_ASSETS:
        node = state["nodes"].get(name)
        if node is None:
            missing.append(f"asset node {name}")
        elif not (node["green"] or "Materialized" in node["text"]):
            missing.append(f"{name} drawn as materialized")
    return missing


def expand_groups(browser: Chromium, state: dict) -> bool:
    """With several groups the global graph starts collapsed to one box per group;
    once those show, expand them all (the UI's Alt+E shortcut)."""
    if "variant_stages" in state["text"] and "job_stages" in state["text"]:
        browser.press("e", "KeyE", 69, modifiers=1)
        return True
    return False


def show_markdown(label: str):
    """Open the "[Show Markdown]" dialog of the metadata entry ``label`` once the table shows."""
    def fix(browser: Chromium, state: dict) -> bool:
        if "Metadata" not in state["text"]:
            return False
        return browser.click(f"""[...document.querySelectorAll("tr")]
            .filter(r => r.innerText.trim().startsWith({json.dumps(label)}))
            .map(r => [...r.querySelectorAll("a, button, span")]
                        .find(e => e.textContent.trim() === "[Show Markdown]"))
            .find(e => e)""")

    return fix


def job_of_partition(base_url: str, variant: str) -> str:
    """The job partition whose instagram_feed_gen materialization shows ``variant`` (the latest
    job materialized after it: the demo has one job)."""
    data = graphql(
        base_url,
        """
        query {
          assetOrError(assetKey: {path: ["instagram_feed_gen"]}) {
            ... on Asset { assetMaterializations(limit: 1) { partition } }
            ... on AssetNotFoundError { message }
          }
        }""",
    )
    mats = (data.get("assetOrError") or {}).get("assetMaterializations") or []
    if not mats or not mats[0].get("partition"):
        raise CheckFailed(f"no instagram_feed_gen materialization yet (variant {variant}); wait for the job")
    return mats[0]["partition"]


def check_checks_tab(state: dict) -> list[str]:
    text = state["text"]
    missing = [name for name in READABILITY_CHECKS if name not in text]
    if not re.search(r"contrast [0-9.]+:1 (meets|is below) WCAG", text):
        missing.append("a check outcome with its contrast (e.g. 'mean contrast 5.1:1 meets WCAG AA')")
    return missing


def check_gallery(state: dict) -> list[str]:
    text = state["text"]
    missing = [s for s in ("variant 1", "Korean ad copy", "Instagram copy", "Hashtags",
                           "ocr_accuracy", "OCR accuracy") if s not in text]
    if not state["imgs"]:
        missing.append("the variants' images (data: URIs) in the gallery")
    return missing


def make_partition_check(partition: str, thumbnail: bool):
    def check(state: dict) -> list[str]:
        text = state["text"]
        missing = [
            s for s in ("overlay", partition, "Latest materialization", "image: overlaid") if s not in text
        ]
        # The partition's heading: its key, then its status badge.
        if not re.search(re.escape(partition) + r"\s+Materialized\b", text):
            missing.append(f'"{partition}" headed as "Materialized"')
        if thumbnail and not state["imgs"]:
            missing.append("the inline thumbnail image (data: URI) from the metadata")
        return missing

    return check


def check_automation(state: dict) -> list[str]:
    missing = []
    for name in SENSORS:
        sensor = state["sensors"].get(name)
        if sensor is None:
            missing.append(f"sensor {name} listed")
        elif not sensor["running"]:
            missing.append(f"{name} switched on (running)")
    recovery = state["sensors"].get("recovery_sensor")
    if recovery is not None and recovery["latestRun"] != "run_success":
        missing.append("recovery_sensor's latest launched run drawn as succeeded")
    return missing


def check_recovery_runs(state: dict) -> list[str]:
    rows = state["runRows"]
    tags = [f"{k}: {v}" for k, v in RETRY_TAGS.items()]
    retries = [r for r in rows if all(t in r["text"] for t in tags)]
    missing = []
    if not any("Failure" in r["text"] and r not in retries for r in rows):
        missing.append('a run with "Failure"')
    if not retries:
        missing.append("a run tagged " + ", ".join(tags))
    elif not any("Success" in r["text"] for r in retries):
        missing.append('the recovery run with "Success"')
    return missing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--base-url", default="http://127.0.0.1:3000", help="the running Dagster UI (default %(default)s)"
    )
    ap.add_argument(
        "--partition",
        help="the overlay partition (a job_variants_id) to open; "
        "default: that of the latest overlay materialization",
    )
    ap.add_argument("--out-dir", type=Path, default=REPO / "docs" / "screenshots")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--timeout", type=float, default=90, help="seconds to wait for each page")
    ap.add_argument(
        "--settle", type=float, default=2.0, help="seconds a page must stay complete before its screenshot"
    )
    ap.add_argument("--max-kb", type=int, default=400, help="quantize PNGs larger than this")
    ap.add_argument("--no-runs", action="store_true", help="skip the runs page screenshot")
    ap.add_argument("--results-html", type=Path, metavar="FILE",
                    help="also open FILE, written by `variant-pipeline results JOB_ID --html FILE`")
    ap.add_argument(
        "--recovery",
        action="store_true",
        help="also check the sensors (automation.png) and a failed run retried by the recovery "
        "sensor (recovery-runs.png); needs a demo run with a fault drill, see above",
    )
    args = ap.parse_args(argv)
    base = args.base_url.rstrip("/")

    try:
        partition = args.partition or latest_overlay_partition(base)
        partition_url = f"{base}/assets/overlay?view=partitions&partition={partition}"
        pages = [
            ("lineage.png", f"{base}/asset-groups", check_lineage, expand_groups),
            ("overlay-partition.png", partition_url, make_partition_check(partition, False), None),
            ("overlay-thumbnail.png", partition_url, make_partition_check(partition, True),
             show_markdown("image:")),
            ("checks.png", f"{base}/assets/readability_eval?view=checks&partition={partition}",
             check_checks_tab, None),
            ("gallery.png",
             f"{base}/assets/instagram_feed_gen?view=partitions&partition={job_of_partition(base, partition)}",
             check_gallery, show_markdown("gallery")),
        ]
        if not args.no_runs:
            pages.append(
                (
                    "runs.png",
                    f"{base}/runs",
                    lambda s: [] if "Success" in s["text"] else ['a run with "Success"'],
                    None,
                )
            )
        if args.results_html:
            pages.append(("results-html.png", args.results_html.resolve().as_uri(), check_gallery, None))
        if args.recovery:
            retried = retried_partition(base)
            runs_filter = urllib.parse.urlencode([("q[]", f"tag:dagster/partition={retried}")])
            pages += [
                ("automation.png", f"{base}/automation", check_automation, None),
                ("recovery-runs.png", f"{base}/runs?{runs_filter}", check_recovery_runs, None),
            ]
        browser = Chromium(args.chromium, args.width, args.height)
        try:
            for name, url, check, fix in pages:
                try:
                    state = wait_for(browser, url, check, args.timeout, args.settle, fix)
                except CheckFailed:
                    failed = args.out_dir / name.replace(".png", ".failed.png")
                    save_png(browser.screenshot(), failed, args.max_kb * 1024)
                    print(f"(what the page showed: {failed})", file=sys.stderr)
                    raise
                size = save_png(browser.screenshot(), args.out_dir / name, args.max_kb * 1024)
                extra = ""
                if state["imgs"]:
                    extra = f", {len(state['imgs'])} inline image(s) " + " ".join(
                        f"{i['w']}x{i['h']}" for i in state["imgs"]
                    )
                print(f"ok  {name:24s} {size // 1024:4d} KB  {url}{extra}")
        finally:
            browser.close()
    except CheckFailed as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
