"""The page's PACS panel in headless Chromium against a real Orthanc (tests/infer/orthanc.py): a series
uploaded to the PACS is listed (QIDO-RS), opened from the list, segmented with a box, and "Save to
PACS" stores a SEG that QIDO-RS then finds in the study, equal to the page's masks. Without
--dicomweb the panel is hidden. With KDSAM_PAGE_ARTIFACTS=docs/serve the screenshot is kept there
(KDSAM_PAGE_MODEL=teacher:litemedsam: with a real model, as docs/serve.md's screenshots are).

Skipped, saying why, without chromium and chromedriver or without Orthanc and its DICOMweb plugin.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dicomweb_client import DICOMwebClient

from kdsam.infer.dicomseg import read_seg_labels
from kdsam.infer.dicomweb import Target
from kdsam.serve.app import create_app
from kdsam.serve.engine import Engine
from kdsam.serve.loadtest import serving
from tests.infer.dicom_series import COLUMNS, ROWS, SLICES, ct_series
from tests.infer.orthanc import Orthanc, orthanc
from tests.serve import browser as b
from tests.serve.conftest import decode_png

pytestmark = pytest.mark.skipif(
    not (b.CHROMIUM and b.CHROMEDRIVER),
    reason="needs chromium and chromedriver on PATH (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    with orthanc(tmp_path / "orthanc") as server:
        yield server


@pytest.fixture
def served(engine: Engine) -> Engine:
    """The tiny model, or KDSAM_PAGE_MODEL (teacher:litemedsam for the docs' screenshot)."""
    from kdsam.models.loading import load_predictor

    model = os.environ.get("KDSAM_PAGE_MODEL")
    return Engine(load_predictor(model)) if model else engine


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    driver = b.chrome(tmp_path / "downloads")
    try:
        yield driver
    finally:
        driver.quit()


def js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(f"return {script}", *args)


def test_open_a_pacs_series_segment_it_and_save_a_seg(served: Engine, pacs: Orthanc, driver: Any, tmp_path) -> None:
    sources = ct_series(tmp_path / "ct")
    pacs.upload(sorted((tmp_path / "ct").iterdir()))
    study, series = sources[0].StudyInstanceUID, sources[0].SeriesInstanceUID
    with serving(create_app(served, dicomweb=Target(pacs.dicomweb))) as url:
        driver.get(url + "/")
        b.wait_for(driver, f"document.querySelector('#studies li[data-study=\"{study}\"] button')")
        assert not js(driver, "document.getElementById('pacs').hidden")
        assert js(driver, "document.getElementById('save-pacs').disabled"), "Save to PACS offered with no mask"
        driver.find_element("css selector", f'#studies li[data-study="{study}"] > button').click()
        b.wait_for(driver, f"document.querySelector('#studies li[data-series=\"{series}\"] button')")
        driver.find_element("css selector", f'#studies li[data-series="{series}"] button').click()
        b.wait_for(driver, "kdsam.state.doc && kdsam.view.image")
        b.idle(driver)
        assert js(driver, "[kdsam.state.doc.kind, kdsam.state.doc.depth, kdsam.state.doc.width]") == [
            "volume",
            SLICES,
            COLUMNS,
        ]
        b.key(driver, "b")
        b.drag_box(driver, [18, 8, 54, 34])  # the ball, on the middle slice and the ones around it
        b.idle(driver)
        driver.find_element("id", "save-pacs").click()
        status = "document.getElementById('pacs-status').textContent"
        text = b.wait_for(driver, f"/^(Stored SEG|Save to PACS failed)/.test({status}) && {status}")
        assert text.startswith("Stored SEG"), text
        seg_row = "[...document.querySelectorAll('#studies li[data-series]')].some(li => /^SEG /.test(li.textContent))"
        b.wait_for(driver, seg_row)  # the study's list shows the new SEG series without a refresh
        if os.environ.get("KDSAM_PAGE_ARTIFACTS"):
            b.screenshot(driver, Path(os.environ["KDSAM_PAGE_ARTIFACTS"]) / "9-pacs-saved-seg.png")
        shown = np.zeros((SLICES, ROWS, COLUMNS), np.uint8)
        for z in range(SLICES):
            mask = js(driver, "kdsam.maskPNG(0, arguments[0])", z)
            if mask:
                shown[z][decode_png(mask)] = 1
        assert shown.any(), "the box gave no mask"
    sop = text.split()[2]
    found = DICOMwebClient(pacs.dicomweb).search_for_series(study, search_filters={"Modality": "SEG"})
    assert len(found) == 1, found
    (seg,) = DICOMwebClient(pacs.dicomweb).retrieve_series(study, found[0]["0020000E"]["Value"][0])
    assert seg.SOPInstanceUID == sop and [s.SegmentLabel for s in seg.SegmentSequence] == ["object 1"]
    seg.save_as(tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_seg_labels(tmp_path / "seg.dcm", sources), shown)


def test_without_a_pacs_the_panel_is_hidden(engine: Engine, driver: Any) -> None:
    with serving(create_app(engine)) as url:
        driver.get(url + "/")
        b.wait_for(driver, "document.getElementById('model').textContent.startsWith('model:')")
        assert js(driver, "document.getElementById('pacs').hidden")
