"""ADE20K semantic segmentation with UperNet on mmsegmentation (``transfer/ade20k_upernet.py``).

* :mod:`.mmseg_import`: imports mmseg, standing in for missing compiled ``mmcv.ops``
  (:mod:`.mmcv_ops_shim`);
* :mod:`.convert`: project encoder -> mmseg ``MAE`` backbone keys;
* :mod:`.optim`: layer-wise lr decay with the no-weight-decay rules of MAE/BEiT;
* :mod:`.datasets`: the ADEChallengeData2016 layout, checked before a job starts;
* :mod:`.train`: the mmengine Runner job (train, resume, evaluate, record);
* :mod:`.task`: the launcher task.

Only these modules import mmseg/mmcv/mmengine, and only inside functions or after
:func:`~maskalign.segmentation.mmseg_import.import_mmseg`.
"""
