"""`zoo predict`: classify image files with a registered model or a saved one, top-k labels."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch

from .factory import create
from .data import eval_transform
from .common.metrics import top_k_predictions


def label_names(model) -> Optional[List[str]]:
    """The model's class names: saved ones (a fine-tuned model's config), else ImageNet's for 1000- and
    21843-class heads (timm's ImageNetInfo), else None."""
    saved = model.zoo_config.get("label_names")
    if saved:
        return list(saved)
    n = getattr(model, "num_classes", 0)
    if n in (1000, 21843):
        from timm.data import ImageNetInfo

        info = ImageNetInfo("imagenet-1k" if n == 1000 else "imagenet-21k")
        return [info.index_to_description(i) for i in range(n)]
    return None


def load_classifier(ref: str, pretrained: Union[bool, str] = False):
    model = create(ref, pretrained=pretrained)  # a saved folder or hf-hub: repo brings its own weights
    if not getattr(model, "num_classes", 0):
        raise ValueError(f"--model {ref}: this model has no classifier head (num_classes=0); fine-tune it first "
                         f"(zoo finetune) or use one with a head")
    return model.eval()


@torch.no_grad()
def predict(images: Sequence[Union[str, Path]], model, top_k: int = 5) -> List[List[Tuple[str, float]]]:
    """[(label, probability)] x top_k for each image file, with the model's own eval transform."""
    from PIL import Image
    from torchvision.transforms import v2

    transform = eval_transform(model.zoo_config["input"])
    batch = []
    for path in images:
        try:
            with Image.open(path) as im:
                img = v2.functional.to_dtype(v2.functional.to_image(im.convert("RGB")), torch.float32, scale=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read it as an image ({e})") from None
        batch.append(transform(img))
    device = next(model.parameters()).device
    probs = model(torch.stack(batch).to(device)).float().softmax(dim=1).cpu()
    return top_k_predictions(probs, label_names(model), top_k)
