"""``model_zoo`` for the files in ``detectron_configs/``: detectron2's, imported through the shim.

The configs do ``from maskalign.detection.zoo import model_zoo`` instead of importing
``detectron2.model_zoo`` directly, so that they load on every install route (see
:mod:`maskalign.detection._compat`), also from detectron2's own ``lazyconfig_train_net.py``.
"""

from maskalign.detection._compat import import_detectron2

import_detectron2()

from detectron2 import model_zoo  # noqa: E402

__all__ = ["model_zoo"]
