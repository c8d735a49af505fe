"""Image decoding: every odd or malformed input either decodes correctly or fails with a named, clear error."""

import numpy as np
import pytest
from PIL import Image

from artlens.errors import ImageError
from artlens.imaging import load_image

from .badimages import BAD_INPUTS, huge_exif_jpeg, jpeg_bytes, png_bytes, rotated_jpeg


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_clear_error_naming_the_input(case):
    data, message = BAD_INPUTS[case]
    with pytest.raises(ImageError) as err:
        load_image(data, name=f"visitor-{case}.jpg")
    assert f"visitor-{case}.jpg" in str(err.value)
    assert message in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.jpg: file not found"):
        load_image(tmp_path / "nope.jpg")


def test_huge_exif_still_decodes():
    assert load_image(huge_exif_jpeg()).rgb.shape == (48, 64, 3)


def test_exif_orientation_applied_once():
    decoded = load_image(rotated_jpeg(6))
    assert decoded.rgb.shape == (40, 20, 3)  # 40×20 stored, rotated 90° for display
    assert decoded.original_size == (20, 40)


def test_cmyk_jpeg_becomes_rgb():
    decoded = load_image(jpeg_bytes(mode="CMYK"))
    assert decoded.rgb.shape == (48, 64, 3) and decoded.rgb.dtype == np.uint8


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "I;16"])
def test_other_modes_become_rgb(mode):
    if mode == "I;16":
        img = Image.fromarray(np.full((10, 12), 40000, dtype=np.uint16))
    else:
        img = Image.new("RGBA", (12, 10), (10, 200, 30, 0)).convert(mode)
    rgb = load_image(png_bytes(img)).rgb
    assert rgb.shape == (10, 12, 3) and rgb.dtype == np.uint8
    if mode == "I;16":
        assert 150 < rgb[0, 0, 0] < 160  # 40000/65535 of full scale, not clipped to 255
    if mode == "RGBA":
        assert (rgb == 255).all()  # fully transparent composites onto white


def test_max_side_reduces_large_jpeg():
    decoded = load_image(jpeg_bytes((1600, 1200)), max_side=800)
    assert max(decoded.rgb.shape[:2]) == 800
    assert decoded.original_size == (1600, 1200)


def test_heic_from_iphones_decodes():
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(buf, "HEIF")
    rgb = load_image(buf.getvalue(), name="IMG_0001.HEIC").rgb
    assert rgb.shape == (48, 64, 3) and abs(int(rgb.mean()) - 120) < 6
