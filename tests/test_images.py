import numpy as np
import pytest
from PIL import Image

from captioner import ImageLimits, InvalidImage, load_image
from helpers import encode, photo


def rgb_at(image, xy):
    return image.convert("RGB").getpixel(xy)


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    out = load_image(encode(image))
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (255, 0, 0)


def test_la_and_palette_transparency_go_on_white():
    la = Image.new("LA", (3, 3), (0, 0))
    assert load_image(encode(la)).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (3, 3), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert load_image(encode(palette, transparency=0)).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_greyscale_is_rescaled_not_clipped():
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    out = load_image(encode(Image.fromarray(values)))
    greys = [out.getpixel((x, 0))[0] for x in range(3)]
    assert greys == [0, 128, 255]


def test_float_image_in_unit_range_is_scaled():
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    out = load_image(Image.fromarray(values, mode="F"))
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_array_input_is_scaled():
    out = load_image(np.full((2, 2, 3), 0.5, dtype=np.float32))
    assert out.getpixel((0, 0)) == (128, 128, 128)


def test_cmyk_is_converted():
    out = load_image(encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"))
    red, green, blue = out.getpixel((1, 1))
    assert out.mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    red, _, blue = load_image(data).getpixel((4, 4))
    assert red > 200 and blue < 50


def test_multipage_tiff_uses_first_page():
    pages = [Image.new("RGB", (8, 8), (0, 255, 0)), Image.new("RGB", (8, 8), (255, 0, 0))]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert load_image(data).getpixel((1, 1)) == (0, 255, 0)


@pytest.mark.parametrize("orientation, expected_size", [(1, (40, 20)), (6, (20, 40)), (8, (20, 40)), (3, (40, 20))])
def test_exif_orientation_is_applied(orientation, expected_size):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))  # a red mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = load_image(encode(image, "JPEG", exif=exif, quality=95))
    assert out.size == expected_size
    corner = {1: (2, 2), 6: (17, 2), 8: (2, 37), 3: (37, 17)}[orientation]
    red, _, blue = out.getpixel(corner)
    assert red > 200 and blue < 80


def test_one_pixel_and_extreme_aspect_ratio_are_accepted():
    assert load_image(encode(Image.new("RGB", (1, 1), (9, 9, 9)))).size == (1, 1)
    assert load_image(encode(Image.new("L", (5000, 2)))).size == (5000, 2)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is not an image at all, just text", "not a supported image"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "HTML"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"<svg><script>alert(1)</script></svg>", "SVG"),
        (b"%PDF-1.4 whatever", "PDF"),
        (b"%!PS-Adobe-3.0 EPSF-3.0", "PostScript"),
    ],
)
def test_non_images_are_refused_with_a_reason(data, message):
    with pytest.raises(InvalidImage, match=message):
        load_image(data)


def test_truncated_jpeg_is_refused():
    data = encode(photo(1, (256, 256)), "JPEG")
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (20000, 20000)))  # 400 megapixels in a few tens of kB
    assert len(bomb) < 100_000
    with pytest.raises(InvalidImage, match="too large"):
        load_image(bomb)


def test_file_size_limit():
    with pytest.raises(InvalidImage, match="limit is"):
        load_image(encode(photo(2)), ImageLimits(max_file_bytes=100))


def test_huge_jpeg_is_decoded_small():
    big = Image.new("RGB", (6000, 4000), (30, 120, 200))
    out = load_image(encode(big, "JPEG", quality=70))
    assert max(out.size) <= 2048 and out.getpixel((10, 10))[2] > 150


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(InvalidImage, match="not found"):
        load_image(tmp_path / "nope.jpg")
