"""From pixels to model input, in every mode, and boxes back to the picture's pixels."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from visionpool.worker.preprocess import LETTERBOX_FILL, Frame, preprocess
from visionpool.worker.repository import InputSpec


def image(width: int, height: int, rgb: tuple[int, int, int] = (10, 100, 200)) -> np.ndarray:
    return np.tile(np.asarray(rgb, np.uint8), (height, width, 1))


@pytest.mark.parametrize(
    ("layout", "shape"), [pytest.param("NCHW", (3, 4, 6), id="nchw"), pytest.param("NHWC", (4, 6, 3), id="nhwc")]
)
def test_layouts(layout: str, shape: tuple[int, int, int]) -> None:
    tensor, _ = preprocess(image(12, 8), InputSpec(width=6, height=4, layout=layout))
    assert tensor.shape == shape and tensor.flags["C_CONTIGUOUS"]


def test_nchw_puts_each_channel_in_its_plane() -> None:
    tensor, _ = preprocess(image(4, 4), InputSpec(width=2, height=2, layout="NCHW"))
    assert [float(tensor[c].mean()) for c in range(3)] == [10.0, 100.0, 200.0]


@pytest.mark.parametrize(
    ("color", "order"), [pytest.param("RGB", [10, 100, 200], id="rgb"), pytest.param("BGR", [200, 100, 10], id="bgr")]
)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_colour_order(color: str, order: list[int], layout: str) -> None:
    tensor, _ = preprocess(image(4, 4), InputSpec(width=2, height=2, layout=layout, color=color, dtype="uint8"))
    assert tensor.flags["C_CONTIGUOUS"]
    assert (tensor[:, 0, 0] if layout == "NCHW" else tensor[0, 0]).tolist() == order


def test_uint8_input_is_the_pixels_untouched() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    spec = InputSpec(width=8, height=8, layout="NHWC", dtype="uint8", mean=(50, 50, 50), std=(9, 9, 9))
    tensor, _ = preprocess(pixels, spec)
    assert tensor.dtype == np.uint8 and np.array_equal(tensor, pixels)  # no resize, no scaling


def test_float32_input_is_scaled_per_channel() -> None:
    spec = InputSpec(width=2, height=2, layout="NHWC", mean=(10, 20, 30), std=(2, 4, 5))
    tensor, _ = preprocess(image(4, 4), spec)
    assert tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[0, 0], [(10 - 10) / 2, (100 - 20) / 4, (200 - 30) / 5])


@pytest.mark.parametrize(
    ("mean", "std"),
    [
        pytest.param((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), id="imagenet-per-channel"),
        pytest.param((127.0,) * 3, (128.0,) * 3, id="one-for-all"),
        pytest.param((0.0,) * 3, (255.0,) * 3, id="scale-only"),
        pytest.param((0.0,) * 3, (1.0,) * 3, id="none"),
    ],
)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("color", ["RGB", "BGR"])
@pytest.mark.parametrize("crop", [False, True], ids=["whole", "crop"])
def test_every_normalisation_gives_the_textbook_values(mean, std, layout: str, color: str, crop: bool) -> None:
    """Of a whole picture, and of a crop's centre: a window into a wider picture (rows further apart than its
    width), which comes out the same as a picture of its own."""
    pixels = np.random.default_rng(1).integers(0, 256, (24, 40 if crop else 24, 3), dtype=np.uint8)
    spec = InputSpec(width=24, height=24, layout=layout, color=color, mean=mean, std=std,
                     resize="crop" if crop else "stretch", resize_shorter=24 if crop else None)  # fmt: skip
    tensor, _ = preprocess(pixels, spec)
    shown = pixels[:, 8:32] if crop else pixels
    ordered = shown[:, :, ::-1] if color == "BGR" else shown
    expected = (ordered.astype(np.float32) - np.float32(mean)) * (1 / np.float32(std))
    expected = expected.transpose(2, 0, 1) if layout == "NCHW" else expected
    assert tensor.dtype == np.float32 and tensor.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(tensor, expected, rtol=1e-6, atol=1e-6)


def test_ssd_scaling_maps_0_255_to_minus_1_plus_1() -> None:
    spec = InputSpec(width=2, height=1, layout="NHWC", mean=(127.5,) * 3, std=(127.5,) * 3)
    pixels = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)
    tensor, _ = preprocess(pixels, spec)
    np.testing.assert_allclose(tensor[0, :, 0], [-1.0, 1.0])


def test_stretch_fills_the_input_and_maps_boxes_straight_back() -> None:
    tensor, frame = preprocess(image(200, 100), InputSpec(width=50, height=50, layout="NHWC", dtype="uint8"))
    assert tensor.shape == (50, 50, 3) and frame == Frame()
    assert frame.to_pixels((0.25, 0.5, 0.75, 1.0), 200, 100) == {"x": 50, "y": 50, "width": 100, "height": 50}


def test_letterbox_keeps_the_aspect_and_pads() -> None:
    wide = image(200, 100)
    tensor, frame = preprocess(wide, InputSpec(width=100, height=100, layout="NHWC", dtype="uint8", resize="letterbox"))
    assert (tensor[:25] == LETTERBOX_FILL).all() and (tensor[75:] == LETTERBOX_FILL).all()
    assert (tensor[25:75] == wide[0, 0]).all()
    assert frame == Frame(0.0, 0.25, 1.0, 0.5)
    # the picture's full extent inside the input maps back to the whole picture
    assert frame.to_pixels((0.0, 0.25, 1.0, 0.75), 200, 100) == {"x": 0, "y": 0, "width": 200, "height": 100}


def test_crop_resizes_the_short_side_then_takes_the_centre() -> None:
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, 100:] = 255  # the right half is white
    spec = InputSpec(width=100, height=100, layout="NHWC", dtype="uint8", resize="crop", resize_shorter=120)
    tensor, frame = preprocess(pixels, spec)
    # 200x100 -> 240x120, then the centre 100x100: columns 70..170 and rows 10..110 of the resized image
    assert tensor.shape == (100, 100, 3)
    assert tensor[:, :45].max() == 0 and tensor[:, 55:].min() == 255
    assert frame == Frame(-0.7, -0.1, 2.4, 1.2)
    # the whole input is the picture's centre: x from 200 * 70/240 = 58.3 to 200 * 170/240 = 141.7
    assert frame.to_pixels((0.0, 0.0, 1.0, 1.0), 200, 100) == {"x": 58, "y": 8, "width": 84, "height": 84}


@pytest.mark.parametrize("width", [16_384, 4_096])
def test_a_long_strip_is_cropped_without_scaling_all_of_it(width: int) -> None:
    """A 16384x1 JPEG is 16,384 pixels (a thumbnail's count), but scaling its short side to 256 would make a
    4-million-pixel-long picture (3 GB) for the middle 224x224 the crop keeps: only that middle is scaled."""
    height = 16_384 // width
    ramp = np.linspace(0, 255, width, dtype=np.float64)
    pixels = np.repeat(np.repeat(ramp.astype(np.uint8)[None, :, None], height, axis=0), 3, axis=2)
    spec = InputSpec(width=224, height=224, layout="NHWC", dtype="uint8", resize="crop", resize_shorter=256)
    tracemalloc.start()
    try:
        tensor, frame = preprocess(pixels, spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert tensor.shape == (224, 224, 3) and peak < 5_000_000
    # the picture's middle, as the whole picture scaled then cropped shows it: the ramp's middle, nearly flat
    shown = frame.to_pixels((0.0, 0.0, 1.0, 1.0), width, height)
    assert abs(shown["x"] + shown["width"] / 2 - width / 2) <= 1 and shown["width"] <= 1 + 224 * height / 256
    middle = ramp[shown["x"] : shown["x"] + max(shown["width"], 1)].mean()
    assert np.abs(tensor.astype(np.float64) - middle).max() <= 2


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "area"])
def test_every_interpolation_keeps_a_flat_colour(interpolation: str) -> None:
    spec = InputSpec(width=7, height=5, layout="NHWC", dtype="uint8", interpolation=interpolation)
    tensor, _ = preprocess(image(64, 48), spec)
    assert (tensor == np.asarray((10, 100, 200), np.uint8)).all()


def test_nearest_interpolation_keeps_pixel_values_exact() -> None:
    checker = (np.indices((4, 4)).sum(axis=0) % 2 * 255).astype(np.uint8)
    pixels = np.repeat(checker[:, :, None], 3, axis=2)
    tensor, _ = preprocess(pixels, InputSpec(width=8, height=8, layout="NHWC", dtype="uint8", interpolation="nearest"))
    assert set(np.unique(tensor).tolist()) == {0, 255}


def test_boxes_are_clipped_to_the_picture() -> None:
    assert Frame().to_pixels((-0.5, -0.5, 1.5, 0.5), 100, 40) == {"x": 0, "y": 0, "width": 100, "height": 20}
    assert Frame().to_pixels((0.9, 0.9, 0.8, 0.8), 100, 40) == {"x": 90, "y": 36, "width": 0, "height": 0}
