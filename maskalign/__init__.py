"""maskalign: masked image modeling pre-training and its transfer benchmarks.

The main method is MaskAlign (Xue et al., "Stare at What You See: Masked Image Modeling without
Reconstruction", CVPR 2023); MAE, CrossMAE, LUT and feature distillation run beside it through the
same engine, data, launcher and checkpoint format.
"""

__version__ = "0.1.0"
