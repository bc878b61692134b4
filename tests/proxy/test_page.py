"""The pool's page in a real browser (headless Chromium) against a real pool: the workers live, photos in, boxes drawn.

A failing test leaves a screenshot of the page in test-artifacts/ (see conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import SHARED_MODELS
from graphs import TASK_MODELS, task_repository
from helpers import ServerProcess, encode, launcher, wait_until
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from visionpool.client import Client
from visionpool.client.draw import class_colour

pytestmark = pytest.mark.slow  # every test here starts processes

SSD, CLASSIFIER = "ssd-mobilenet-v2", "efficientnet-lite0"
TOKEN = "page-tests"
CAT_BOX = {"x": 9, "y": 0, "width": 399, "height": 297}


@pytest.fixture(scope="module")
def live_pool(model_repository: Path) -> Iterator[dict[str, ServerProcess]]:
    """A proxy and two workers, w1 and w2, on the real SSD detector and EfficientNet classifier."""
    started: list[ServerProcess] = []
    try:
        proxy = launcher(started, "proxy")("--registry-token", TOKEN)
        pool = {"proxy": proxy}
        for worker_id in ("w1", "w2"):
            pool[worker_id] = launcher(started, "worker")(
                "--model", SSD, CLASSIFIER, "--model-repository", str(model_repository), "--worker-id", worker_id,
                "--registry", "local", "--registry-url", proxy.url, "--registry-token", TOKEN,
            )  # fmt: skip
        wait_until(lambda: len(requests.get(proxy.url + "/workers", timeout=5).json()["workers"]) == 2)
        yield pool
    finally:
        for server in started:
            server.stop(signal.SIGKILL)
            server.log.close()


def wait(browser: WebDriver, condition, timeout: float = 20.0):  # noqa: ANN001
    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda _: condition())


def worker_rows(browser: WebDriver) -> dict[str, dict[str, str]]:
    """The workers table as it reads now (read in one go: the page redraws it every refresh)."""
    return {row["data"]["worker"]: row for row in table(browser, "workers")}


def table(browser: WebDriver, name: str) -> list[dict]:
    """A table's rows: each row's data attributes, and its cells' text by the cell's class (or position)."""
    return browser.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} tbody tr`)].map((row) => ({"
        "  data: {...row.dataset},"
        "  cells: [...row.cells].map((td) => td.innerText),"
        "  named: Object.fromEntries([...row.cells].filter((td) => td.className)"
        "    .map((td) => [td.className.split(' ').pop(), td.innerText])),"
        "}));",
        name,
    )


def open_page(browser: WebDriver, url: str, workers: int) -> dict[str, dict]:
    """Load the page and wait until it lists ``workers`` ready workers and the models to try."""
    browser.get(url + "/")
    wait(browser, lambda: [r["data"]["state"] for r in worker_rows(browser).values()] == ["ready"] * workers)
    wait(browser, lambda: len(Select(browser.find_element(By.ID, "model")).options) == 2)
    return worker_rows(browser)


def pick(browser: WebDriver, *files: Path, model: str = SSD, route: str | None = None) -> list[WebElement]:
    """Choose model and route, pick ``files`` in the file dialog; the result cards once every answer is in."""
    Select(browser.find_element(By.ID, "model")).select_by_value(model)
    if route:
        browser.find_element(By.CSS_SELECTOR, f"input[name=route][value={route}]").click()
    browser.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in files))
    return finished(browser, len(files))


def finished(browser: WebDriver, count: int) -> list[WebElement]:
    answered = "#results .result.done, #results .result.failed"
    wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, answered)) == count)
    return browser.find_elements(By.CSS_SELECTOR, "#results .result")


def answer_of(card: WebElement) -> dict:
    return json.loads(card.find_element(By.CSS_SELECTOR, "pre.json").get_attribute("textContent"))


def drawn(card: WebElement) -> list[dict[str, str]]:
    """The boxes drawn on a result's picture: label, class id and outline colour of each."""
    return [
        {
            "label": box.get_attribute("data-label"),
            "class_id": box.get_attribute("data-class-id"),
            "colour": box.find_element(By.TAG_NAME, "rect").get_attribute("stroke"),
        }
        for box in card.find_elements(By.CSS_SELECTOR, "svg.boxes g.box")
    ]


def console_errors(browser: WebDriver) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_pool_view_lists_every_worker_live(browser: WebDriver, live_pool, jpegs) -> None:
    proxy = live_pool["proxy"]
    rows = open_page(browser, proxy.url, 2)
    assert set(rows) == {"w1", "w2"}
    for worker_id, row in rows.items():
        texts = row["cells"]
        assert texts[1] == live_pool[worker_id].url
        assert texts[2] == f"{SSD} v1, {CLASSIFIER} v1"
        assert texts[3].startswith("openvino · cpu · ")  # engine, device, precision
    models = {row["data"]["model"]: row["cells"] for row in table(browser, "models")}
    assert models[SSD][2:4] == ["detection", "300×300"] and models[SSD][-1] == "2 of 2"
    size = "224×224" if SHARED_MODELS.is_dir() else "280×280"  # EfficientNet-Lite0, or the demo's Lite3 TFLite
    assert models[CLASSIFIER][2:4] == ["classification", size]

    # traffic the page has not seen, round-robin over both workers: it shows up without a reload
    with Client(proxy.url, model=SSD, mode="proxy") as client:
        for _ in range(10):
            client.predict(jpegs["chelsea"])

    def busy() -> bool:  # both workers show their share: "–" (no request yet) until then
        rows = worker_rows(browser).values()
        return all(r["named"]["rate"] not in ("–", "0.0") and r["named"]["p50"] != "–" for r in rows)

    wait(browser, busy)
    p50, p99 = (float(worker_rows(browser)["w1"]["named"][name]) for name in ("p50", "p99"))
    assert 0 < p50 <= p99 < 10_000
    assert "over the last" in browser.find_element(By.ID, "window").text
    assert console_errors(browser) == []  # no script error, nothing the Content-Security-Policy refused


def test_a_photo_through_the_proxy_is_drawn_with_every_box(browser: WebDriver, live_pool, photo_files) -> None:
    open_page(browser, live_pool["proxy"].url, 2)
    [card] = pick(browser, photo_files["chelsea"], route="proxy")
    answer = answer_of(card)
    boxes = drawn(card)
    assert [b["label"] for b in boxes] == [p["label"] for p in answer["predictions"]] and boxes[0]["label"] == "cat"
    for box in boxes:  # the same colour per class as `visionpool predict --draw`
        assert box["colour"] == "rgb({}, {}, {})".format(*class_colour(int(box["class_id"])))
    assert len(card.find_elements(By.CSS_SELECTOR, "svg.boxes g.tag")) == len(boxes)  # a label per box
    assert card.get_attribute("data-worker") in {"w1", "w2"} and "through the proxy" in card.text
    assert "inference" in card.find_element(By.CSS_SELECTOR, "table.timings").text

    # the cat's outline sits on the cat: its place on screen, scaled back to the photo's pixels
    picture = card.find_element(By.CSS_SELECTOR, ".picture img").rect
    outline = card.find_element(By.CSS_SELECTOR, "svg.boxes g.box rect").rect
    scale = answer["image"]["width"] / picture["width"]
    on_photo = [(outline["x"] - picture["x"]) * scale, (outline["y"] - picture["y"]) * scale, outline["width"] * scale]
    assert on_photo == pytest.approx([CAT_BOX["x"], CAT_BOX["y"], CAT_BOX["width"]], abs=12)


def test_photos_dropped_on_the_page_go_p2p_to_both_workers(browser: WebDriver, live_pool, photo_files) -> None:
    open_page(browser, live_pool["proxy"].url, 2)
    Select(browser.find_element(By.ID, "model")).select_by_value(SSD)
    browser.find_element(By.CSS_SELECTOR, "input[name=route][value=p2p]").click()
    names = ["chelsea", "coffee", "camera"]
    drop(browser, [photo_files[name] for name in names])
    cards = finished(browser, 3)
    assert [answer_of(card)["predictions"][0]["label"] for card in cards] == ["cat", "cup", "person"]
    assert {card.get_attribute("data-route") for card in cards} == {"p2p"}
    assert {card.get_attribute("data-worker") for card in cards} == {"w1", "w2"}  # round robin, straight to each
    assert [b["label"] for b in drawn(cards[0])][0] == "cat"
    assert console_errors(browser) == []
    keep_screenshot(browser)


def keep_screenshot(browser: WebDriver) -> None:
    """Save the page where VISIONPOOL_PAGE_SCREENSHOT says (the README's picture is made so), once both workers
    show the photos they served."""
    target = os.environ.get("VISIONPOOL_PAGE_SCREENSHOT")
    if target:
        wait(browser, lambda: all(row["named"]["p50"] != "–" for row in worker_rows(browser).values()))
        browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
        browser.save_screenshot(target)


def drop(browser: WebDriver, files: list[Path]) -> None:
    """Drag ``files`` onto the drop zone, as a person does from a file manager."""
    source = browser.execute_script(
        "const input = document.createElement('input'); input.type = 'file'; input.multiple = true;"
        "input.hidden = true; document.body.append(input); return input;"
    )
    source.send_keys("\n".join(str(f) for f in files))
    browser.execute_script(
        "const files = arguments[0].files, zone = document.getElementById('drop'), data = new DataTransfer();"
        "for (const file of files) data.items.add(file);"
        "for (const type of ['dragenter', 'dragover', 'drop'])"
        "  zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));"
        "arguments[0].remove();",
        source,
    )


def test_the_classifier_lists_its_top_classes_and_draws_no_box(browser: WebDriver, live_pool, photo_files) -> None:
    open_page(browser, live_pool["proxy"].url, 2)
    [card] = pick(browser, photo_files["coffee"], model=CLASSIFIER, route="proxy")
    found = [li.get_attribute("data-label") for li in card.find_elements(By.CSS_SELECTOR, "ol.found li")]
    assert found[0] == "espresso" and found == [p["label"] for p in answer_of(card)["predictions"]]
    assert drawn(card) == []


def test_a_bad_upload_shows_the_servers_own_message(browser: WebDriver, live_pool, photo_files, tmp_path) -> None:
    proxy = live_pool["proxy"]
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo at all")
    expected = requests.post(proxy.url + f"/models/{SSD}/predict", files={"image": notes.read_bytes()}, timeout=10)
    message = expected.json()["error"]["message"]
    open_page(browser, proxy.url, 2)
    bad, good = pick(browser, notes, photo_files["chelsea"], route="proxy")
    alert = bad.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert alert == f"400 invalid_image: {message}"
    assert "done" in good.get_attribute("class")  # one bad file spoils nothing else


def test_a_worker_serves_the_page_for_itself(browser: WebDriver, live_pool, photo_files) -> None:
    worker = live_pool["w1"]
    rows = open_page(browser, worker.url, 1)
    assert list(rows) == ["w1"]
    assert not browser.find_element(By.ID, "route").is_displayed()  # no proxy, no choice of route
    [card] = pick(browser, photo_files["chelsea"])
    assert drawn(card)[0]["label"] == "cat" and card.get_attribute("data-worker") == "w1"
    policy = requests.get(worker.url + "/", timeout=5).headers["Content-Security-Policy"]
    assert "connect-src 'self';" in policy


def test_a_stopped_worker_is_seen_leaving(browser: WebDriver, make_pool) -> None:
    pool = make_pool(2)
    browser.get(pool.proxy.url + "/")
    wait(browser, lambda: [r["data"]["state"] for r in worker_rows(browser).values()] == ["ready"] * 2)
    leaving, staying = pool.workers
    ids = {row["cells"][1]: worker_id for worker_id, row in worker_rows(browser).items()}
    leaving.stop()  # SIGTERM: it deregisters, drains and exits
    wait(browser, lambda: worker_rows(browser)[ids[leaving.url]]["data"]["state"] == "left")
    rows = worker_rows(browser)
    assert rows[ids[leaving.url]]["named"]["state"].startswith("left ")
    assert rows[ids[staying.url]]["data"]["state"] == "ready"
    assert list(rows)[-1] == ids[leaving.url]  # below the workers still registered


# ---- every task drawn: a worker's page on the per-task models of tests/graphs.py ----


@pytest.fixture
def task_page(browser: WebDriver, start_worker, tmp_path: Path) -> WebDriver:
    """The page of a worker serving a model of every task, its models listed."""
    root = task_repository(tmp_path / "models")
    worker = start_worker("--model", *TASK_MODELS, "--model-repository", str(root), "--registry", "none")
    browser.get(worker.url + "/")
    wait(browser, lambda: len(Select(browser.find_element(By.ID, "model")).options) == len(TASK_MODELS))
    return browser


def ask(browser: WebDriver, model: str, picture: Path, count: int):
    Select(browser.find_element(By.ID, "model")).select_by_value(model)
    browser.find_element(By.ID, "files").send_keys(str(picture))
    return finished(browser, count)[-1]  # the page keeps earlier answers above


def test_masks_keypoints_and_embeddings_are_drawn(task_page: WebDriver, tmp_path: Path) -> None:
    picture = tmp_path / "wide.png"
    picture.write_bytes(encode(np.full((640, 1280, 3), 90, np.uint8), "PNG"))
    card = ask(task_page, "seg", picture, 1)
    [mask] = card.find_elements(By.CSS_SELECTOR, "svg.boxes polygon.mask")
    xs = [float(point.split(",")[0]) for point in mask.get_attribute("points").split()]
    assert abs(min(xs) - 480) <= 6 and abs(max(xs) - 800) <= 6  # as the worker's polygons say (test_tasks.py)
    assert mask.get_attribute("fill") == "rgb({}, {}, {})".format(*class_colour(1))

    card = ask(task_page, "pose", picture, 2)
    dots = card.find_elements(By.CSS_SELECTOR, "svg.boxes g.pose circle.keypoint")
    assert len(dots) == 16  # 17 keypoints, the left ankle's score (0.3) under 0.5
    bones = card.find_elements(By.CSS_SELECTOR, "svg.boxes g.pose line.bone")
    assert len(bones) == 18  # COCO's 19 bones, less the one to the left ankle (15-13)

    card = ask(task_page, "encoder", picture, 3)
    assert card.find_element(By.CSS_SELECTOR, "p.embedding").text.startswith("Embedding: 3 values (norm 1.000)")


# ---- a pool with keys: the page asks for one, and sends the tickets p2p ----


def test_the_page_asks_for_a_key_and_uses_it(browser: WebDriver, start_proxy, start_worker, tmp_path: Path) -> None:
    from pools import secured_pool

    pool = secured_pool(start_proxy, start_worker, tmp_path, "--worker-id", "w1")
    proxy, key = pool.proxy, pool.key
    browser.get(proxy.url + "/")
    browser.execute_script("sessionStorage.clear()")  # no key from an earlier page of this origin
    browser.get(proxy.url + "/")
    wait(browser, lambda: browser.find_element(By.ID, "key-form").is_displayed())
    assert "API key" in browser.find_element(By.ID, "key-note").text
    browser.find_element(By.ID, "api-key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait(browser, lambda: list(worker_rows(browser)) == ["w1"])
    assert not browser.find_element(By.ID, "key-form").is_displayed()
    picture = tmp_path / "grey.png"
    picture.write_bytes(encode(np.full((32, 32, 3), 90, np.uint8), "PNG"))
    for count, route in ((1, "p2p"), (2, "proxy")):  # p2p: the worker takes the page's ticket
        browser.find_element(By.CSS_SELECTOR, f"input[name=route][value={route}]").click()
        browser.find_element(By.ID, "files").send_keys(str(picture))
        cards = finished(browser, count)
        assert "done" in cards[-1].get_attribute("class"), cards[-1].text
    browser.execute_script("sessionStorage.clear()")
