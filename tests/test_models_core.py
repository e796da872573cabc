import pytest
import torch

from fqtool.errors import FqtoolError
from fqtool.models import create_model, list_models
from fqtool.models.preprocess import ARCFACE, EQFACE, MAGFACE


@pytest.mark.parametrize(
    ("name", "params", "keys"),
    [("iresnet18", 24_025_600, 187), ("iresnet50", 43_590_848, 475)],
)
def test_iresnet_matches_reference_sizes(name: str, params: int, keys: int) -> None:
    model = create_model(name)
    assert sum(p.numel() for p in model.backbone.parameters()) == params
    assert len(model.backbone.state_dict()) == keys


def test_registry_lists_and_rejects() -> None:
    assert {"iresnet18", "iresnet50", "iresnet100", "iresnet_tiny"} <= set(list_models())
    assert list_models("iresnet1*") == ["iresnet100", "iresnet152", "iresnet18"]
    with pytest.raises(FqtoolError, match="unknown architecture"):
        create_model("resnet9000")


def test_preprocess_per_family() -> None:
    pixels = torch.tensor([[[[255]], [[0]], [[127]]]], dtype=torch.uint8)  # R=255, G=0, B=127
    size = (1, 1)
    arc = type(ARCFACE)(size=size)(pixels).flatten().tolist()
    assert arc == pytest.approx([1.0, -1.0, 127 / 127.5 - 1])
    mag = type(MAGFACE)(size=size, color="BGR", mean=(0, 0, 0), std=(1, 1, 1))(pixels).flatten().tolist()
    assert mag == pytest.approx([127 / 255, 0.0, 1.0])  # BGR order, x/255
    eq = type(EQFACE)(size=size, mean=EQFACE.mean, std=EQFACE.std)(pixels).flatten().tolist()
    assert eq == pytest.approx([(255 - 127.5) / 128, (0 - 127.5) / 128, (127 - 127.5) / 128], rel=1e-5)


def test_quality_is_norm_or_head() -> None:
    torch.manual_seed(0)
    model = create_model("iresnet_tiny", quality_head=True).eval()
    x = model.prepare(torch.randint(0, 256, (3, 3, 112, 112), dtype=torch.uint8))
    emb, quality = model(x)
    assert emb.shape == (3, 128)
    assert ((quality > 0) & (quality < 1)).all()
    model.set_quality_method("norm")
    emb, quality = model(x)
    assert torch.allclose(quality, emb.norm(dim=1))


def test_arcface_torch_names_are_aliases() -> None:
    from fqtool.models import create_model
    from fqtool.models.registry import ALIASES, aliases_of, get_spec

    assert {"r18", "r34", "r50", "r100", "r200", "mbf"} <= set(ALIASES)
    for alias, name in ALIASES.items():
        assert get_spec(alias).name == name
    assert aliases_of("iresnet50") == ["r50"]
    with torch.device("meta"):
        model = create_model("r18")
    assert model.info.arch == "iresnet18"  # checkpoints record the registry name
