# UperNet + ViT-B/16 on ADE20K at 512x512: 160k iterations at batch 16 (2 images x 8 GPUs), AdamW
# lr 1e-4, wd 0.05, layer-wise lr decay 0.65, linear warm-up 1500 iterations then poly (power 1),
# single-scale sliding-window mIoU (crop 512, stride 341). This is mmseg's MAE recipe (MAE ViT-B:
# 48.13 mIoU), stated as a delta on mmseg's own config file (PROTOCOLS.md (b)):
#   * backbone: mmseg's `MAE` (BEiT-style relative position bias per block, left at zero;
#     init_values=1.0; out_indices [3,5,7,11]); its weights come from `--ckpt`, converted by
#     maskalign.segmentation.convert and loaded through `backbone.init_cfg` by the job;
#   * optimizer: ViTLayerDecayOptimizerConstructor, mmseg's layer decay with pos_embed, cls_token
#     and the relative position tables exempt from weight decay (mmseg's constructor misses them);
#   * dataset: ADE20KLayoutDataset (ADE20K's 150 classes, or those of a classes.json in the tree);
#     `data_root` is set by the job (`--data`, default: the demo world's copy);
#   * AMP through AmpOptimWrapper on GPUs (the base file's `fp16` key does nothing in mmseg 1.x);
#     plain OptimWrapper on CPUs; SyncBN becomes BN in a single process.
_base_ = ['mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py']

model = dict(pretrained=None)

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    constructor='ViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.65))

train_dataloader = dict(dataset=dict(type='ADE20KLayoutDataset'))
val_dataloader = dict(dataset=dict(type='ADE20KLayoutDataset'))
test_dataloader = dict(dataset=dict(type='ADE20KLayoutDataset'))

default_hooks = dict(checkpoint=dict(max_keep_ckpts=2, save_last=True))
randomness = dict(seed=0)
