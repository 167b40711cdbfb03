"""Makes docs/serve/screenshot.png: the page in headless Chromium with the bundled LiteMedSAM teacher,
a synthetic skin lesion, one box and one click. Run from the repository root:

    PYTHONPATH=. python docs/serve/screenshot.py docs/serve/screenshot.png   # from the repository root
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from selenium.webdriver.common.by import By

from kdsam.data.imageio import write_png
from kdsam.data.prompts import boxes_from_mask
from kdsam.data.synthetic import synthesize
from kdsam.models.loading import load_predictor
from kdsam.serve.app import create_app
from kdsam.serve.engine import Engine
from kdsam.serve.loadtest import serving
from tests.serve.test_page import EMBEDDED, chrome, draw_box, wait_for


def main(out: str) -> None:
    image, mask = synthesize("skin", 5)
    box = [int(v) for v in boxes_from_mask(mask)[0]]
    with tempfile.TemporaryDirectory() as tmp, serving(create_app(Engine(load_predictor("teacher:litemedsam")))) as url:
        write_png(Path(tmp) / "skin_lesion.png", image)
        driver = chrome(1000, 640)
        try:
            driver.get(url + "/")
            driver.find_element(By.ID, "file").send_keys(str(Path(tmp) / "skin_lesion.png"))
            wait_for(driver, EMBEDDED)
            draw_box(driver, [box[0] - 6, box[1] - 6, box[2] + 6, box[3] + 6])
            wait_for(driver, "document.getElementById('status').textContent.startsWith('Mask')")
            driver.save_screenshot(out)
        finally:
            driver.quit()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/serve/screenshot.png")
