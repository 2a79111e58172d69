"""Procedural captioned scenes for the demo: members and non-members from one distribution.

Each scene is a textured background with one or two coloured shapes; its caption names them
("a large red circle on the left and a small blue square at the top on a green background."). All
scenes are drawn i.i.d. from one seeded generator and then split, so nothing but membership tells the
member and non-member sets apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from logan.io import write_json

COLOURS = {
    "red": (210, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 210),
    "yellow": (230, 210, 40),
    "purple": (140, 50, 170),
    "orange": (240, 140, 30),
    "white": (235, 235, 235),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "cross", "ring")
SIZES = {"small": 0.22, "large": 0.38}
PLACES = {
    "on the left": (0.28, 0.5),
    "on the right": (0.72, 0.5),
    "at the top": (0.5, 0.28),
    "at the bottom": (0.5, 0.72),
    "in the middle": (0.5, 0.5),
}


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[tuple[str, str, str, str], ...]  # (size, colour, shape, place)
    texture_seed: int

    @property
    def caption(self) -> str:
        parts = [f"a {size} {colour} {shape} {place}" for size, colour, shape, place in self.objects]
        return " and ".join(parts) + f" on a {self.background} background."


def vocabulary() -> list[str]:
    """Every word a caption can use (for the tiny model's tokenizer)."""
    words = [*COLOURS, *SHAPES, *SIZES, *" ".join(PLACES).split(), "a", "and", "on", "background", "."]
    return list(dict.fromkeys(words))


def random_scene(rng: np.random.Generator) -> Scene:
    background = str(rng.choice(list(COLOURS)))
    places = list(rng.permutation(list(PLACES)))
    objects = []
    for i in range(int(rng.integers(1, 3))):
        colour = str(rng.choice([c for c in COLOURS if c != background]))
        objects.append((str(rng.choice(list(SIZES))), colour, str(rng.choice(SHAPES)), str(places[i])))
    return Scene(background, tuple(objects), int(rng.integers(2**31)))


def render(scene: Scene, size: int) -> Image.Image:
    """Draw a scene: textured background, shapes, a light blur and sensor-like noise."""
    rng = np.random.default_rng(scene.texture_seed)
    base = np.array(COLOURS[scene.background], dtype=np.float32)
    gradient = np.linspace(-1, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    shade = np.cos(angle) * gradient[None, :] + np.sin(angle) * gradient[:, None]
    pixels = base + 25 * shade[..., None] + rng.normal(0, 6, (size, size, 3))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for size_name, colour, shape, place in scene.objects:
        cx, cy = (np.array(PLACES[place]) + rng.normal(0, 0.03, 2)) * size
        r = SIZES[size_name] * size / 2 * rng.uniform(0.85, 1.15)
        _shape(draw, shape, cx, cy, r, COLOURS[colour])
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 3, (size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "cross":
        w = r / 3
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
    else:
        draw.ellipse(box, outline=fill, width=max(2, int(r / 3)))


def make_split(folder: Path, counts: dict[str, int], size: int, seed: int) -> dict[str, Path]:
    """Render i.i.d. scenes, split them into named sets, write PNGs and one JSON list per set.

    `counts` maps set name -> number of scenes, e.g. {"members": 150, "nonmembers": 150}; a set whose
    name starts with "member" is labelled 1, every other set 0.
    """
    folder = Path(folder)
    rng = np.random.default_rng([seed, 7])
    lists: dict[str, Path] = {}
    for name, n in counts.items():
        label = 1 if name.startswith("member") else 0
        entries = []
        for i in range(n):
            scene = random_scene(rng)
            path = folder / "images" / f"{name}_{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            render(scene, size).save(path)
            entries.append({"image": str(path.resolve()), "label": label, "caption": scene.caption})
        lists[name] = folder / f"{name}.json"
        write_json(lists[name], entries)
    return lists
