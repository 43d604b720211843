"""``maskformer serve``'s HTTP API on a real server on a loopback port: every endpoint, answers equal to
``maskformer predict``'s files byte for byte, batching that changes no result, each kind of bad input
answered with its 4xx while the server keeps serving, queue and time limits, the token, and SIGTERM."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from maskformer.cli.main import main
from maskformer.model import MaskFormerConfig
from maskformer.serve import ServeConfig, background_server, create_app
from tests.helpers import FAMILIES
from tests.serving import predictor, save_serving_model, write_scene

TASKS = ("semantic", "panoptic", "instance")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_serving_model(tmp_path_factory.mktemp("serve_model"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    return [write_scene(folder / f"scene{i}.png", seed=100 + i) for i in range(4)]


@pytest.fixture(scope="module")
def url(model_dir):
    app = create_app(predictor(model_dir), ServeConfig(max_batch=4), str(model_dir))
    with background_server(app) as base:
        yield base


def _post(base: str, data: bytes, params: dict | None = None, multipart: bool = True, **kw) -> httpx.Response:
    if multipart:
        return httpx.post(f"{base}/predict", params=params, files={"image": ("x.png", data, "image/png")}, **kw)
    return httpx.post(f"{base}/predict", params=params, content=data, **kw)


def _healthy(base: str) -> None:
    assert httpx.get(f"{base}/health").json()["status"] == "ok"


def test_endpoints(url, model_dir):
    health = httpx.get(f"{url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    (model,) = httpx.get(f"{url}/models").json()["models"]
    assert model["family"] == "maskformer" and model["num_classes"] == 6 and model["source"] == str(model_dir)
    assert [c["name"] for c in model["classes"]][:3] == ["circle", "square", "triangle"]
    assert [c["isthing"] for c in model["classes"]] == [True] * 3 + [False] * 3
    assert "licence" in model and model["tasks"] == list(TASKS)
    examples = httpx.get(f"{url}/examples").json()
    assert len(examples) == 3
    image = httpx.get(f"{url}{examples[0]['url']}")
    assert image.headers["content-type"] == "image/png" and Image.open(__import__("io").BytesIO(image.content)).size
    assert httpx.get(f"{url}/examples/nothing.png").status_code == 404
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "/page/app.js" in page.text
    assert httpx.get(f"{url}/page/app.js").status_code == 200
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/predict", "/models", "/health"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert httpx.get(f"{url}/docs").status_code == 200


@pytest.fixture(scope="module", params=FAMILIES)
def family_server(request, tmp_path_factory):
    """(URL, model folder) of a server of each family."""
    folder = save_serving_model(tmp_path_factory.mktemp(f"serve_{request.param}"), request.param)
    with background_server(create_app(predictor(folder), ServeConfig(), str(folder))) as base:
        yield base, folder


@pytest.mark.parametrize("task", TASKS)
def test_answers_equal_predict_files(family_server, scenes, tmp_path, task):
    """For every family, the API's PNG is the file ``maskformer predict`` writes, byte for byte; its
    segments hold the values of predict's JSON (and the RLE masks decode to the PNG's segments)."""
    url, model_dir = family_server
    family = httpx.get(f"{url}/models").json()["models"][0]["family"]
    assert model_dir.name.startswith(f"serve_{family}")
    image = scenes[0]
    threshold = ["--score-threshold", "0.3"] if task != "semantic" else []
    assert main(["predict", str(image), "--model", str(model_dir), "--task", task, "--out", str(tmp_path), "--quiet",
                 *threshold]) == 0  # fmt: skip
    params = {"task": task, **({"png": "true"} if task != "instance" else {})}
    if threshold:
        params["score_threshold"] = "0.3"
    answer = _post(url, image.read_bytes(), params)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    raw = _post(url, image.read_bytes(), params, multipart=False)
    assert raw.json() == data, "a raw body and a multipart upload give the same answer"
    w, h = Image.open(image).size
    assert (data["width"], data["height"]) == (w, h)
    segments = data["segments"]
    assert segments, "the model predicts something on the scene"
    from pycocotools import mask as mask_utils

    if task == "semantic":
        png = base64.b64decode(data["png"])
        assert png == (tmp_path / "labels" / "scene0.png").read_bytes()
        labels = np.asarray(Image.open(tmp_path / "labels" / "scene0.png"))
        assert [s["class_id"] for s in segments] == np.unique(labels).tolist()
        for s in segments:
            assert np.array_equal(mask_utils.decode(s["segmentation"]).astype(bool), labels == s["class_id"])
            assert s["area"] == (labels == s["class_id"]).sum() and s["score"] == 1.0
    elif task == "panoptic":
        png = base64.b64decode(data["png"])
        assert png == (tmp_path / "panoptic" / "scene0.png").read_bytes()
        (record,) = json.loads((tmp_path / "panoptic.json").read_text())["annotations"]
        keys = ("id", "category_id", "score", "area", "bbox")
        assert [{k: s[k] for k in keys} for s in segments] == [{k: r[k] for k in keys} for r in record["segments_info"]]
        assert [int(s["isthing"]) for s in segments] == [r["isthing"] for r in record["segments_info"]]
    else:
        assert "png" not in data
        records = json.loads((tmp_path / "instances.json").read_text())
        keys = ("category_id", "score", "area", "bbox", "segmentation")
        assert [{k: s[k] for k in keys} for s in segments] == [{k: r[k] for k in keys} for r in records]
    names = {c["id"]: c["name"] for c in httpx.get(f"{url}/models").json()["models"][0]["classes"]}
    assert all(s["name"] == names[s["class_id"]] for s in segments)


def test_requests_sent_together_are_batched_and_equal_alone(model_dir, scenes):
    """Twelve requests at once (four images of different sizes, three tasks) through a server batching up
    to 4: fewer forwards than requests, and every answer equals that image's answer sent alone."""
    app = create_app(predictor(model_dir), ServeConfig(max_batch=4, batch_wait_ms=50), str(model_dir))
    jobs = [(image.read_bytes(), task) for image in scenes for task in TASKS]
    with background_server(app) as base:
        alone = [_post(base, data, {"task": task}).json() for data, task in jobs]
        before = httpx.get(f"{base}/health").json()["batches"]
        with ThreadPoolExecutor(len(jobs)) as pool:
            together = list(pool.map(lambda job: _post(base, job[0], {"task": job[1]}, timeout=60), jobs))
        batches = httpx.get(f"{base}/health").json()["batches"] - before
    assert [r.status_code for r in together] == [200] * len(jobs)
    assert [r.json() for r in together] == alone
    assert batches < len(jobs), f"{len(jobs)} requests sent together ran as {batches} batches"


def _truncated_png(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


def test_bad_input_gets_a_one_line_4xx_and_the_server_keeps_serving(url, scenes, monkeypatch):
    good = scenes[1].read_bytes()
    cases = [
        ("not an image", _post(url, b"hello, this is text"), 400, "cannot read image"),
        ("not an image (raw)", _post(url, b"%PDF-1.4 ...", multipart=False), 400, "the request body: cannot read"),
        ("truncated", _post(url, _truncated_png(scenes[1])), 400, "x.png: cannot read image"),
        ("zero bytes", _post(url, b""), 400, "x.png: empty (0 bytes)"),
        ("zero bytes (raw)", _post(url, b"", multipart=False), 400, "empty (0 bytes)"),
        ("wrong task", _post(url, good, {"task": "depth"}), 422, "task: Input should be 'semantic', 'panoptic'"),
        ("threshold", _post(url, good, {"task": "panoptic", "score_threshold": "1.5"}), 422, "score_threshold"),
        ("threshold text", _post(url, good, {"overlap_threshold": "high"}), 422, "overlap_threshold"),
        ("instance png", _post(url, good, {"task": "instance", "png": "true"}), 422, "no PNG"),
        ("no file", httpx.post(f"{url}/predict", files={"other": ("a.txt", b"x")}, data={"a": "b"}), 400, None),
        ("bad multipart", httpx.post(f"{url}/predict", content=b"--x\r\nbroken",
                                     headers={"content-type": "multipart/form-data; boundary=x"}), 400, None),
    ]  # fmt: skip
    monkeypatch.setenv("MASKFORMER_MAX_IMAGE_PIXELS", "1000")
    cases.append(("too many pixels", _post(url, good), 413, "exceeds the limit of 1,000"))
    monkeypatch.delenv("MASKFORMER_MAX_IMAGE_PIXELS")
    for name, response, status, words in cases:
        assert response.status_code == status, (name, response.status_code, response.text)
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and detail, name
        assert words is None or words in detail, (name, detail)
        assert "object at 0x" not in detail, (name, detail)  # Pillow's text names its file object
        _healthy(url)
    assert _post(url, good).status_code == 200


def test_request_size_limit(model_dir, scenes):
    app = create_app(predictor(model_dir), ServeConfig(max_request_mb=0.01), str(model_dir))
    with background_server(app) as base:
        big = scenes[0].read_bytes() + b"\0" * 20_000
        for response in (_post(base, big), _post(base, big, multipart=False)):
            assert response.status_code == 413 and "larger than the limit of 10,485 bytes" in response.json()["detail"]

        def chunks():  # no Content-Length: the limit is found while reading
            yield big

        assert httpx.post(f"{base}/predict", content=chunks()).status_code == 413
        _healthy(base)


def _slowed(pred, seconds: float):
    """``pred`` whose every batch takes ``seconds`` longer."""
    original = pred.predict_loaded

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return original(*args, **kwargs)

    pred.predict_loaded = slow
    return pred


def test_full_queue_answers_503_with_retry_after_and_drops_nothing_it_accepted(model_dir, scenes):
    pred = _slowed(predictor(model_dir), 0.3)
    app = create_app(pred, ServeConfig(max_batch=1, max_queue=2, batch_wait_ms=0), str(model_dir))
    data = scenes[2].read_bytes()
    with background_server(app) as base:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: _post(base, data, timeout=60), range(8)))
        codes = sorted(r.status_code for r in answers)
        assert set(codes) == {200, 503} and codes.count(200) >= 3, codes
        for r in answers:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1" and "busy" in r.json()["detail"]
            else:
                assert r.json()["segments"]
        _healthy(base)


def test_request_time_limit_answers_504(model_dir, scenes):
    pred = _slowed(predictor(model_dir), 1.0)
    app = create_app(pred, ServeConfig(timeout_s=0.3), str(model_dir))
    with background_server(app) as base:
        response = _post(base, scenes[0].read_bytes())
        assert response.status_code == 504 and "0.3 s" in response.json()["detail"]
        _healthy(base)


def test_beyond_loopback_needs_a_token(model_dir, scenes):
    with pytest.raises(ValueError, match="--host 0.0.0.0 lets other machines call the server: give --token"):
        ServeConfig(host="0.0.0.0")
    assert main(["serve", "--model", str(model_dir), "--host", "0.0.0.0"]) == 2
    app = create_app(predictor(model_dir), ServeConfig(host="0.0.0.0", token="s3cret"), str(model_dir))
    data = scenes[0].read_bytes()
    with background_server(app, host="0.0.0.0") as base:
        base = base.replace("0.0.0.0", "127.0.0.1")
        for headers, status in [({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": "s3cret"}, 401),
                                ({"Authorization": "Bearer s3cret"}, 200)]:  # fmt: skip
            assert _post(base, data, headers=headers).status_code == status, headers
            assert httpx.get(f"{base}/models", headers=headers).status_code == status, headers
        refused = _post(base, data)
        assert refused.headers["www-authenticate"] == "Bearer" and "no token" in refused.json()["detail"]
        _healthy(base)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_answers_the_requests_in_flight_then_exits(model_dir, scenes, tmp_path):
    """``maskformer serve`` as users start it: SIGTERM while requests wait and run, each of them still
    gets its answer, and the process exits 0."""
    # A larger test size makes each answer take a while, so that all six requests are in before SIGTERM.
    slow_model = tmp_path / "model"
    shutil.copytree(model_dir, slow_model)
    config = MaskFormerConfig.from_yaml(slow_model / "config.yaml")
    config.inference = dataclasses.replace(config.inference, test_shortest_edge=640, test_max_size=1024)
    config.to_yaml(slow_model / "config.yaml")
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "maskformer.cli.main", "serve", "--model", str(slow_model), "--port", str(port),
         "--max-batch", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        data = scenes[3].read_bytes()
        answers: list = []

        def send() -> None:
            try:
                answers.append(_post(base, data, timeout=60).status_code)
            except httpx.HTTPError as err:
                answers.append(repr(err))

        senders = [threading.Thread(target=send) for _ in range(6)]
        for t in senders:
            t.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats = httpx.get(f"{base}/health").json()
            if stats["queued"] + stats["running"] == 6:
                break
        assert stats["queued"] + stats["running"] == 6, stats
        proc.send_signal(signal.SIGTERM)
        for t in senders:
            t.join()
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert answers == [200] * 6, text
    assert code == 0, text
    assert "Shutting down" in text and text.rstrip().endswith("stopped"), text


def test_readme_client_example_runs(url, scenes, capsys):
    """README's Python client, as written, against a running server (its URL and file swapped in)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    code = re.search(r"<!-- serve-client-example -->\s*```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace("http://127.0.0.1:8000", url).replace('"street.jpg"', repr(str(scenes[0])))
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    answer = _post(url, scenes[0].read_bytes(), {"task": "panoptic", "score_threshold": 0.5}).json()
    assert lines == [f"{s['name']} {round(s['score'], 2)} {s['area']}" for s in answer["segments"]] and lines
