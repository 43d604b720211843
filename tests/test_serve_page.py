"""The page of ``maskformer serve`` in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium): upload, overlay, legend, hover, class toggles, opacity, downloads
and the example images, checked against the API's answers for the same image.

``.ci/run`` installs the browser where it is missing and sets MASKFORMER_REQUIRE_BROWSER=1, so that CI
fails rather than skips without it. MASKFORMER_SCREENSHOT=path.png keeps a screenshot of the page.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from maskformer.serve import ServeConfig, background_server, create_app
from tests.serving import predictor, save_serving_model, write_scene

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        message = "needs Debian's chromium and chromium-driver (apt install chromium chromium-driver)"
        if os.environ.get("MASKFORMER_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


def _wait(condition, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _status(driver) -> str:
    return driver.execute_script("return document.getElementById('status').textContent")


def _legend(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#legend li .name')].map((e) => e.textContent)")


def _expected_legend(answer: dict) -> list[str]:
    """Class names in the legend's order: by total area, largest first."""
    area: dict[str, int] = {}
    for s in answer["segments"]:
        area[s["name"]] = area.get(s["name"], 0) + s["area"]
    return sorted(area, key=lambda name: -area[name])


def _pixel(driver, x: int, y: int) -> list[int]:
    return driver.execute_script(
        "return [...document.getElementById('overlay-canvas').getContext('2d')"
        ".getImageData(arguments[0], arguments[1], 1, 1).data].slice(0, 3)",
        x,
        y,
    )


def _download(driver, label: str, name: str) -> Path:
    target = driver.downloads / name
    driver.find_element("css selector", f"#download-links a[data-kind='{label}']").click()
    return _wait(lambda: target if target.exists() and target.stat().st_size else None, f"the download {name}")


def _inner_pixel(mask: np.ndarray) -> tuple[int, int]:
    """A pixel of ``mask`` whose 5x5 neighbourhood lies inside it (so not on a drawn boundary)."""
    inner = mask.copy()
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            inner &= np.roll(mask, (dy, dx), axis=(0, 1))
    ys, xs = np.nonzero(inner)
    k = len(ys) // 2
    return int(xs[k]), int(ys[k])


def test_page_upload_overlay_legend_hover_toggle_download(browser, tmp_path):
    from pycocotools import mask as mask_utils
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    model_dir = save_serving_model(tmp_path / "model")
    image_path = write_scene(tmp_path / "scene.png", seed=7, size_range=(220, 300))
    width, height = Image.open(image_path).size
    app = create_app(predictor(model_dir), ServeConfig(), str(model_dir))
    with background_server(app) as base:
        answers = {
            task: httpx.post(f"{base}/predict", params={"task": task}, content=image_path.read_bytes()).json()
            for task in ("semantic", "panoptic", "instance")
        }
        d = browser
        d.get(base)
        _wait(lambda: "6 classes" in d.find_element("id", "model-name").text, "the model description")
        _wait(lambda: len(d.find_elements("css selector", "#examples img")) == 3, "the example images")
        # The page starts on the task the model was made for (things and stuff: panoptic).
        assert httpx.get(f"{base}/models").json()["models"][0]["task"] == "panoptic"
        assert Select(d.find_element("id", "task")).first_selected_option.get_attribute("value") == "panoptic"
        Select(d.find_element("id", "task")).select_by_value("semantic")

        # Upload: the overlay and a legend naming the predicted classes.
        d.find_element("id", "file").send_keys(str(image_path))
        _wait(lambda: _status(d).startswith("semantic:"), "the semantic result")
        semantic = answers["semantic"]
        assert f"{len(semantic['segments'])} segment" in _status(d)
        assert _legend(d) == _expected_legend(semantic)
        size = d.execute_script("const c = document.getElementById('overlay-canvas'); return [c.width, c.height]")
        assert size == [width, height]

        # Hover over the largest region: its class, score and area.
        largest = max(semantic["segments"], key=lambda s: s["area"])
        mask = mask_utils.decode(largest["segmentation"]).astype(bool)
        x, y = _inner_pixel(mask)
        canvas = d.find_element("id", "overlay-canvas")
        box = canvas.rect
        scale = box["width"] / width
        dx, dy = int((x + 0.5) * scale - box["width"] / 2), int((y + 0.5) * scale - box["height"] / 2)
        ActionChains(d).move_to_element_with_offset(canvas, dx, dy).perform()
        tooltip = _wait(lambda: d.find_element("id", "tooltip").text, "the tooltip")
        assert tooltip.startswith(f"{largest['name']} · score 1.00 · {largest['area']:,} px"), tooltip
        # A new image (the mouse still over the old one's pixel): no tooltip of the old one stays.
        other = tmp_path / "other.png"
        shutil.copy(image_path, other)
        d.find_element("id", "file").send_keys(str(other))
        _wait(lambda: not d.find_element("id", "tooltip").is_displayed(), "the old tooltip to go")
        d.find_element("id", "file").send_keys(str(image_path))
        _wait(lambda: _status(d).startswith("semantic:"), "the semantic result again")

        # Opacity 1 paints the class colour; hiding the class shows the image's own pixel.
        d.execute_script(
            "const s = document.getElementById('opacity'); s.value = 1; s.dispatchEvent(new Event('input'))"
        )
        colors = {c["id"]: c["color"] for c in httpx.get(f"{base}/models").json()["models"][0]["classes"]}
        assert _pixel(d, x, y) == colors[largest["class_id"]]
        original = np.asarray(Image.open(image_path).convert("RGB"))[y, x].tolist()
        entry = f"#legend li[data-class-id='{largest['class_id']}']"
        d.find_element("css selector", entry).click()
        assert "off" in d.find_element("css selector", entry).get_attribute("class"), "the legend redraws it off"
        assert _pixel(d, x, y) == original

        # Downloads: the label PNG is the API's, at the input's size.
        label = _download(d, "label PNG", "scene_label.png")
        assert Image.open(label).size == (width, height)
        expected = httpx.post(f"{base}/predict", params={"task": "semantic", "png": "true"},
                              content=image_path.read_bytes()).json()["png"]  # fmt: skip
        assert label.read_bytes() == base64.b64decode(expected)
        overlay = _download(d, "overlay PNG", "scene_overlay.png")
        assert Image.open(overlay).size == (width, height)

        # Panoptic: legend and the panoptic PNG + JSON.
        Select(d.find_element("id", "task")).select_by_value("panoptic")
        _wait(lambda: _status(d).startswith("panoptic:"), "the panoptic result")
        assert _legend(d) == _expected_legend(answers["panoptic"])
        assert Image.open(_download(d, "panoptic PNG", "scene_panoptic.png")).size == (width, height)
        record = json.loads(_download(d, "panoptic JSON", "scene_panoptic.json").read_text())
        infos = record["annotations"][0]["segments_info"]
        assert [s["id"] for s in infos] == [s["id"] for s in answers["panoptic"]["segments"]]

        # Instance: the score slider's default (0.5) decides what the legend lists; the JSON has them all.
        Select(d.find_element("id", "task")).select_by_value("instance")
        _wait(lambda: _status(d).startswith("instance:"), "the instance result")
        shown = {"segments": [s for s in answers["instance"]["segments"] if s["score"] >= 0.5]}
        assert _legend(d) == _expected_legend(shown)
        records = json.loads(_download(d, "instances JSON", "scene_instances.json").read_text())
        assert [r["score"] for r in records] == [s["score"] for s in answers["instance"]["segments"]]

        # An example image, with no file at hand.
        Select(d.find_element("id", "task")).select_by_value("semantic")
        _wait(lambda: _status(d).startswith("semantic:"), "the semantic result again")
        d.find_element("css selector", "#examples img").click()
        example = Image.open(io.BytesIO(httpx.get(f"{base}/examples/example-11.png").content))
        _wait(lambda: f"in {example.width}x{example.height}" in _status(d), "the example's result")
        assert _legend(d)

        # A file the server cannot read: the message, and the page keeps working.
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"not an image")
        d.find_element("id", "file").send_keys(str(bad))
        _wait(lambda: "cannot show the image" in _status(d), "the browser's refusal")

        d.find_element("id", "file").send_keys(str(image_path))
        _wait(lambda: _status(d).startswith("semantic:") and f"in {width}x{height}" in _status(d), "a result again")
        shot = tmp_path / "page.png"
        d.save_screenshot(str(shot))
        if os.environ.get("MASKFORMER_SCREENSHOT"):
            shutil.copy(shot, os.environ["MASKFORMER_SCREENSHOT"])
    assert Image.open(shot).size[0] > 0
