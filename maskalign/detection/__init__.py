"""COCO detection and instance segmentation with ViTDet Mask R-CNN, on detectron2.

``transfer/coco_vitdet.py`` is the entry point; this package is its library:

* :mod:`~maskalign.detection.convert`: a pre-trained encoder (timm key names) into the keys of
  detectron2's ViT (``backbone.net.*``), tensors only.
* :mod:`~maskalign.detection.configs`: loading ``detectron_configs/*.py`` (LazyConfig), ``key=value``
  overrides, and fitting the backbone to the checkpoint.
* :mod:`~maskalign.detection.datasets`: registering the demo world's COCO copy or real COCO 2017.
* :mod:`~maskalign.detection.train` / :mod:`~maskalign.detection.evaluate`: detectron2's trainer
  with checkpoint/resume, and COCOEvaluator (box and mask AP).
* :mod:`~maskalign.detection.task`: the picklable task the shared launcher runs or submits.
* :mod:`~maskalign.detection.info`: ``python -m maskalign.detection.info`` tells how detectron2 was
  installed here.

Importing this package does not import detectron2; :func:`import_detectron2` does, with the
one-line error a user sees when it is missing.
"""

from maskalign.detection._compat import Detectron2Missing, detectron2_available, import_detectron2

__all__ = ["Detectron2Missing", "detectron2_available", "import_detectron2"]
