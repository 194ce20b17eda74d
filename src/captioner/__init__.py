"""Image captioning with a ViT-GPT2 VisionEncoderDecoder model, for the app, the API and the CLI."""

from .engine.inference import Caption, Captioner
from .errors import CaptionError, InvalidImage, InvalidSettings, ModelLoadError, RequestTooLarge
from .images import ImageLimits, load_image
from .model_source import DEFAULT_MODEL
from .settings import DEFAULT_SETTINGS, CaptionSettings

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SETTINGS",
    "Caption",
    "CaptionError",
    "CaptionSettings",
    "Captioner",
    "ImageLimits",
    "InvalidImage",
    "InvalidSettings",
    "ModelLoadError",
    "RequestTooLarge",
    "build_demo",
    "load_image",
]


def __getattr__(name: str):
    # gradio is only imported by those who build the UI (the CLI does not need it).
    if name == "build_demo":
        from .app.ui import build_demo

        return build_demo
    raise AttributeError(name)
