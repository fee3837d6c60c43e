# The ViT-B recipe shrunk for the demo world on 2 CPU cores: the demo encoder (embed 96, depth 6,
# heads 3, patch 8) at 128x128, a narrower UperNet, BN, batch 4, 200 iterations (about a minute).
# Same optimizer, layer decay, warm-up + poly schedule and sliding-window evaluation, scaled down,
# except: lr 4e-4 (a few hundred steps instead of 160k), out_indices [1,2,3,5] (blocks 4/6/8/12
# of 12 -> 2/3/4/6 of 6), and Feature2Pyramid rescales [2,1,0.5,0.25] so that with patch 8 the
# four maps keep the recipe's strides 4/8/16/32 (patch 16 with [4,2,1,0.5]); and the losses
# average over labelled pixels only (avg_non_ignore, as mmseg advises): most demo pixels are
# "other" (ignored), and without it the logged loss swings with each crop's labelled fraction.
_base_ = ['./upernet_vit_b16_ade20k_512_160k.py']

crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        img_size=crop_size,
        patch_size=8,
        embed_dims=96,
        num_layers=6,
        num_heads=3,
        mlp_ratio=4,
        drop_path_rate=0.0,
        out_indices=[1, 2, 3, 5]),
    neck=dict(embed_dim=96, rescales=[2, 1, 0.5, 0.25], norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[96, 96, 96, 96], channels=64, norm_cfg=norm_cfg,
                     loss_decode=dict(avg_non_ignore=True)),
    auxiliary_head=dict(in_channels=96, channels=32, norm_cfg=norm_cfg,
                        loss_decode=dict(avg_non_ignore=True)),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(85, 85)))

optim_wrapper = dict(
    optimizer=dict(lr=4e-4),
    paramwise_cfg=dict(num_layers=6, layer_decay_rate=0.65))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=20, end=200, by_epoch=False),
]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# In-process loading: 128-px JPEGs decode in milliseconds, and worker processes would only compete
# with the model for the two cores.
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))

train_cfg = dict(max_iters=200, val_interval=200)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=100, max_keep_ckpts=1))
