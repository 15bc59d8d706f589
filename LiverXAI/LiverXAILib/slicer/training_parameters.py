"""The Training panel's state: Slicer's parameter node, and the trainer's options read from it."""

from typing import Annotated

from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from ..training.options import AUGMENTATIONS, TrainingOptions, default_model_name


@parameterNodeWrapper
class LiverXAITrainingParameterNode:
    """GUI state. ``architecture`` is bound by hand: its choices come from the network registry."""

    dataPath: str = ""
    outputFolder: str = ""
    architecture: str = "unet"
    inputSize: Annotated[int, Choice([128, 256])] = 128
    slices: Annotated[int, Choice([1, 3, 5])] = 1
    epochs: Annotated[int, WithinRange(1, 1000)] = 50
    batchSize: Annotated[int, WithinRange(1, 256)] = 16
    loss: Annotated[str, Choice(["dicece", "ce", "tversky", "dicefocal"])] = "dicece"
    augmentRotate: bool = True
    augmentFlip: bool = False
    augmentZoom: bool = True
    augmentNoise: bool = True
    augmentIntensity: bool = True
    augmentContrast: bool = False
    augmentGamma: bool = False
    augmentLesion: bool = False
    register: bool = True
    registerName: str = ""
    resume: bool = False
    keepGoing: bool = False
    learningRate: Annotated[float, WithinRange(0.000001, 1.0)] = 0.001
    schedule: Annotated[str, Choice(["none", "step", "cosine"])] = "none"
    patience: Annotated[int, WithinRange(1, 1000)] = 15
    keepEmpty: Annotated[float, WithinRange(0.0, 1.0)] = 0.2
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    cacheFolder: str = ""
    evaluationPart: Annotated[str, Choice(["test", "validation", "train", "all"])] = "test"


def trainingOptionsFrom(params: LiverXAITrainingParameterNode) -> TrainingOptions:
    """The trainer's options from the GUI state."""
    out = params.outputFolder.strip()
    wanted = {
        "rotate": params.augmentRotate,
        "flip": params.augmentFlip,
        "zoom": params.augmentZoom,
        "noise": params.augmentNoise,
        "intensity": params.augmentIntensity,
        "contrast": params.augmentContrast,
        "gamma": params.augmentGamma,
        "lesion": params.augmentLesion,
    }
    augment = [name for name in AUGMENTATIONS if wanted[name]]  # KeyError: a new one unbound
    registerName = (
        (params.registerName.strip() or default_model_name(out)) if params.register else None
    )
    return TrainingOptions(
        data=params.dataPath.strip(),
        out=out,
        arch=params.architecture,
        epochs=params.epochs,
        size=params.inputSize,
        slices=params.slices,
        loss=params.loss,
        batch_size=params.batchSize,
        lr=params.learningRate,
        schedule=params.schedule,
        patience=params.patience,
        augment=augment,
        keep_empty=params.keepEmpty,
        device=params.device,
        cache=params.cacheFolder.strip() or None,
        register=registerName,
        resume=params.resume,
        keep_going=params.keepGoing,
    )
