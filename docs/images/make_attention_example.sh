#!/usr/bin/env bash
# Writes docs/images/attention_digits.png: class-token attention and rollout of a ViT trained here
# (no weights can be downloaded on the machines this project is built on). About 4 minutes on 2 cores.
# Run from the repository root with zoo installed: bash docs/images/make_attention_example.sh
set -euo pipefail
work=${WORK:-$(mktemp -d)}
zoo quickstart --out "$work/qs" --no-progress
zoo finetune --model "$work/qs/mae/encoder" --data digits --epochs 30 --global-pool token --lr 1e-3 \
    --warmup-epochs 3 --drop-path 0.1 --mixup 0.2 --cutmix 0 --rand-aug rand-m5-mstd0.5 --reprob 0 \
    --crop-scale 0.7 1.0 --hflip 0 --ema-decay 0.99 --out "$work/ft" --no-progress
python - "$work" <<'PY'
import sys
from pathlib import Path
from PIL import Image
from zoo.data import load_digits_split

work = Path(sys.argv[1]); (work / "digits").mkdir(exist_ok=True)
test = load_digits_split()["test"]  # the test digits: never seen in pretraining or fine-tuning
for i in range(6):
    array = (test.images[i].permute(1, 2, 0) * 255).round().byte().numpy()
    Image.fromarray(array).resize((128, 128), Image.NEAREST).save(work / "digits" / f"digit{i}.png")
PY
zoo attention "$work/digits" --model "$work/ft/best" --rollout --out "$work/maps"
python - "$work" <<'PY'
import sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image

work = Path(sys.argv[1])
fig, axes = plt.subplots(3, 6, figsize=(9, 4.8))
for i in range(6):
    for row, name in enumerate((f"digits/digit{i}.png", f"maps/digit{i}_attention.png", f"maps/digit{i}_rollout.png")):
        axes[row, i].imshow(Image.open(work / name))
        axes[row, i].axis("off")
for row, label in enumerate(("digit", "attention", "rollout")):
    axes[row, 0].set_title(label, loc="left", fontsize=9)
fig.tight_layout()
fig.savefig("docs/images/attention_digits.png", dpi=80)
print("docs/images/attention_digits.png")
PY
