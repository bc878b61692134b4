"""``visionpool predict``, ``lookup`` and ``workers`` as a shell user runs them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from graphs import task_repository
from helpers import encode, wait_until
from PIL import Image

from visionpool.client.draw import class_colour

pytestmark = pytest.mark.slow  # every test here starts processes


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visionpool.client", *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("mode", ["--p2p", "--proxy"])
def test_a_folder_with_a_bad_file(make_pool, photo_files, tmp_path: Path, mode: str) -> None:
    pool = make_pool(1)
    folder = photo_files["chelsea"].parent
    (folder / "nested").mkdir()
    shutil.copy(photo_files["coffee"], folder / "nested" / "cup.JPG")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("not an image, not sent")
    out = tmp_path / "results.jsonl"
    result = cli("predict", str(folder), "--url", pool.url, mode, "--out", str(out))
    assert result.returncode == 1, result.stderr  # one image failed
    entries = {Path(e["path"]).name: e for e in lines(out)}
    assert set(entries) == {
        "chelsea.jpg",
        "coffee.jpg",
        "camera.jpg",
        "astronaut.jpg",
        "rocket.jpg",
        "cup.JPG",
        "broken.png",
    }
    assert entries["broken.png"]["error"]["code"] == "invalid_image"
    assert entries["chelsea.jpg"]["predictions"][0]["label"] == "cat"
    assert entries["cup.JPG"]["predictions"][0]["label"] == "cup"
    assert "7 images" in result.stderr and "1 failed" in result.stderr and "cat 1" in result.stderr


def test_paths_from_stdin_and_an_all_good_exit(make_pool, photo_files, tmp_path: Path) -> None:
    pool = make_pool(1)
    listed = f"{photo_files['chelsea']}\n{photo_files['camera']}\n"
    out = tmp_path / "r.jsonl"
    result = cli("predict", "-", "--url", pool.url, "--out", str(out), "--quiet", stdin=listed)
    assert result.returncode == 0 and result.stderr == ""
    assert [e["predictions"][0]["label"] for e in lines(out)] in (["cat", "person"], ["person", "cat"])


def test_an_interrupted_run_resumes_with_every_image_exactly_once(make_pool, tmp_path: Path) -> None:
    pool = make_pool(1, model="sleepy", seconds=0.05)
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(60):
        (folder / f"{i:03}.png").write_bytes(encode(np.full((8, 8, 3), i, np.uint8), "PNG"))
    out = tmp_path / "results.jsonl"
    command = [
        sys.executable,
        "-m",
        "visionpool.client",
        "predict",
        str(folder),
        "--url",
        pool.url,
        "--out",
        str(out),
        "--concurrency",
        "1",
        "--quiet",
    ]
    first = subprocess.Popen(command)
    wait_until(lambda: out.exists() and out.read_text().count("\n") >= 15, timeout=30)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = out.read_text().count("\n")
    assert 15 <= done_before < 60
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    paths = [e["path"] for e in lines(out)]
    assert sorted(paths) == sorted(str(p) for p in folder.iterdir()) and len(set(paths)) == 60


def test_drawn_boxes_sit_where_the_json_says(make_pool, photo_files, tmp_path: Path) -> None:
    pool = make_pool(1)
    out, drawn = tmp_path / "r.jsonl", tmp_path / "drawn"
    assert (
        cli(
            "predict", str(photo_files["chelsea"]), "--url", pool.url, "--out", str(out), "--draw", str(drawn)
        ).returncode
        == 0
    )
    box = lines(out)[0]["predictions"][0]["box"]
    copy = next(drawn.rglob("chelsea.jpg"))
    pixels = np.asarray(Image.open(copy).convert("RGB"), dtype=np.int16)
    colour = np.array(class_colour(17))
    left_edge = pixels[box["y"] + 30 : box["y"] + box["height"] - 5, box["x"] + 1]  # the middle of a 3-pixel line
    right_edge = pixels[box["y"] + 30 : box["y"] + box["height"] - 5, box["x"] + box["width"] - 2]
    inside = pixels[box["y"] + 30 : box["y"] + box["height"] - 5, box["x"] + 20]
    assert np.abs(left_edge - colour).mean() < 30 and np.abs(right_edge - colour).mean() < 30
    assert np.abs(inside - colour).mean() > 60  # the photo is untouched inside the box
    assert Image.open(copy).size == (451, 300)


def test_lookup_and_workers_commands(make_pool) -> None:
    pool = make_pool(2)
    found = json.loads(cli("lookup", "--url", pool.url).stdout)
    assert found["url"] in {w.url for w in pool.workers}
    listed = json.loads(cli("workers", "--url", pool.url).stdout)["workers"]
    assert {w["url"] for w in listed} == {w.url for w in pool.workers}
    down = cli("workers", "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "connection_failed" in down.stderr


def test_url_comes_from_the_environment(make_pool, photo_files) -> None:
    pool = make_pool(1)
    env = {**os.environ, "VISIONPOOL_URL": pool.url}
    result = subprocess.run(
        [sys.executable, "-m", "visionpool.client", "lookup"], capture_output=True, text=True, env=env, timeout=60
    )
    assert json.loads(result.stdout)["url"] == pool.workers[0].url


def test_failed_images_are_tried_again_on_the_next_run(make_pool, photo_files, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    folder = str(photo_files["chelsea"].parent)
    down = cli("predict", folder, "--url", "http://127.0.0.1:9", "--out", str(out), "--retries", "0")
    assert down.returncode == 1 and all("error" in e for e in lines(out))
    pool = make_pool(1)
    again = cli("predict", folder, "--url", pool.url, "--out", str(out))
    assert again.returncode == 0, again.stderr
    last = {e["path"]: e for e in lines(out)}  # the last line for a path is its outcome
    assert len(last) == 5 and all("predictions" in e for e in last.values())
    assert cli("predict", folder, "--url", pool.url, "--out", str(out)).stderr.count("5 already done") == 1


def test_drawn_copies_never_overwrite_each_other(make_pool, photo_files, tmp_path: Path) -> None:
    pool = make_pool(1)
    for side in ("left", "right"):
        (tmp_path / side).mkdir()
        shutil.copy(photo_files["chelsea"], tmp_path / side / "same.jpg")
    drawn = tmp_path / "drawn"
    assert (
        cli(
            "predict", str(tmp_path / "left"), str(tmp_path / "right"), "--url", pool.url, "--draw", str(drawn)
        ).returncode
        == 0
    )
    assert len(list(drawn.rglob("same.jpg"))) == 2


def test_a_url_without_a_scheme_is_a_clean_error() -> None:
    for command in (["predict", "x.jpg"], ["lookup"], ["workers"]):
        result = cli(*command, "--url", "localhost:8080")
        assert result.returncode == 2 and "url must look like" in result.stderr and "Traceback" not in result.stderr


def test_segmentation_and_pose_in_json_lines_and_drawn(start_worker, tmp_path: Path) -> None:
    root = task_repository(tmp_path / "models")
    worker = start_worker("--model", "seg", "pose", "--model-repository", str(root), "--registry", "none")
    picture = tmp_path / "wide.png"
    picture.write_bytes(encode(np.full((640, 1280, 3), 90, np.uint8), "PNG"))
    for model in ("seg", "pose"):
        out, drawn = tmp_path / f"{model}.jsonl", tmp_path / f"drawn-{model}"
        command = ["predict", str(picture), "--url", worker.url, "--proxy", "--model", model, "--out", str(out)]
        command += ["--draw", str(drawn)]
        assert cli(*command).returncode == 0
        [found] = lines(out)[0]["predictions"]
        pixels = np.asarray(Image.open(next(drawn.rglob("wide.png"))).convert("RGB"), dtype=np.int16)
        if model == "seg":
            xs = found["mask"]["polygons"][0][0::2]
            assert abs(min(xs) - 480) <= 6 and "keypoints" not in found
            assert np.abs(pixels[320, 640] - 90).max() > 20  # filled inside the mask
            assert (pixels[320, 460] == 90).all()  # inside the box, outside the mask: untouched
        else:
            assert found["keypoints"][0] == [640.0, 80.0, 0.9] and "mask" not in found
            assert (pixels[80, 640] == 255).all()  # the nose's dot
