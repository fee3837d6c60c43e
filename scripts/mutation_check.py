#!/usr/bin/env python
"""Plant known bugs one at a time and check that the tests catch each (run by hand, not in CI).

Each entry of ``MUTATIONS`` is one planted bug: a file, an exact ``old`` string that must occur
exactly once in it, its ``new`` replacement, and the tests that should fail. The check copies the
repository's files (tracked and untracked-but-not-ignored, i.e. what ``git ls-files`` lists) into
a temporary folder, runs the union of all listed tests there unmutated (they must pass: otherwise
every mutation would look caught), then for each mutation applies it, runs its tests with
``PYTHONPATH`` pointing at the copy, and restores the file.

    python scripts/mutation_check.py --jobs 2            # everything, two at a time, each in its own copy
                                                         # (15-35 minutes on 2 CPU cores, load-dependent)
    python scripts/mutation_check.py --list              # the planted bugs, with their areas
    python scripts/mutation_check.py --only mae-decoder-pos-embed lut-ema-late
    python scripts/mutation_check.py --area robustness   # one area's bugs, each against its own tests

Exit status 0 when every mutation applied and was caught; 1 when one was missed, did not apply
(its ``old`` string is gone or ambiguous: update the entry when code moves) or the baseline
failed; 2 on bad arguments. See docs/testing.md.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# Areas, for ``--area``: the first entry whose path prefix a mutation's file starts with (an entry may
# name its area itself). Every module whose output reaches a table or a checkpoint is in one.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("alignment", ("maskalign/alignment.py", "maskalign/masking.py")),
    ("objectives", ("maskalign/objectives/",)),
    ("engine", ("maskalign/engine/",)),
    ("checkpoint", ("maskalign/checkpoint.py",)),
    ("teachers", ("maskalign/teachers/",)),
    ("encoders", ("maskalign/encoders/", "maskalign/models/", "maskalign/segmentation/timm_backbone.py",
                  "maskalign/detection/timm_backbone.py")),
    ("recipes", ("maskalign/transfer/finetune.py", "maskalign/transfer/linprobe.py", "maskalign/transfer/classifier.py",
                 "maskalign/transfer/layer_decay.py", "maskalign/transfer/lars.py", "maskalign/transfer/trainer.py")),
    ("robustness", ("maskalign/transfer/robustness.py", "maskalign/transfer/accuracy.py",
                    "maskalign/transfer/label_space.py", "maskalign/transfer/metrics.py")),
    ("data", ("maskalign/data/", "maskalign/transfer/data.py")),
    ("detection", ("maskalign/detection/", "maskalign/configs/coco/")),
    ("segmentation", ("maskalign/segmentation/", "maskalign/configs/ade20k/")),
    ("results", ("maskalign/results/", "maskalign/records.py")),
)


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    slow: bool = False  # also run the listed tests marked slow (otherwise ``-m "not slow"``)
    area: str = ""  # default: from the file, by ``AREAS``

    def __post_init__(self) -> None:
        if not self.area:
            found = next((a for a, prefixes in AREAS if self.file.startswith(prefixes)), "other")
            object.__setattr__(self, "area", found)


M = Mutation
MUTATIONS: list[Mutation] = [
    # --- alignment -------------------------------------------------------------------------------
    M("align-bn-biased-var", "maskalign/alignment.py",
      "torch.sqrt(y.var(unbiased=True) + 1e-6)", "torch.sqrt(y.var(unbiased=False) + 1e-5)",
      ("tests/test_exact_fixes.py",)),
    M("align-da-init-first-rows", "maskalign/alignment.py",
      "init = (torch.eye(student_depth) + 0.01)[self.levels]",
      "init = (torch.eye(student_depth) + 0.01)[:len(self.levels)]",
      ("tests/test_maskalign_math.py",)),
    M("align-da-mix-transposed", "maskalign/alignment.py",
      'mixed = torch.einsum("ks,sbnd->kbnd", self.weight.to(stacked.dtype), stacked)\n        return [a(m)',
      'mixed = torch.einsum("ks,sbnd->kbnd", self.weight.flip(1).to(stacked.dtype), stacked)\n        return [a(m)',
      ("tests/test_maskalign_math.py",)),
    M("align-loss-no-factor-2", "maskalign/alignment.py",
      "2.0 * F.smooth_l1_loss(p.float(), t, beta=1.0)", "F.smooth_l1_loss(p.float(), t, beta=1.0)",
      ("tests/test_maskalign_math.py",)),
    # --- masking ---------------------------------------------------------------------------------
    M("mask-visible-count-rounded", "maskalign/masking.py",
      "return int(num_patches * (1 - mask_ratio))", "return round(num_patches * (1 - mask_ratio))",
      ("tests/test_exact_masking.py",)),
    M("mask-random-same-for-batch", "maskalign/masking.py",
      "return noise.argsort(dim=1)[:, :n_keep]", "return noise[:1].argsort(dim=1)[:, :n_keep].expand(batch, -1)",
      ("tests/test_exact_masking.py",)),
    M("mask-attentive-inverted", "maskalign/masking.py",
      "torch.topk(weights / q, n_keep, dim=1)", "torch.topk(q / weights, n_keep, dim=1)",
      ("tests/test_maskalign_math.py",)),
    # --- MaskAlign objective ---------------------------------------------------------------------
    M("maskalign-target-off-by-one", "maskalign/objectives/maskalign.py",
      "idx = keep + 1  # token positions: [CLS] is 0", "idx = keep  # token positions: [CLS] is 0",
      ("tests/test_maskalign_math.py",)),
    M("maskalign-W-weight-decay", "maskalign/objectives/maskalign.py",
      'return {"da.weight"} if self.da.weight is not None else set()', "return set()",
      ("tests/test_exact_engine.py::test_optimizer_groups_and_lr_the_engine_builds",)),
    # --- MAE -------------------------------------------------------------------------------------
    M("mae-decoder-pos-embed", "maskalign/objectives/mae.py",
      "x = torch.cat([x[:, :1], full], dim=1) + self.decoder_pos_embed.to(x.dtype)",
      "x = torch.cat([x[:, :1], full], dim=1)",
      ("tests/test_exact_decoders.py",)),
    M("mae-decoder-norm-skipped", "maskalign/objectives/mae.py",
      "return self.decoder_pred(self.decoder_norm(x))[:, 1:]", "return self.decoder_pred(x)[:, 1:]",
      ("tests/test_exact_decoders.py",)),
    M("mae-loss-all-patches", "maskalign/objectives/mae.py",
      "return (per_patch * masked).sum() / masked.sum()", "return per_patch.mean()",
      ("tests/test_objectives_mae.py", "tests/test_exact_decoders.py")),
    M("mae-norm-pix-biased", "maskalign/objectives/pixels.py",
      "var = t.var(dim=-1, keepdim=True, unbiased=True)", "var = t.var(dim=-1, keepdim=True, unbiased=False)",
      ("tests/test_objectives_mae.py",)),
    M("mae-patchify-layout", "maskalign/objectives/pixels.py",
      "return x.permute(0, 2, 4, 3, 5, 1)", "return x.permute(0, 2, 4, 5, 3, 1)",
      ("tests/test_objectives_mae.py",)),
    # --- CrossMAE --------------------------------------------------------------------------------
    M("crossmae-first-fused-map-everywhere", "maskalign/objectives/crossmae.py",
      "x = blk(x, self.dec_norms[j](fused[..., j]))", "x = blk(x, self.dec_norms[j](fused[..., 0]))",
      ("tests/test_exact_decoders.py",)),
    M("crossmae-queries-without-pos", "maskalign/objectives/crossmae.py",
      "return self.mask_token + pos[pred_idx]", "return self.mask_token + 0 * pos[pred_idx]",
      ("tests/test_exact_decoders.py",)),
    M("crossmae-lr-ratio-inverted", "maskalign/objectives/crossmae.py",
      "return self.kept_mask_ratio / self.mask_ratio", "return self.mask_ratio / self.kept_mask_ratio",
      ("tests/test_objectives_crossmae.py",)),
    # --- LUT -------------------------------------------------------------------------------------
    M("lut-ema-formula-swapped", "maskalign/objectives/lut.py",
      "e.mul_(momentum).add_(s.to(e.dtype), alpha=1.0 - momentum)",
      "e.mul_(1.0 - momentum).add_(s.to(e.dtype), alpha=momentum)",
      ("tests/test_objectives_lut.py",)),
    M("lut-momentum-cosine-sign", "maskalign/objectives/lut.py",
      "(1.0 + math.cos(math.pi * progress)) / 2.0", "(1.0 - math.cos(math.pi * progress)) / 2.0",
      ("tests/test_exact_engine.py",)),
    M("lut-bc-same-view", "maskalign/objectives/lut.py",
      "bc = 0.5 * (bc_loss(q1, t2) + bc_loss(q2, t1))", "bc = 0.5 * (bc_loss(q1, t1) + bc_loss(q2, t2))",
      ("tests/test_exact_decoders.py",)),
    M("lut-visible-sets-overlap", "maskalign/objectives/lut.py",
      "return ids[:, :n], ids[:, n:2 * n]", "return ids[:, :n], ids[:, n // 2:n + n // 2]",
      ("tests/test_objectives_lut.py",)),
    # --- engine: EMA index, optimizer groups, lr -------------------------------------------------
    M("engine-ema-momentum-one-late", "maskalign/engine/pretrain.py",
      "objective.after_optimizer_step((epoch * iters + it) / total_iters)",
      "objective.after_optimizer_step((epoch * iters + it + 1) / total_iters)",
      ("tests/test_exact_engine.py",)),
    M("engine-ema-not-restored", "maskalign/engine/pretrain.py",
      'missing, unexpected = objective.load_state_dict(ckpt["model"], strict=False)',
      'missing, unexpected = objective.load_state_dict({k: v for k, v in ckpt["model"].items() '
      'if not k.startswith("ema.")}, strict=False)\n        missing = [k for k in missing if not k.startswith("ema.")]',
      ("tests/test_exact_engine.py::test_lut_ema_is_restored_by_a_real_resume",)),
    M("optim-norms-decayed", "maskalign/engine/optim.py",
      'if p.ndim <= 1 or name.endswith(".bias") or name in skip:', 'if name.endswith(".bias") or name in skip:',
      ("tests/test_exact_engine.py::test_optimizer_groups_and_lr_the_engine_builds",)),
    M("optim-sqrt-rule", "maskalign/engine/optim.py",
      "return blr * math.sqrt(total_batch) / 4", "return blr * math.sqrt(total_batch) / 8",
      ("tests/test_exact_engine.py::test_optimizer_groups_and_lr_the_engine_builds",)),
    M("optim-cosine-quarter", "maskalign/engine/optim.py",
      "0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))", "0.5 * (1.0 + math.cos(0.5 * math.pi * min(t, 1.0)))",
      ("tests/test_exact_engine.py::test_optimizer_groups_and_lr_the_engine_builds",)),
    # --- checkpoint export and conversion --------------------------------------------------------
    M("ckpt-no-full-model-sidecar", "maskalign/checkpoint.py",
      'atomic_write_text((out / FULL_MODEL).with_suffix(".json"),',
      'atomic_write_text((out / FULL_MODEL).with_suffix(".meta.json"),',
      ("tests/test_exact_fixes.py",)),
    M("ckpt-guess-heads-64", "maskalign/checkpoint.py",
      '"num_heads": standard_num_heads(dim, source)', '"num_heads": max(1, dim // 64)',
      ("tests/test_exact_fixes.py",)),
    M("ckpt-encoder-prefix-kept", "maskalign/checkpoint.py",
      'state = _strip(state, ("module.", "encoder.", "backbone."))', 'state = _strip(state, ("module.", "backbone."))',
      ("tests/test_checkpoint_encoder_state.py", "tests/test_transfer_loading.py")),
    M("d2-norms-swapped", "maskalign/detection/convert.py",
      "out[prefix + key] = value.detach().clone().contiguous()",
      'out[prefix + (key.replace(".norm1.", ".norm2.") if ".norm1." in key else key.replace(".norm2.", ".norm1."))]'
      " = value.detach().clone().contiguous()",
      ("tests/test_exact_conversions.py::test_vitdet_b_at_1024_px_equals_the_reference",), slow=True),
    M("mmseg-norms-swapped", "maskalign/segmentation/convert.py",
      '"norm1.weight": "ln1.weight", "norm1.bias": "ln1.bias",\n'
      '    "norm2.weight": "ln2.weight", "norm2.bias": "ln2.bias",',
      '"norm1.weight": "ln2.weight", "norm1.bias": "ln2.bias",\n'
      '    "norm2.weight": "ln1.weight", "norm2.bias": "ln1.bias",',
      ("tests/test_ade20k_convert.py",)),
    M("pos-embed-bilinear", "maskalign/models/pos_embed.py",
      'grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)',
      'grid = F.interpolate(grid, size=tuple(new_grid), mode="bilinear", align_corners=False)',
      ("tests/test_exact_conversions.py::test_mmseg_backbone_through_the_job_init_path_at_512_px",), slow=True),
    # --- teachers ------------------------------------------------------------------------------------
    M("teacher-attn-scale", "maskalign/teachers/base.py",
      "attn = (q.float() @ k.float().transpose(-2, -1)) * hd ** -0.5",
      "attn = (q.float() @ k.float().transpose(-2, -1)) * d ** -0.5",
      ("tests/test_exact_teachers.py::test_timm_dino_teacher_equals_timm",), slow=True),
    M("teacher-clip-gets-imagenet-norm", "maskalign/teachers/base.py",
      "x = (x - self._mean) / self._std", "x = (x - self._in_mean) / self._in_std",
      ("tests/test_exact_teachers.py::test_open_clip_vit_b16_teacher_equals_open_clip",), slow=True),
    # --- layer decay -----------------------------------------------------------------------------
    M("layer-decay-exponent", "maskalign/transfer/layer_decay.py",
      '"lr_scale": layer_decay ** (depth + 1 - lid)', '"lr_scale": layer_decay ** (depth - lid)',
      ("tests/test_exact_recipes.py",)),
    # --- metrics ---------------------------------------------------------------------------------
    M("top1-counts-top2", "maskalign/transfer/metrics.py",
      "hit[:, :min(k, kmax)].any(dim=1).sum()", "hit[:, :min(k + 1, kmax)].any(dim=1).sum()",
      ("tests/test_robustness_lists.py",)),
    M("mce-wrong-mean", "maskalign/transfer/metrics.py",
      "return 100.0 * (sum(errors) / len(errors)) / ALEXNET_ERR[corruption]",
      "return 100.0 * (sum(errors) / (len(errors) - 1)) / ALEXNET_ERR[corruption]",
      ("tests/test_robustness_lists.py",)),
    M("ap-box-mask-swapped", "maskalign/detection/evaluate.py",
      '_TASKS = {"bbox": "box", "segm": "mask"}', '_TASKS = {"bbox": "mask", "segm": "box"}',
      ("tests/test_coco_eval.py",)),
    M("miou-macc-swapped", "maskalign/segmentation/train.py",
      'names = {"mIoU": Metric.MIOU, "aAcc": Metric.AACC, "mAcc": Metric.MACC}',
      'names = {"mIoU": Metric.MACC, "aAcc": Metric.AACC, "mAcc": Metric.MIOU}',
      ("tests/test_ade20k_eval.py",)),
    # --- encoders and dense wrappers (round two) ---------------------------------------------------
    M("dense-norm-pre-skipped", "maskalign/encoders/dense.py",
      "return m.norm_pre(m.patch_drop(x))", "return m.patch_drop(x)",
      ("tests/test_dense_prenorm_and_pos_tables.py",)),
    M("dense-final-norm-skipped", "maskalign/encoders/dense.py",
      "y = self.model.norm(x) if i == last else x", "y = x",
      ("tests/test_dense_prenorm_and_pos_tables.py", "tests/test_encoders_dense.py")),
    M("dense-windows-without-prefix", "maskalign/encoders/dense.py",
      "seq = torch.cat([prefix.repeat_interleave(n_win, dim=0), windows], dim=1)",
      "seq = torch.cat([torch.zeros_like(prefix).repeat_interleave(n_win, dim=0), windows], dim=1)",
      ("tests/test_dense_prenorm_and_pos_tables.py",)),
    M("pos-table-mae-resize-every-family", "maskalign/encoders/convert.py",
      "if mae_interpolation and pe is not None and pe.shape != model.pos_embed.shape:",
      "if pe is not None and pe.shape != model.pos_embed.shape:",
      ("tests/test_dense_prenorm_and_pos_tables.py",)),
    M("pos-table-mae-for-clip-layout", "maskalign/encoders/load.py",
      'return (family == "vit" and pe is not None and "cls_token" in state',
      'return (pe is not None and "cls_token" in state',
      ("tests/test_dense_prenorm_and_pos_tables.py",)),
    M("families-pre-norm-ignored", "maskalign/encoders/families.py",
      'pre_norm="norm_pre.weight" in state,', "pre_norm=False,",
      ("tests/test_encoders_families.py",)),
    M("mmseg-wrapper-last-map-only", "maskalign/segmentation/timm_backbone.py",
      'object.__setattr__(self, "_dense", DenseViT(model, 0, (), out_indices))',
      'object.__setattr__(self, "_dense", DenseViT(model, 0, (), [-1] * len(out_indices)))',
      ("tests/test_dense_prenorm_and_pos_tables.py",)),
    M("d2-wrapper-globals-inverted", "maskalign/detection/timm_backbone.py",
      "globals_ = [i for i in range(depth) if i not in set(window_block_indexes)]",
      "globals_ = list(window_block_indexes)",
      ("tests/test_vitdet_globals_for_depth.py", "tests/test_encoders_dense.py")),
    # --- fine-tune and linear-probe recipes -------------------------------------------------------
    M("finetune-switch-prob", "maskalign/transfer/finetune.py",
      "switch_prob=aug.mixup_switch_prob,", "switch_prob=aug.mixup_prob,",
      ("tests/test_finetune_recipe_objects.py",)),
    M("finetune-mixup-without-smoothing", "maskalign/transfer/finetune.py",
      "label_smoothing=aug.smoothing,", "label_smoothing=0.0,",
      ("tests/test_finetune_recipe_objects.py",)),
    M("finetune-alphas-swapped", "maskalign/transfer/finetune.py",
      "mix = Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix,",
      "mix = Mixup(mixup_alpha=aug.cutmix, cutmix_alpha=aug.mixup,",
      ("tests/test_finetune_recipe_objects.py",)),
    M("finetune-no-drop-path", "maskalign/transfer/classifier.py",
      "drop_path_rate=drop_path, **_pool(source.arch, global_pool))",
      "drop_path_rate=0.0, **_pool(source.arch, global_pool))",
      ("tests/test_finetune_recipe_objects.py",)),
    M("finetune-blr-not-scaled", "maskalign/transfer/finetune.py",
      "lr = scaled_lr(float(cfg.optim.blr), int(cfg.optim.total_batch_size))", "lr = float(cfg.optim.blr)",
      ("tests/test_finetune_recipe_objects.py",)),
    M("finetune-layer-decay-off", "maskalign/transfer/finetune.py",
      "groups = param_groups_lrd(model, float(cfg.optim.weight_decay), float(cfg.optim.layer_decay))",
      "groups = param_groups_lrd(model, float(cfg.optim.weight_decay), 1.0)",
      ("tests/test_finetune_recipe_objects.py",)),
    M("linprobe-smoothed-loss", "maskalign/transfer/linprobe.py",
      "nn.CrossEntropyLoss(), tl", "nn.CrossEntropyLoss(label_smoothing=0.1), tl",
      ("tests/test_finetune_recipe_objects.py",)),
    M("linprobe-fresh-final-norm", "maskalign/transfer/classifier.py",
      "    _check_final_norm(source, global_pool)\n", "",
      ("tests/test_linprobe_final_norm.py",)),
    M("linprobe-bn-affine", "maskalign/transfer/classifier.py",
      "nn.BatchNorm1d(head.in_features, affine=False, eps=1e-6)", "nn.BatchNorm1d(head.in_features, eps=1e-6)",
      ("tests/test_linprobe_parts.py",)),
    M("layer-decay-norm-pre-on-top", "maskalign/transfer/layer_decay.py",
      '"reg_token", "dist_token", "norm_pre")', '"reg_token", "dist_token")',
      ("tests/test_encoders_classifier.py",)),
    M("lars-trust-inverted", "maskalign/transfer/lars.py",
      'group["trust_coefficient"] * w_norm / u_norm', 'group["trust_coefficient"] * u_norm / w_norm',
      ("tests/test_linprobe_parts.py",)),
    # --- robustness --------------------------------------------------------------------------------
    M("robustness-in-c-top5", "maskalign/transfer/robustness.py",
      "for (c, s), (top1, _, n) in zip(groups, counts.tolist()):",
      "for (c, s), (_, top1, n) in zip(groups, counts.tolist()):",
      ("tests/test_robustness_oracle.py",)),
    M("robustness-subsets-all-logits", "maskalign/transfer/robustness.py",
      "stats = score(folder_dataset(path, c2i, transform, bench.title), indices)",
      "stats = score(folder_dataset(path, c2i, transform, bench.title), None)",
      ("tests/test_robustness_oracle.py",)),
    M("robustness-head-reported-dropped", "maskalign/transfer/robustness.py",
      "source = _as_evaluated(load_pretrained(ckpt), model)", "source = load_pretrained(ckpt)",
      ("tests/test_robustness_oracle.py",)),
    M("robustness-crop-not-the-classifiers", "maskalign/transfer/robustness.py",
      'else saved.get("crop_pct", 0.875))', "else 0.875)",
      ("tests/test_robustness_oracle.py",)),
    M("evaluate-groups-top2-as-top1", "maskalign/transfer/accuracy.py",
      "rows = torch.stack([hit[:, :1].any(1),", "rows = torch.stack([hit[:, :2].any(1),",
      ("tests/test_robustness_oracle.py",)),
    M("label-space-subset-targets-global", "maskalign/transfer/label_space.py",
      "return {w: i for i, w in enumerate(self.subset_wnids(subset))}",
      "return {w: self.class_to_idx()[w] for w in self.subset_wnids(subset)}",
      ("tests/test_robustness_oracle.py",)),
    # --- data path -----------------------------------------------------------------------------------
    M("image-folder-string-sorted", "maskalign/data/imagenet.py",
      "self._fixed_classes = class_to_idx", "self._fixed_classes = None",
      ("tests/test_robustness_oracle.py",)),
    M("eval-resize-rounded", "maskalign/data/transforms.py",
      "T.Resize(int(img_size / crop_pct),", "T.Resize(int(round(img_size / crop_pct)),",
      ("tests/test_finetune_recipe_objects.py",)),
    M("gpu-augment-default-scale", "maskalign/data/decode.py",
      "self.augment = GpuAugment(recipe.img_size, scale=(recipe.scale_min, 1.0), device=device,",
      "self.augment = GpuAugment(recipe.img_size, device=device,",
      ("tests/test_gpu_augment_recipe_scale.py",)),
    M("linprobe-device-scale-0.2", "maskalign/transfer/data.py",
      "transform.device_recipe = DeviceRecipe(img_size, 0.08, mean=",
      "transform.device_recipe = DeviceRecipe(img_size, 0.2, mean=",
      ("tests/test_gpu_augment_recipe_scale.py",)),
    M("gpu-flip-inverted", "maskalign/data/gpu_decode.py",
      "flip = bool(torch.rand(1) < self.hflip)", "flip = bool(torch.rand(1) >= self.hflip)",
      ("tests/test_gpu_augment_recipe_scale.py",)),
    M("keyed-seed-ignores-epoch", "maskalign/data/keyed.py",
      "int(epoch) * 0xBF58476D1CE4E5B9", "0 * 0xBF58476D1CE4E5B9",
      ("tests/test_resume_skip_and_epoch_seeds.py",)),
    M("resume-skip-in-iterations", "maskalign/engine/pretrain.py",
      "sampler.set_epoch(epoch, skip * per_proc)", "sampler.set_epoch(epoch, skip)",
      ("tests/test_resume_skip_and_epoch_seeds.py::test_mid_epoch_resume_sees_each_remaining_image_once",),
      area="data"),
    M("pretrain-crop-scale-ignored", "maskalign/data/transforms.py",
      "T.RandomResizedCrop(img_size, scale=(scale_min, 1.0),", "T.RandomResizedCrop(img_size, scale=(0.2, 1.0),",
      ("tests/test_gpu_augment_recipe_scale.py",)),
    # --- detection and segmentation configs ----------------------------------------------------------
    M("vitdet-globals-first-of-quarter", "maskalign/detection/configs.py",
      "net.window_block_indexes = [i for i in range(depth) if (i + 1) % step != 0]",
      "net.window_block_indexes = [i for i in range(depth) if i % step != 0]",
      ("tests/test_vitdet_globals_for_depth.py",)),
    M("vitdet-lr-decay-old-depth", "maskalign/detection/configs.py",
      '**{**lr_func.keywords, "num_layers": depth}', "**lr_func.keywords",
      ("tests/test_vitdet_globals_for_depth.py",)),
    M("ade20k-norm-pre-on-top", "maskalign/segmentation/layer_decay.py",
      '_STEM_MODULES = ("patch_embed.", "norm_pre.")', '_STEM_MODULES = ("patch_embed.",)',
      ("tests/test_ade20k_optim_families.py",)),
    M("ade20k-reg-token-on-top", "maskalign/segmentation/layer_decay.py",
      '_EMBED = ("cls_token", "mask_token", "pos_embed", "reg_token", "dist_token")',
      '_EMBED = ("cls_token", "mask_token", "pos_embed")',
      ("tests/test_ade20k_optim_families.py",)),
    M("ade20k-paper-layer-decay", "maskalign/configs/ade20k/upernet_vit_b16_ade20k_512_160k.py",
      "paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.65))",
      "paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.75))",
      ("tests/test_ade20k_optim.py",)),
    # --- tables ----------------------------------------------------------------------------------
    M("tables-oldest-record", "maskalign/results/tables.py",
      "newest = group.iloc[-1]", "newest = group.iloc[0]",
      ("tests/test_results_tables.py",)),
    M("fmt-percent-one-decimal-always", "maskalign/results/fmt.py",
      'return f"{round(p)}%"', 'return f"{p:.1f}%"',
      ("tests/test_results_tables.py", "tests/test_results_reference.py")),
    M("collect-end-time-lost", "maskalign/results/collect.py",
      '"end_time": r.end_time,', '"end_time": None,',
      ("tests/test_results_tables.py",)),
    M("tables-time-inverted", "maskalign/results/tables.py",
      '"Time": c / b if c is not None and b else None', '"Time": b / c if c else None',
      ("tests/test_results_tables.py",)),
    # --- frozen-feature protocols and dense families ----------------------------------------------
    M("knn-vote-no-temperature", "maskalign/transfer/knn.py",
      "weights = (sims / temperature).exp()", "weights = sims.exp()", ("tests/test_frozen_protocols.py",)),
    M("knn-boundary-tie-arbitrary", "maskalign/transfer/knn.py",
      "if bool(crowded.any()):", "if False:", ("tests/test_frozen_protocols.py",)),
    M("grid-sgd-no-momentum", "maskalign/transfer/linear_grid.py",
      "buf.mul_(self.momentum).add_(p.grad)", "buf.add_(p.grad)", ("tests/test_frozen_protocols.py",)),
    M("attentive-no-token-norm", "maskalign/transfer/attentive.py",
      "q = q + self.xattn(q, self.norm1(tokens))", "q = q + self.xattn(q, tokens)",
      ("tests/test_frozen_protocols.py",)),
    M("vitdet-patch14-align-corners", "maskalign/detection/timm_backbone.py",
      'mode="bilinear", align_corners=False)', 'mode="bilinear", align_corners=True)',
      ("tests/test_dense_families.py",)),
    M("beit-window-table-from-dense-grid", "maskalign/encoders/dense.py",
      'if loaded.family != "beit" or not window:', "if True:", ("tests/test_dense_families.py",)),
]


def repo_files(repo: Path) -> list[str]:
    """What ``git ls-files`` lists: tracked files plus untracked ones that are not ignored."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=repo, check=True, capture_output=True).stdout
    return sorted({f for f in out.decode().split("\0") if f and (repo / f).is_file()})


def copy_repo(repo: Path, dest: Path) -> None:
    for rel in repo_files(repo):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target)


def check_applies(m: Mutation, root: Path) -> str | None:
    """None if ``old`` occurs exactly once in ``file`` (and differs from ``new``), else why not."""
    path = root / m.file
    if not path.is_file():
        return f"{m.file}: no such file"
    n = path.read_text(encoding="utf-8").count(m.old)
    if n != 1:
        return f"{m.file}: the old string occurs {n} times (must be exactly once): {m.old[:70]!r}"
    if m.old == m.new:
        return "old and new strings are equal"
    return None


def run_tests(root: Path, tests: list[str], slow: bool, timeout: float) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    # Reuse the checkout's demo world (tests/conftest.py's default place) rather than build one in the copy.
    env.setdefault("MASKALIGN_DEMO_ROOT", str(REPO / "output" / "test_demo_world"))
    # One thread per run: on a shared small machine oversubscribed OpenMP threads slow it many-fold.
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    if not slow:
        cmd += ["-m", "not slow"]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        return p.returncode, p.stdout + p.stderr, time.time() - t0
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s", time.time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="ID", help="run only these mutations")
    ap.add_argument("--area", nargs="+", metavar="AREA",
                    help="run only these areas' mutations, each against its own tests "
                         f"({', '.join(a for a, _ in AREAS)})")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--skip-baseline", action="store_true", help="do not run the unmutated tests first")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per test run (default 600)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="mutations run at once, each in its own copy (2 on 2 cores halves the time; default 1)")
    args = ap.parse_args(argv)

    ids = [m.id for m in MUTATIONS]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        print(f"error: duplicate mutation ids {dupes}", file=sys.stderr)
        return 2
    chosen = MUTATIONS
    if args.only:
        unknown = sorted(set(args.only) - set(ids))
        if unknown:
            print(f"error: unknown mutation ids {unknown}; see --list", file=sys.stderr)
            return 2
        chosen = [m for m in MUTATIONS if m.id in args.only]
    if args.area:
        known = {m.area for m in MUTATIONS}
        unknown = sorted(set(args.area) - known)
        if unknown:
            print(f"error: unknown areas {unknown}; known: {sorted(known)}", file=sys.stderr)
            return 2
        chosen = [m for m in chosen if m.area in args.area]
    if args.list:
        for m in chosen:
            print(f"{m.area:12s} {m.id:38s} {m.file:40s} {' '.join(m.tests)}{'  [slow]' if m.slow else ''}")
        return 0

    t_start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="mutation_check_"))
    roots = [tmp / f"repo{i}" if i else tmp / "repo" for i in range(max(1, args.jobs))]
    for r in roots:  # one copy per parallel run: a mutation is planted in its own copy only
        copy_repo(REPO, r)
    root = roots[0]
    print(f"copied {len(repo_files(REPO))} files to {', '.join(map(str, roots))}", flush=True)
    failures = 0
    try:
        bad = [(m, why) for m in chosen if (why := check_applies(m, root))]
        for m, why in bad:
            print(f"NOT APPLIED {m.id}: {why}", flush=True)
        failures += len(bad)
        if not args.skip_baseline:
            fast = sorted({t for m in chosen if not m.slow for t in m.tests})
            slow = sorted({t for m in chosen if m.slow for t in m.tests})
            runs = [(tests, with_slow) for tests, with_slow in ((fast, False), (slow, True)) if tests]
            with ThreadPoolExecutor(max_workers=len(roots)) as pool:  # both at once when --jobs allows
                done = list(pool.map(lambda ij: run_tests(roots[ij[0] % len(roots)], ij[1][0], ij[1][1], args.timeout),
                                     enumerate(runs)))
            for (tests, with_slow), (rc, out, dt) in zip(runs, done):
                print(f"baseline ({len(tests)} test targets{', slow included' if with_slow else ''}): "
                      f"{'pass' if rc == 0 else f'FAIL (rc {rc})'} in {dt:.0f} s", flush=True)
                if rc != 0:
                    print(out[-3000:])
                    print("error: the unmutated tests fail; a mutation check would mean nothing", file=sys.stderr)
                    return 1
        free: queue.Queue[Path] = queue.Queue()
        for r in roots:
            free.put(r)

        def plant_and_run(m: Mutation) -> tuple[int, str, float]:
            where = free.get()
            path = where / m.file
            original = path.read_text(encoding="utf-8")
            path.write_text(original.replace(m.old, m.new), encoding="utf-8")
            try:
                return run_tests(where, list(m.tests), m.slow, args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
                free.put(where)

        results = []
        todo = [m for m in chosen if not any(m is b for b, _ in bad)]
        with ThreadPoolExecutor(max_workers=len(roots)) as pool:
            futures = {pool.submit(plant_and_run, m): m for m in todo}
            for fut in as_completed(futures):
                m = futures[fut]
                rc, out, dt = fut.result()
                # pytest: 1 = tests failed (caught); 0 = all passed (missed); anything else is an error
                # (collection error, no tests selected, timeout) and is not counted as caught.
                status = {0: "MISSED", 1: "caught"}.get(rc, f"ERROR (rc {rc})")
                results.append((m, status, dt))
                print(f"{status:8s} {m.area:12s} {m.id:38s} {dt:6.1f} s", flush=True)
                if status != "caught":
                    failures += 1
                    print("    " + "\n    ".join(out.strip().splitlines()[-8:]))
        caught = sum(1 for _, s, _ in results if s == "caught")
        total = len(chosen)
        for area in sorted({m.area for m in chosen}):
            of_area = [r for r in results if r[0].area == area]
            n_caught = sum(1 for _, s, _ in of_area if s == "caught")
            print(f"  {area:12s} {n_caught}/{sum(1 for m in chosen if m.area == area)} caught")
        print(f"\n{caught}/{total} planted bugs caught ({100.0 * caught / max(total, 1):.0f}%), "
              f"{len(bad)} not applied, in {time.time() - t_start:.0f} s")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
