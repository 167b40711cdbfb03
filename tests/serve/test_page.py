"""The web page in a real headless Chromium: open an image, draw a box, and the mask shown is the API's.

Needs Debian's `chromium` and `chromium-driver` (CI installs them); skipped with the reason otherwise.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kdsam.data.imageio import write_png
from kdsam.serve.app import create_app
from kdsam.serve.engine import Engine
from kdsam.serve.loadtest import serving
from tests.serve.conftest import decode_png

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
EMBEDDED = "kdsam.state.session && document.getElementById('status').textContent.includes('embedded')"
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs chromium and chromedriver on PATH (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def server(engine: Engine) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread; stopped after the test."""
    with serving(create_app(engine)) as url:
        yield url


def chrome(width: int = 1200, height: int = 900):
    """Headless Chromium through chromedriver (no sandbox: CI runs as root)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    return driver


@pytest.fixture
def browser() -> Iterator[object]:
    driver = chrome()
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 60.0):
    """Poll a JS expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.1)
    status = driver.execute_script("return document.getElementById('status').textContent")
    raise AssertionError(f"timed out waiting for {script!r}; page status: {status!r}")


def draw_box(driver, box: list[int]) -> None:
    """Drag from (x0, y0) to (x1, y1), given in image pixels, on the overlay canvas as a mouse would."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "overlay")
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", canvas)
    w, h = driver.execute_script("return [kdsam.state.width, kdsam.state.height]")

    def offset(x: float, y: float) -> tuple[int, int]:  # Selenium offsets are from the element's centre
        return round(x / w * rect[0] - rect[0] / 2), round(y / h * rect[1] - rect[1] / 2)

    x0, y0 = offset(box[0], box[1])
    x1, y1 = offset(box[2], box[3])
    chain = ActionChains(driver).move_to_element_with_offset(canvas, x0, y0).click_and_hold()
    half = ((x1 - x0) // 2, (y1 - y0) // 2)
    chain.move_by_offset(*half).move_by_offset(x1 - x0 - half[0], y1 - y0 - half[1])
    chain.release().perform()


def test_draw_a_box_and_the_mask_shown_is_the_apis(server, browser, engine, image, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from selenium.webdriver.common.by import By

    write_png(tmp_path / "scan.png", image)
    browser.get(server + "/")
    assert "kdsam" in browser.title
    wait_for(browser, "document.getElementById('model').textContent.startsWith('model:')")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "scan.png"))
    wait_for(browser, EMBEDDED)
    draw_box(browser, [60, 40, 200, 180])
    shown = decode_png(wait_for(browser, "kdsam.maskPNG()"))
    sent = browser.execute_script("return kdsam.state.actions[0].box")
    assert all(abs(a - b) <= 2 for a, b in zip(sent, [60, 40, 200, 180], strict=True)), sent
    api = TestClient(create_app(Engine(engine.predictor))).post(
        "/v1/segment", files={"image": ("scan.png", (tmp_path / "scan.png").read_bytes())}, data={"boxes": f"[{sent}]"}
    )
    want = decode_png(api.json()["masks"][0]["png"])
    assert shown.shape == image.shape[:2] and want.any()
    np.testing.assert_array_equal(shown, want)
    # ...and it is what the overlay draws: every mask pixel tinted (the box outline adds a little more).
    alpha = np.array(
        browser.execute_script(
            "const c = document.getElementById('overlay');"
            "const rgba = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "return Array.from(rgba.filter((_, i) => i % 4 == 3))"
        ),
        dtype=np.uint8,
    ).reshape(shown.shape)
    assert (alpha[want] > 0).all() and ((alpha > 0) & ~want).mean() < 0.05
    undo = browser.find_element(By.ID, "undo")
    undo.click()
    wait_for(browser, "kdsam.maskPNG() === null")
