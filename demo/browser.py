"""Open a page in headless Chromium (Debian's ``chromium``, ``make browser``) over the DevTools
protocol: did every image and video load, what did the console report, and a screenshot.

Chromium is started on a local port with a throw-away profile, never downloaded; without it
:func:`find_chromium` returns None and callers skip.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from core.errors import UserError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# every <img> decoded (naturalWidth > 0) and every <video> with data (readyState >= 2, no error)
MEDIA_JS = """JSON.stringify({
  images: [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                                         width: i.naturalWidth})),
  videos: [...document.querySelectorAll('video')].map(v => ({src: v.getAttribute('src'),
            ok: v.readyState >= 2 && !v.error, readyState: v.readyState, error: v.error ? v.error.code : null,
            networkState: v.networkState, paused: v.paused})),
  title: document.title})"""


# Chromium buffers a muted autoplay video only while it is on screen: show each in turn, wait for data,
# then pause it so that the check does not land on a loop's seek
SHOW_VIDEOS_JS = """(async () => {
  for (const v of document.querySelectorAll('video')) {
    v.scrollIntoView(); const t0 = Date.now();
    if (v.readyState < 2) { v.preload = 'auto'; v.play().catch(() => {}); }
    while (v.readyState < 2 && !v.error && Date.now() - t0 < 20000) await new Promise(r => setTimeout(r, 100));
    v.pause();  // a looping video seeks back to its start, and readyState drops to 1 while it does
    while (v.seeking && Date.now() - t0 < 25000) await new Promise(r => setTimeout(r, 50));
  }
  window.scrollTo(0, 0); return true; })()"""


class BrowserError(UserError):
    """Chromium could not be started or driven."""


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class _Session:
    def __init__(self, ws_url: str, timeout: float):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=2, suppress_origin=True)
        self.next_id, self.events, self.timeout = 0, [], timeout

    def call(self, method: str, **params) -> dict:
        import websocket

        self.next_id += 1
        mid, end = self.next_id, time.monotonic() + self.timeout
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                if time.monotonic() > end:
                    raise BrowserError(f"DevTools {method}: no answer within {self.timeout:g} s") from None
                continue
            if msg.get("id") == mid:
                if "error" in msg:
                    raise BrowserError(f"DevTools {method}: {msg['error'].get('message')}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        if any(e.get("method") == method for e in self.events):
            return True
        while time.monotonic() < end:
            try:
                msg = json.loads(self.ws.recv())
            except Exception:  # noqa: BLE001 - a receive time-out: keep waiting until the deadline
                continue
            self.events.append(msg)
            if msg.get("method") == method:
                return True
        return False


def _console_errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", "")))
                                                               for a in p.get("args", [])))
        elif e.get("method") == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"{p['entry'].get('source')}: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
    return out


def check_page(page: str | Path, screenshot: str | Path | None = None, width: int = 1280, height: int = 2400,
               settle: float = 3.0, timeout: float = 60.0, chromium: str | None = None, full_page: bool = False,
               scale: float = 1.0, max_height: int = 12000, max_bytes: int | None = None) -> dict:
    """Load ``page`` (a local HTML file) in headless Chromium; returns {"images", "videos",
    "errors", "title"} (errors: console errors, uncaught exceptions, failed loads) and writes a PNG
    ``screenshot`` when given: the top ``height`` CSS pixels, or with ``full_page`` the whole page
    (up to ``max_height``), scaled by ``scale`` (DevTools ``Page.captureScreenshot``'s clip) and
    shrunk to at most ``max_bytes`` (:func:`shrink_png`)."""
    exe = chromium or find_chromium()
    if exe is None:
        raise BrowserError("no chromium on PATH (install it with `make browser`)")
    page = Path(page).resolve()
    if not page.is_file():
        raise BrowserError(f"{page}: page not found")
    with tempfile.TemporaryDirectory(prefix="demo-chromium-") as profile:
        proc = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                                 "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0",
                                 "--remote-allow-origins=*", f"--user-data-dir={profile}",
                                 f"--window-size={width},{height}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port = _port(Path(profile), proc, timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
                tabs = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            s = _Session(tabs[0]["webSocketDebuggerUrl"], timeout=timeout)
            for domain in ("Page", "Runtime", "Log"):
                s.call(f"{domain}.enable")
            s.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
            s.call("Page.navigate", url=page.as_uri())
            if not s.wait_event("Page.loadEventFired", timeout):
                raise BrowserError(f"{page}: no load event within {timeout:g} s")
            time.sleep(settle)  # animations start
            s.call("Runtime.evaluate", expression=SHOW_VIDEOS_JS, awaitPromise=True, returnByValue=True)
            media = json.loads(s.call("Runtime.evaluate", expression=MEDIA_JS, returnByValue=True)["result"]["value"])
            s.wait_event("__drain__", 0.5)
            if screenshot:
                h = height
                if full_page:
                    size = s.call("Page.getLayoutMetrics")["cssContentSize"]
                    h = int(min(max(size["height"], 1), max_height))
                    s.call("Emulation.setDeviceMetricsOverride", width=width, height=h, deviceScaleFactor=1,
                           mobile=False)
                    time.sleep(0.5)  # layout and paint at the new height
                shot = s.call("Page.captureScreenshot", format="png", captureBeyondViewport=full_page,
                              clip={"x": 0, "y": 0, "width": width, "height": h, "scale": scale})
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
                if max_bytes:
                    shrink_png(Path(screenshot), max_bytes)
            s.ws.close()
            return {**media, "errors": _console_errors(s.events)}
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)


def shrink_png(path: Path, max_bytes: int) -> int:
    """Keep a screenshot under ``max_bytes`` for the repository: a 256-colour palette first, then
    halve its size until it fits. Returns the final size in bytes."""
    from PIL import Image

    if path.stat().st_size <= max_bytes:
        return path.stat().st_size
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    while True:
        rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
        if path.stat().st_size <= max_bytes or min(rgb.size) < 64:
            return path.stat().st_size
        rgb = rgb.resize((rgb.width // 2, rgb.height // 2), Image.LANCZOS)


def _port(profile: Path, proc: subprocess.Popen, timeout: float) -> int:
    """The DevTools port Chromium chose (it writes DevToolsActivePort into the profile)."""
    f, end = profile / "DevToolsActivePort", time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise BrowserError(f"chromium exited with code {proc.returncode} before DevTools came up")
        if f.is_file() and f.read_text().strip():
            return int(f.read_text().split()[0])
        time.sleep(0.1)
    raise BrowserError(f"chromium's DevTools did not come up within {timeout:g} s")


SHOT_SCALE, SHOT_MAX_BYTES = 0.5, 500_000  # docs/demo_report.png: the whole page at half size, < 500 KB


def main(argv: list[str] | None = None) -> int:
    """``python -m demo.browser PAGE [SCREENSHOT]``: check a page, print what failed, exit 1 if
    anything did; the screenshot is the whole page at half size, under 500 KB."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m demo.browser PAGE.html [SCREENSHOT.png]")
        return 2
    res = check_page(args[0], args[1] if len(args) > 1 else None, full_page=True, scale=SHOT_SCALE,
                     max_bytes=SHOT_MAX_BYTES)
    if len(args) > 1:
        print(f"screenshot: {args[1]} ({Path(args[1]).stat().st_size / 1e3:.0f} KB)")
    bad = [f"image {i['src']}" for i in res["images"] if not i["ok"]] + \
          [f"video {v['src']} (readyState {v['readyState']})" for v in res["videos"] if not v["ok"]] + res["errors"]
    print(f"{args[0]}: {len(res['images'])} images, {len(res['videos'])} videos, {len(res['errors'])} console errors")
    for b in bad:
        print(f"  failed: {b}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
