"""Write ``reference_keys.json``: the state-dict keys and shapes of the peers' published model definitions.

Written by reading each project's model code (not fqtool's), module by module in registration order:

* MagFace ``models/iresnet.py`` (IrvingMeng/MagFace@719001a) wrapped by ``models/magface.py``'s
  ``SoftmaxBuilder`` (``features`` = the iResNet, ``fc`` = ``MagLinear(in, out)``, weight ``(in, out)``),
  saved from ``DataParallel`` as ``{'epoch', 'arch', 'state_dict'}``: keys ``module.features.*``,
  ``module.fc.weight``.
* arcface_torch ``backbones/iresnet.py`` (deepinsight/insightface@04a433f): ``backbone.pth`` is the bare
  iResNet's state dict.
* CR-FIQA ``backbones/iresnet.py`` (fdbtrs/CR-FIQA@68b1460): the same iResNet (``use_se=False``) plus
  ``qs = Linear(num_features, 1)`` after ``features``.
* EQFace ``models/model_resnet.py`` (deepcam-cn/FaceQuality@5515e02): ``ResNet`` with ``input_layer``,
  ``BottleNeck_IR`` blocks (``res_layer`` 0–5, ``shortcut_layer`` only when ``dim_match`` is false, i.e. the
  first block of a stage), ``output_layer``, ``feature_layer``; ``FaceQuality(512·7·7)`` with ``qualtiy``;
  both saved from ``DataParallel`` (``module.`` prefix). Depths 34/50/100/152 only.

Run ``python tests/data/reference_keys/generate.py`` to rewrite the JSON next to it.
"""

from __future__ import annotations

import json
from pathlib import Path

IRESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
STAGE_WIDTHS = (64, 128, 256, 512)
EMBEDDING = 512
FLAT = 512 * 7 * 7
CLASSES = 10  # MagLinear's out_features is the data set's class count (85742 for MS1MV2); kept small here


def batchnorm(name: str, channels: int) -> list:
    shape = [channels]
    return [[f"{name}.{p}", shape] for p in ("weight", "bias", "running_mean", "running_var")] + [
        [f"{name}.num_batches_tracked", []]
    ]


def iresnet(depth: int, prefix: str = "", *, qs: bool = False) -> list:
    """MagFace / arcface_torch / CR-FIQA IResNet: conv1 bn1 prelu, layer1-4 of IBasicBlock, bn2, fc,
    features (BatchNorm1d) [, qs]."""
    keys = [[f"{prefix}conv1.weight", [64, 3, 3, 3]], *batchnorm(f"{prefix}bn1", 64),
            [f"{prefix}prelu.weight", [64]]]
    inplanes = 64
    for stage, (blocks, planes) in enumerate(zip(IRESNET_LAYERS[depth], STAGE_WIDTHS, strict=True), start=1):
        for index in range(blocks):
            block = f"{prefix}layer{stage}.{index}"
            keys += batchnorm(f"{block}.bn1", inplanes)
            keys.append([f"{block}.conv1.weight", [planes, inplanes, 3, 3]])
            keys += batchnorm(f"{block}.bn2", planes)
            keys.append([f"{block}.prelu.weight", [planes]])
            keys.append([f"{block}.conv2.weight", [planes, planes, 3, 3]])
            keys += batchnorm(f"{block}.bn3", planes)
            if index == 0:  # stride 2 in every stage's first block
                keys.append([f"{block}.downsample.0.weight", [planes, inplanes, 1, 1]])
                keys += batchnorm(f"{block}.downsample.1", planes)
            inplanes = planes
    keys += batchnorm(f"{prefix}bn2", 512)
    keys += [[f"{prefix}fc.weight", [EMBEDDING, FLAT]], [f"{prefix}fc.bias", [EMBEDDING]]]
    keys += batchnorm(f"{prefix}features", EMBEDDING)
    if qs:
        keys += [[f"{prefix}qs.weight", [1, EMBEDDING]], [f"{prefix}qs.bias", [1]]]
    return keys


def eqface(depth: int, prefix: str = "module.") -> list:
    """EQFace ResNet (face.evoLVe IR naming)."""
    keys = [[f"{prefix}input_layer.0.weight", [64, 3, 3, 3]], *batchnorm(f"{prefix}input_layer.1", 64),
            [f"{prefix}input_layer.2.weight", [64]]]
    channels = (64, 64, 128, 256, 512)
    for stage, blocks in enumerate(IRESNET_LAYERS[depth], start=1):
        in_c, out_c = channels[stage - 1], channels[stage]
        for index in range(blocks):
            block = f"{prefix}layer{stage}.{index}"
            first_in = in_c if index == 0 else out_c
            keys += batchnorm(f"{block}.res_layer.0", first_in)
            keys.append([f"{block}.res_layer.1.weight", [out_c, first_in, 3, 3]])
            keys += batchnorm(f"{block}.res_layer.2", out_c)
            keys.append([f"{block}.res_layer.3.weight", [out_c]])
            keys.append([f"{block}.res_layer.4.weight", [out_c, out_c, 3, 3]])
            keys += batchnorm(f"{block}.res_layer.5", out_c)
            if index == 0:  # dim_match=False
                keys.append([f"{block}.shortcut_layer.0.weight", [out_c, in_c, 1, 1]])
                keys += batchnorm(f"{block}.shortcut_layer.1", out_c)
    keys += batchnorm(f"{prefix}output_layer.0", 512)
    keys += [[f"{prefix}feature_layer.0.weight", [EMBEDDING, FLAT]],
             [f"{prefix}feature_layer.0.bias", [EMBEDDING]]]
    keys += batchnorm(f"{prefix}feature_layer.1", EMBEDDING)
    return keys


def eqface_quality(prefix: str = "module.") -> list:
    return [[f"{prefix}qualtiy.0.weight", [512, FLAT]], *batchnorm(f"{prefix}qualtiy.1", 512),
            [f"{prefix}qualtiy.3.weight", [2, 512]]]


def reference() -> dict:
    return {
        "magface_iresnet18": {
            "family": "magface", "arch": "iresnet18", "wrapper": {"epoch": 25, "arch": "iresnet18"},
            "dropped": ["module.fc.weight"],
            "keys": iresnet(18, "module.features.") + [["module.fc.weight", [EMBEDDING, CLASSES]]],
        },
        "arcface_torch_iresnet18": {"family": "arcface_torch", "arch": "iresnet18", "keys": iresnet(18)},
        "arcface_torch_iresnet50": {"family": "arcface_torch", "arch": "iresnet50", "keys": iresnet(50)},
        "crfiqa_iresnet18": {"family": "crfiqa", "arch": "iresnet18", "keys": iresnet(18, qs=True)},
        "eqface_resnet50": {
            "family": "eqface", "arch": "iresnet50", "keys": eqface(50), "quality_keys": eqface_quality(),
        },
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("reference_keys.json")
    entries = reference()
    lines = ["{"]
    for n, (name, entry) in enumerate(entries.items()):
        body = json.dumps(entry, separators=(",", ":"))
        lines.append(f"  {json.dumps(name)}: {body}{',' if n < len(entries) - 1 else ''}")
    out.write_text("\n".join(lines + ["}"]) + "\n", encoding="utf-8")
    print(f"wrote {out} ({sum(len(e['keys']) for e in entries.values())} keys)")
