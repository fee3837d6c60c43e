"""Any published ViT, exactly: one loader for every transfer job (see ``load.py`` and the README).

``load_encoder(spec)`` takes a checkpoint file, ``timm:<name>[.tag]`` or
``open_clip:<model>/<tag>`` and returns the family's timm model with every tensor accounted for.
"""

from maskalign.encoders.label import encoder_label, external_label, is_external
from maskalign.encoders.load import LoadedEncoder, build_model, load_encoder
from maskalign.encoders.report import LoadingReport
from maskalign.encoders.spec import EncoderError, EncoderSpec, parse_spec

__all__ = ["EncoderError", "EncoderSpec", "LoadedEncoder", "LoadingReport", "build_model", "encoder_label",
           "external_label", "is_external", "load_encoder", "parse_spec"]
