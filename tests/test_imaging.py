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


# -- memory: large images are never kept at full size, and what decoding costs is counted -----------------------
def _large(width: int, height: int, fmt: str, **save) -> bytes:
    import io

    from PIL import ImageDraw

    img = Image.new("RGB", (width, height), (120, 130, 140))
    draw = ImageDraw.Draw(img)
    draw.ellipse([width // 10, height // 8, width * 8 // 10, height * 9 // 10], fill=(200, 60, 40))
    draw.rectangle([0, 0, width // 6, height // 6], fill=(0, 0, 255))  # top-left marker
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def test_a_7000px_jpeg_is_decoded_at_reduced_scale_and_counted_so():
    decoded = load_image(_large(7000, 7000, "JPEG", quality=80), max_side=800)
    assert decoded.rgb.shape == (800, 800, 3) and decoded.original_size == (7000, 7000)
    assert decoded.decoded_pixels <= 1600 * 1600  # DCT scaling: 875×875, never 49 Mpx
    # A progressive JPEG keeps whole-image coefficients, other formats decode at full size (WebP several times).
    assert load_image(_large(3000, 2000, "JPEG", progressive=True), max_side=800).decoded_pixels == 6_000_000
    assert load_image(_large(3000, 2000, "PNG"), max_side=800).decoded_pixels == 6_000_000
    assert load_image(_large(3000, 2000, "WEBP"), max_side=800).decoded_pixels == 24_000_000


DECODE_PEAK = """
import resource, sys
from artlens.imaging import load_image
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decoded = load_image(data, max_side=800)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, decoded.rgb.shape)
"""


def test_decoding_a_7000px_jpeg_stays_small_in_memory(tmp_path):
    """Peak memory of the decode in a fresh process: a full-size decode would add ≥ 147 MB (7000² RGB)."""
    import subprocess
    import sys

    path = tmp_path / "big.jpg"
    path.write_bytes(_large(7000, 7000, "JPEG", quality=80))
    out = subprocess.run([sys.executable, "-c", DECODE_PEAK, str(path)], capture_output=True, text=True, check=True)
    grew_mb = int(out.stdout.split()[0])
    assert grew_mb < 60, out.stdout


RSS_AFTER = """
import sys, threading
from artlens.imaging import load_image, release_memory
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) // 1024
data = open(sys.argv[1], "rb").read()
load_image(open(sys.argv[2], "rb").read(), max_side=800)  # a small one first: the decoder's one-time set-up
before = rss()
def decode_twice():
    for _ in range(2):
        load_image(data, max_side=800)
threads = [threading.Thread(target=decode_twice) for _ in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(rss() - before, release_memory())
"""


def test_memory_of_large_decodes_goes_back_to_the_system(tmp_path):
    """Three threads decoding 6000×5000 PNGs (≈ 120 MB each at full size), as concurrent requests do: afterwards
    the process is about as large as before (glibc would keep the freed memory in its per-thread arenas)."""
    import subprocess
    import sys

    big, small = tmp_path / "big.png", tmp_path / "small.png"
    big.write_bytes(_large(6000, 5000, "PNG"))
    small.write_bytes(_large(64, 48, "PNG"))
    out = subprocess.run([sys.executable, "-c", RSS_AFTER, str(big), str(small)], capture_output=True, text=True,
                         check=True)
    grew_mb, trimmed = out.stdout.split()
    if trimmed != "True":
        pytest.skip("this C library cannot hand freed memory back (no malloc_trim)")
    assert int(grew_mb) < 50, out.stdout


def test_scaling_a_large_image_before_rotating_it_gives_the_same_picture():
    """A large PNG is scaled down before EXIF rotation and colour conversion: same result as the other order."""
    import io

    exif = Image.Exif()
    exif[0x0112] = 6
    data = _large(4000, 3000, "PNG", exif=exif.tobytes())
    decoded = load_image(data, max_side=800)
    assert decoded.rgb.shape == (800, 600, 3) and decoded.original_size == (3000, 4000)
    full = Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_270).resize(
        (600, 800), Image.Resampling.BILINEAR, reducing_gap=2.0)
    assert np.abs(decoded.rgb.astype(int) - np.asarray(full, dtype=int)).mean() < 1.0
    assert tuple(decoded.rgb[10, -10]) == (0, 0, 255)  # the top-left marker, rotated to the top right


def test_decode_budget_refuses_decodes_beyond_it_unless_alone():
    from artlens.imaging import DecodeBudget, DecodeBusy

    budget = DecodeBudget(5_000_000)
    png = _large(2000, 2000, "PNG")  # 4 Mpx
    assert load_image(_large(3000, 2000, "PNG"), max_side=800, budget=budget).rgb.shape[1] == 800  # alone: decoded
    with budget.reserve(2_000_000):
        with pytest.raises(DecodeBusy, match="budget of 5000000"):
            load_image(png, max_side=800, budget=budget)
        assert load_image(jpeg_bytes((1600, 1200)), max_side=800, budget=budget).rgb.shape == (600, 800, 3)
    with pytest.raises(ImageError):
        load_image(png[: len(png) // 2], max_side=800, budget=budget)  # a failed decode gives its share back
    assert budget.in_flight == 0
    assert load_image(png, max_side=800, budget=budget).rgb.shape == (800, 800, 3)
