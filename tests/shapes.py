"""A synthetic captioning task the tests draw themselves: "a red circle on a white background"."""

import csv
import json
import random

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 20)}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (250, 250, 250), "black": (10, 10, 10)}
WORDS = " ".join(["a", "on", "background", *COLOURS, *SHAPES, *BACKGROUNDS])


def draw(colour: str, shape: str, background: str, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (64, 64), BACKGROUNDS[background])
    pen = ImageDraw.Draw(image)
    size = rng.randint(26, 40)
    x, y = rng.randint(2, 62 - size), rng.randint(2, 62 - size)
    box = (x, y, x + size, y + size)
    fill = COLOURS[colour]
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    else:
        pen.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=fill)
    return image


def make_shapes(folder, count: int, seed: int) -> list[tuple[str, str]]:
    """Images + their captions ("a red circle on a white background")."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        colour, shape, background = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS))
        name = f"{index:04d}.png"
        draw(colour, shape, background, rng).save(folder / name)
        rows.append((name, f"a {colour} {shape} on a {background} background"))
    return rows


def write_metadata(folder, rows, kind="jsonl"):
    if kind == "jsonl":
        (folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": t}) + "\n" for n, t in rows))
    else:
        with (folder / "metadata.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "text"])
            writer.writerows(rows)


def names_right_thing(caption: str, reference: str) -> bool:
    words = reference.split()
    return words[1] in caption and words[2] in caption  # colour and shape
