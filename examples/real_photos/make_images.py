"""Write scikit-image's sample photos to ``images/*.png`` for the real-photos example.

The photos ship inside scikit-image (no download). Grayscale ones are stored as they are;
the auditor converts them to RGB when it loads them.

Usage::

    python examples/real_photos/make_images.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

#: file name -> function returning the photo as a uint8 array.
PHOTOS = {
    "chelsea": data.chelsea,                              # a cat on a rug
    "coffee": data.coffee,                                # a cup of espresso on a saucer
    "rocket": data.rocket,                                # a rocket on its launch pad
    "astronaut": data.astronaut,                          # Eileen Collins, a flag, a shuttle model
    "camera": data.camera,                                # a photographer behind a camera on a tripod
    "motorcycle": lambda: data.stereo_motorcycle()[0],    # a motorbike (left image of a stereo pair)
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "images")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, load in PHOTOS.items():
        image = np.asarray(load(), dtype=np.uint8)
        Image.fromarray(image).save(args.out / f"{name}.png")
        print(f"{args.out / name}.png  {image.shape[1]} x {image.shape[0]}")


if __name__ == "__main__":
    main()
