"""A plugin that adds one good variant and one that reuses the built-in alias `deit_s`.

zoo must refuse the whole file: the good variant is not added either, and `deit_s` still means
deit_small_patch16_224."""
from pathlib import Path

ZOO_VARIANTS = Path(__file__).with_name("hijack_name.yaml")
