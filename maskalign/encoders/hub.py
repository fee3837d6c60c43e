"""Name-based loading: ``timm:<name>[.tag]`` and ``open_clip:<model>/<tag>``, through each library's own download.

Nothing is re-implemented: timm's ``create_model(pretrained=True)`` fetches and converts its
weights, open_clip's ``create_model(model, pretrained=tag)`` fetches its own; the image tower's
tensors then go through the same conversion and checks as a file. Without network access (the hub
does not answer within seconds) only the local cache is tried, and the failure is one line naming
the spec and suggesting a local file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from maskalign.encoders.source_spec import CheckpointError, EncoderSpec

HUB_HOST = "huggingface.co"


def _first_line(e: BaseException) -> str:
    """The library's message, whole (a cut message hides what went wrong), on one line."""
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _reachable(host: str = HUB_HOST, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether the hub answers at all: a few seconds, instead of a minute of download retries."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def _offline_if_unreachable(spec: EncoderSpec) -> Iterator[bool]:
    """Without network, load from the local cache only (``HF_HUB_OFFLINE``); yields whether offline."""
    import os

    if _reachable():
        yield False
        return
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants  # read at its import: set the module's flag too
    except ImportError:
        constants = None
    old_flag = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_flag
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def _offline_error(spec: EncoderSpec, what: str, e: BaseException) -> CheckpointError:
    return CheckpointError(f"{spec.text}: {what}: no network here ({HUB_HOST} does not answer) and the weights "
                        f"are not in the local cache; download the weights where there is network and give the "
                        f"file as --ckpt (torch.save of its state dict, e.g. --ckpt /path/to/model.pth) "
                        f"[{_first_line(e)}]")


@contextmanager
def _quiet_download() -> Iterator[None]:
    """huggingface_hub logs every retry; the failure is reported once, in the one-line error."""
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def timm_family(name: str) -> str:
    """The family of a timm model name (for labels and the dense-task choice)."""
    n = name.lower()
    if "dinov2" in n:
        return "dinov2_reg" if "reg" in n else "dinov2"
    if "clip" in n:
        return "clip_quickgelu" if "quickgelu" in n or n.endswith(".openai") else "clip"
    if n.startswith("deit3"):
        return "deit3"
    if "distilled" in n:
        return "deit_distilled"
    if n.startswith("beit"):
        return "beit"
    return "vit"


def timm_pretrained(spec: EncoderSpec) -> nn.Module:
    """timm's model ``spec.target`` with its pretrained weights, no classifier head."""
    import timm

    base = spec.target.split(".")[0]
    if not timm.is_model(base):
        raise CheckpointError(f"{spec.text}: timm {timm.__version__} has no model {base!r}")
    with _offline_if_unreachable(spec) as offline:
        try:
            with _quiet_download():
                model = timm.create_model(spec.target, pretrained=True, num_classes=0)
        except Exception as e:  # noqa: BLE001 -- hub, network and cache errors of many kinds
            if offline:
                raise _offline_error(spec, "timm could not load its pretrained weights", e) from None
            raise CheckpointError(f"{spec.text}: timm could not load its pretrained weights "
                                  f"({_first_line(e)})") from None
    if type(model).__name__ not in ("VisionTransformer", "VisionTransformerDistilled", "Beit"):
        raise CheckpointError(f"{spec.text}: a {type(model).__name__}, not a ViT family these benchmarks run")
    return model


def open_clip_tower(spec: EncoderSpec) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(open_clip model's state dict, file options it implies: activation and head count)."""
    import open_clip
    from open_clip.transformer import QuickGELU, VisionTransformer

    model_name, _, tag = spec.target.partition("/")
    if model_name not in open_clip.list_models():
        raise CheckpointError(f"{spec.text}: open_clip {open_clip.__version__} has no model {model_name!r}")
    with _offline_if_unreachable(spec) as offline:
        try:
            with _quiet_download():
                clip = open_clip.create_model(model_name, pretrained=tag)
        except Exception as e:  # noqa: BLE001 -- hub, network and tag errors of many kinds
            if offline:
                raise _offline_error(spec, f"open_clip could not load pretrained {tag!r}", e) from None
            raise CheckpointError(f"{spec.text}: open_clip could not load pretrained {tag!r} "
                                  f"({_first_line(e)})") from None
    visual = clip.visual
    if not isinstance(visual, VisionTransformer):
        raise CheckpointError(f"{spec.text}: the image tower is a {type(visual).__name__}, not open_clip's ViT")
    if getattr(visual, "final_ln_after_pool", False) or getattr(visual, "attn_pool", None) is not None:
        raise CheckpointError(f"{spec.text}: the tower normalises after pooling / pools with attention; timm's CLIP "
                           f"ViT does neither")
    block: Any = visual.transformer.resblocks[0]
    act = "quickgelu" if isinstance(block.mlp.gelu, QuickGELU) else "gelu"
    return clip.state_dict(), {"act": act, "num_heads": str(block.attn.num_heads)}
