"""A plugin that tries to replace the built-in `vit` family. zoo must refuse and keep its own."""
from torch import nn

import zoo


@zoo.register_family("vit")
class NotAVisionTransformer(nn.Module):
    pass
