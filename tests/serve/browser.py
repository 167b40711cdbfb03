"""Driving the page in headless Chromium as a user would: real mouse actions through selenium's
ActionChains, on the view canvas, in image coordinates. Shared by the page tests."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def chrome(downloads: Path, width: int = 1280, height: int = 860) -> Any:
    """Headless Chromium through chromedriver (no sandbox: CI runs as root); downloads land in `downloads`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    return driver


def wait_for(driver: Any, script: str, timeout: float = 60.0) -> Any:
    """Poll a JS expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.05)
    status = driver.execute_script("return document.getElementById('status').textContent")
    raise AssertionError(f"timed out waiting for {script!r}; page status: {status!r}")


def idle(driver: Any, timeout: float = 300.0) -> None:
    """The model has answered every prompt and the masks are drawn (a real model on a busy CPU may
    take minutes to embed a volume's slices)."""
    wait_for(driver, "kdsam.idle() && !kdsam.view.pending && kdsam.state.pendingLatency === null", timeout)


def _canvas(driver: Any) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "view")


def _offset(driver: Any, x: float, y: float) -> tuple[int, int]:
    """Image pixel (x, y) -> selenium's offset from the canvas centre, in CSS pixels."""
    sx, sy, w, h = driver.execute_script(
        "const p = kdsam.view.toScreen([arguments[0], arguments[1]]); const r = kdsam.view.cssSize();"
        "return [p[0], p[1], r[0], r[1]]",
        x,
        y,
    )
    return round(sx - w / 2), round(sy - h / 2)


def drag_box(driver: Any, box: list[float], steps: int = 2) -> None:
    """Press at (x0, y0), move there in `steps` moves, release at (x1, y1), image pixels."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = _canvas(driver)
    x0, y0 = _offset(driver, box[0], box[1])
    x1, y1 = _offset(driver, box[2], box[3])
    chain = ActionChains(driver, duration=20).move_to_element_with_offset(canvas, x0, y0).click_and_hold()
    at = (x0, y0)
    for i in range(1, steps + 1):
        step = (x0 + (x1 - x0) * i // steps, y0 + (y1 - y0) * i // steps)
        chain.move_by_offset(step[0] - at[0], step[1] - at[1])
        at = step
    chain.release().perform()


def click(driver: Any, x: float, y: float) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver, duration=20).move_to_element_with_offset(
        _canvas(driver), *_offset(driver, x, y)
    ).click().perform()


def key(driver: Any, *keys: str) -> None:
    """Press keys (with modifiers first: key(d, Keys.CONTROL, 'z')) on the focused page."""
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver)
    for k in keys[:-1]:
        chain.key_down(k)
    chain.send_keys(keys[-1])
    for k in reversed(keys[:-1]):
        chain.key_up(k)
    chain.perform()


def scroll(driver: Any, notches: int) -> None:
    """Mouse wheel over the canvas: positive scrolls down (next slice)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    origin = ScrollOrigin.from_element(_canvas(driver))
    for _ in range(abs(notches)):
        ActionChains(driver).scroll_from_origin(origin, 0, 100 if notches > 0 else -100).perform()


def choose(driver: Any, element_id: str, *paths: Path) -> None:
    """Select files in a file input, as the file dialog would."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).send_keys("\n".join(str(p) for p in paths))


def screenshot(driver: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
