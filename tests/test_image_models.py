"""ImageClassifier: every family builds by name, heads fit the data, weights load safely."""

import os
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F
from lightning import Trainer
from torchvision.models import ResNet18_Weights

from project.data.digits import DigitsDataModule
from project.errors import UserError
from project.models.backbones import SMALL_CNN, build_network, head_keys
from project.models.image import ImageClassifier
from tests.image_files import cache_resnet18_imagenet_weights

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
VGGS = [f"vgg{depth}{bn}" for depth in (11, 13, 16, 19) for bn in ("", "_bn")]
HEADS = {
    **{name: {"fc"} for name in RESNETS},
    **{name: {"classifier.6"} for name in VGGS},
    "inception_v3": {"fc", "AuxLogits.fc"},
    SMALL_CNN: {"head"},
}


@pytest.mark.parametrize("backbone", sorted(HEADS))
def test_each_family_gets_a_head_for_the_data(backbone: str) -> None:
    # built on the meta device: shapes and a forward pass, without memory or init time
    with torch.device("meta"):
        net = build_network(backbone, 7, (3, 299, 299), pretrained=False)
        keys = head_keys(lambda n: build_network(backbone, n, (3, 299, 299), False))
        logits = net.eval()(torch.zeros(2, 3, 299, 299))
    assert {key.rsplit(".", 1)[0] for key in keys} == HEADS[backbone]
    for module in HEADS[backbone]:
        assert net.get_submodule(module).out_features == 7
    assert logits.shape == (2, 7)


@pytest.mark.parametrize(
    ("backbone", "input_size", "image_size"),
    [
        ("resnet18", (1, 8, 8), 32),  # grey images, repeated to 3 channels
        ("vgg11_bn", (3, 32, 32), 32),
        (SMALL_CNN, (1, 8, 8), None),
    ],
)
def test_forward_and_backward_reach_every_parameter(
    backbone: str, input_size: tuple, image_size: int | None
) -> None:
    model = ImageClassifier(4, input_size, backbone=backbone, image_size=image_size).train()
    images = torch.randint(0, 256, (2, *input_size), dtype=torch.uint8)
    outputs = model(images)  # a tuple for a network with auxiliary outputs (Inception)
    logits, *aux_outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert logits.shape == (2, 4)
    (logits.sum() + sum(out.sum() for out in aux_outputs)).backward()
    without_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert without_grad == []


def test_inception_aux_loss_counts_in_training_only() -> None:
    images, targets = torch.rand(2, 3, 64, 64), torch.tensor([0, 2])
    model = ImageClassifier(3, (3, 64, 64), backbone="inception_v3")
    outputs = {}
    model.net.register_forward_hook(lambda module, args, out: outputs.update(net=out))
    loss = model.training_step((images, targets), 0)
    logits, aux = outputs["net"]  # torchvision's InceptionOutputs, in training mode
    expected = F.cross_entropy(logits, targets) + 0.4 * F.cross_entropy(aux, targets)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # the backward pass reaches every parameter, the auxiliary head's included
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    assert isinstance(model(images), torch.Tensor)  # no auxiliary outputs out of training


def test_preprocessing_comes_from_the_weights(tmp_path: Path) -> None:
    seen = {}
    model = ImageClassifier(3, (1, 8, 8), backbone="resnet18")
    model.net.conv1.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    model.eval()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    # ResNet-18's weights: 224×224 crops, ImageNet mean and std, 3 channels
    transforms = ResNet18_Weights.DEFAULT.transforms()
    assert seen["x"].shape == (2, 3, 224, 224)
    expected = [-m / s for m, s in zip(transforms.mean, transforms.std, strict=True)]
    assert seen["x"][0, :, 100, 100].tolist() == pytest.approx(expected, rel=1e-5)
    small = ImageClassifier(3, (1, 8, 8), backbone="resnet18", image_size=32)
    small.net.conv1.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    small.eval()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    assert seen["x"].shape == (2, 3, 32, 32)


def network_file(tmp_path: Path, backbone: str = "resnet18", outputs: int = 5) -> Path:
    source = ImageClassifier(outputs, (3, 32, 32), backbone=backbone)
    path = tmp_path / f"{backbone}.pt"
    torch.save(source.net.state_dict(), path)
    return path


def test_weights_file_round_trip_keeps_every_backbone_tensor(tmp_path: Path) -> None:
    path = network_file(tmp_path, outputs=5)
    saved = torch.load(path, weights_only=True)
    model = ImageClassifier(3, (3, 32, 32), backbone="resnet18", weights=str(path))
    loaded = model.net.state_dict()
    assert model.net.fc.out_features == 3  # a new head for this data
    for key, value in saved.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key
    fresh = ImageClassifier(3, (3, 32, 32), backbone="resnet18")
    assert not torch.equal(fresh.net.conv1.weight, loaded["conv1.weight"])


def test_a_lightning_checkpoint_of_this_template_is_a_weights_file(tmp_path: Path) -> None:
    data = DigitsDataModule(batch_size=32, augment=False)
    trained = ImageClassifier(data.num_outputs, data.input_size, backbone="resnet18", image_size=16)
    trainer = Trainer(
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(trained, data)
    checkpoint = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(checkpoint)  # optimizer state, hyperparameters, loops: all of it
    model = ImageClassifier(2, (1, 8, 8), backbone="resnet18", weights=str(checkpoint))
    for key, value in trained.net.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(model.net.state_dict()[key], value), key


class Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("inside", ["state_dict", "checkpoint"])
def test_a_file_that_would_run_code_is_refused(tmp_path: Path, inside: str) -> None:
    marker = tmp_path / "payload-ran"
    state = {"conv1.weight": torch.zeros(1), "fc.bias": Payload(marker)}
    path = tmp_path / "evil.pt"
    torch.save(state if inside == "state_dict" else {"state_dict": state, "epoch": 3}, path)
    with pytest.raises(
        UserError, match=r"evil.pt needs code to unpickle, refused: loading it would run code"
    ) as error:
        ImageClassifier(3, (3, 32, 32), backbone="resnet18", weights=str(path))
    assert "posix.system" in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


def test_mismatched_files_name_the_keys(tmp_path: Path) -> None:
    path = network_file(tmp_path, backbone="resnet18")
    with pytest.raises(UserError, match=r"do not fit .*missing: layer1.2.bn1.bias"):
        ImageClassifier(3, (3, 32, 32), backbone="resnet34", weights=str(path))
    state = torch.load(path, weights_only=True)
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    torch.save(state, path)
    with pytest.raises(
        UserError, match=r"wrong shapes: conv1.weight \(64, 1, 7, 7\) where the model has \(64, 3"
    ):
        ImageClassifier(3, (3, 32, 32), backbone="resnet18", weights=str(path))
    small = network_file(tmp_path, backbone=SMALL_CNN)
    with pytest.raises(UserError, match=r"unexpected: features.0.bias"):
        ImageClassifier(3, (3, 32, 32), backbone="resnet18", weights=str(small))
    (tmp_path / "notes.pt").write_text("not tensors")
    with pytest.raises(
        UserError, match=r"notes.pt is corrupt or not a PyTorch weights file \(\w"
    ) as error:
        ImageClassifier(3, (3, 32, 32), backbone="resnet18", weights=str(tmp_path / "notes.pt"))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"])
def test_torchvision_weights_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    imagenet = cache_resnet18_imagenet_weights(tmp_path / "torch")
    model = ImageClassifier(4, (3, 32, 32), backbone="resnet18", weights=name)
    assert torch.equal(model.net.layer4[1].conv2.weight, imagenet["layer4.1.conv2.weight"])
    assert model.net.fc.out_features == 4


def test_offline_download_says_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args: object, **kwargs: object) -> None:
        raise URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    cache = tmp_path / "torch" / "hub" / "checkpoints" / Path(ResNet18_Weights.DEFAULT.url).name
    with pytest.raises(UserError, match=f"could not download .*put it at {cache}"):
        ImageClassifier(4, (3, 32, 32), backbone="resnet18", weights="DEFAULT")


@pytest.mark.parametrize(
    ("backbone", "weights", "message"),
    [
        ("resnet17", None, "unknown backbone 'resnet17'"),
        (
            "resnet18",
            "IMAGENET1K_V9",
            "no weights 'IMAGENET1K_V9': use one of DEFAULT, IMAGENET1K_V1",
        ),
        ("resnet18", "missing/weights.pt", "weights file missing/weights.pt not found"),
        (SMALL_CNN, "DEFAULT", "small_cnn has no torchvision weights"),
    ],
)
def test_naming_mistakes_are_one_line(backbone: str, weights: str | None, message: str) -> None:
    with pytest.raises(UserError, match=message):
        ImageClassifier(3, (3, 32, 32), backbone=backbone, weights=weights)


def test_inception_refuses_images_its_auxiliary_classifier_cannot_take() -> None:
    with pytest.raises(UserError, match="inception_v3 needs model.image_size >= 299, got 224"):
        ImageClassifier(3, (3, 32, 32), backbone="inception_v3", image_size=224)


class DigitValues(DigitsDataModule):
    """The digits as a regression: the model predicts each digit's value."""

    task = "regression"

    def __init__(self) -> None:
        super().__init__(batch_size=16, augment=False)
        self.num_outputs = 1


def test_regression_draws_its_predictions_as_values(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from project.callbacks import RunResults

    data = DigitValues()
    model = ImageClassifier(1, data.input_size, task="regression", backbone=SMALL_CNN)
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[RunResults()],  # in every CLI run (project/run.yaml)
        logger=TensorBoardLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    events = EventAccumulator(trainer.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["val/predictions"]  # no confusion matrix for values
    (grid,) = events.Images("val/predictions")
    assert (grid.width, grid.height) == (410, 466)
