"""Image loading: modes, orientation, broken files; preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from auditor.errors import ImageError
from auditor.images import Preprocess, load_image


def _save(tmp_path, name, im, **kw):
    p = tmp_path / name
    im.save(p, **kw)
    return p


def test_modes_become_rgb(tmp_path):
    rgba = Image.new("RGBA", (4, 3), (255, 0, 0, 0))  # fully transparent red -> white background
    assert load_image(_save(tmp_path, "a.png", rgba))[0, 0].tolist() == [255, 255, 255]
    la = Image.new("LA", (4, 3), (50, 255))
    assert load_image(_save(tmp_path, "la.png", la))[0, 0].tolist() == [50, 50, 50]
    pal = Image.new("P", (4, 3))
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.putpixel((1, 1), 1)
    assert load_image(_save(tmp_path, "p.png", pal))[1, 1].tolist() == [10, 200, 30]
    cmyk = Image.new("CMYK", (4, 3), (0, 255, 255, 0))
    assert load_image(_save(tmp_path, "c.jpg", cmyk, quality=100))[0, 0].tolist()[0] > 240
    grey = Image.new("L", (4, 3), 77)
    assert load_image(_save(tmp_path, "g.png", grey)).shape == (3, 4, 3)


def test_sixteen_bit_and_float_images_are_scaled(tmp_path):
    a16 = np.array([[0, 65535], [32768, 0]], dtype=np.uint16)
    img = load_image(_save(tmp_path, "i16.png", Image.fromarray(a16)))
    assert img[0, 1].tolist() == [255, 255, 255] and img[1, 0, 0] == 128
    f = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    img = load_image(_save(tmp_path, "f.tif", Image.fromarray(f, mode="F")))
    assert img[:, :, 0].tolist() == [[0, 128], [255, 64]]


def test_exif_rotation_is_applied(tmp_path):
    im = Image.new("RGB", (4, 2), (0, 0, 0))
    im.putpixel((3, 0), (255, 255, 255))  # top-right corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif, quality=100)
    out = load_image(p)
    assert out.shape == (4, 2, 3)  # displayed: 2 wide, 4 tall
    assert out[3, 1].mean() > 200  # the white pixel is now bottom-right


def test_animated_gif_gives_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (3, 3), c) for c in ((255, 0, 0), (0, 255, 0))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    assert load_image(p)[0, 0].tolist()[0] > 200


@pytest.mark.parametrize("content, fragment", [
    (None, "Image not found"),
    (b"", "empty file"),
    (b"GIF89a not really", "Not a readable image"),
    (b"hello, I am text", "Not a readable image"),
])
def test_bad_files_have_clear_messages(tmp_path, content, fragment):
    p = tmp_path / "x.png"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ImageError, match=fragment):
        load_image(p)


def test_truncated_jpeg(tmp_path):
    import skimage.data

    p = _save(tmp_path, "cat.jpg", Image.fromarray(skimage.data.chelsea()))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="Corrupt or truncated"):
        load_image(p)


def test_preprocess_resizes_and_normalises():
    img = np.full((10, 20, 3), 255, np.uint8)
    pre = Preprocess(size=(4, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    x = pre(img)
    assert x.shape == (1, 3, 4, 8)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, 2.0, 0.5]))
    assert pre.to_dict()["size"] == [4, 8]
    with pytest.raises(ImageError, match="std"):
        Preprocess(std=(0.1, 0.0, 0.1))
