"""The paper's Table 7 measured side by side: one pre-training step of each objective.

    python bench/pretrain_speed.py --size base                 # ViT-B/16 at 224 under CLIP-B/16 (GPU)
    python bench/pretrain_speed.py --size tiny --batch 8       # a CPU-sized run

Every objective (MaskAlign, FD, MAE, CrossMAE, LUT, and a MILAN-style decoder with teacher
targets) is built through ``maskalign.objectives.build_objective`` at the same student size,
batch and resolution, with randomly initialised teachers of the right shape (speed does not
depend on weights; nothing is downloaded), and timed in one process, round-robin over the
objectives for several rounds so that machine drift cancels. A step is what the engine does:
autocast (bf16 on CUDA), forward, backward, AdamW step (fused on CUDA), ``zero_grad``.

Per objective it reports seconds per iteration (median over rounds), images/s, the FLOPs of one
step per image counted with ``torch.utils.flop_counter.FlopCounterMode`` (forward and backward;
the teacher's forward separately), the share of the step spent inside the teacher (timed with
hooks on the teacher's modules: CUDA events on a GPU, so the step is never synchronised), the
peak memory of the step (its parameters, gradients, optimizer state and activations; CUDA's peak
allocation on a GPU, torch's ``MemTracker`` on CPU) and what the step adds over the resident state, \
and on a GPU the model FLOPs utilisation against ``--peak-tflops``.

Writes ``speed.csv`` and ``summary.json`` into ``--out``; with ``--record`` (default: only for the
Table 7 setting, ViT-B at 224) also one ``speed`` record per objective in ``<out>/<method>/``,
which ``results/make_tables.py`` turns into Table 7 (time normalised to MaskAlign at the
paper's epochs of each method).
"""

from __future__ import annotations

import argparse
import csv
import gc
import importlib
import json
import math
import os
import statistics
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Speed does not depend on weights: never reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import flop_counter as _fc
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakIdKeyDictionary

from maskalign.amp import autocast

# Pre-training epochs of each method in the paper's comparison (Table 7 and the methods' own recipes).
PAPER_EPOCHS = {"maskalign": 200, "fd": 300, "mae": 1600, "crossmae": 800, "lut": 1600, "milan": 400}
# Table 7 row keys (maskalign/results/paper_reference/table7.csv); the others become extra rows.
TABLE7_ROW = {"maskalign": "maskalign", "fd": "fd-clip", "mae": "mae", "crossmae": "crossmae", "lut": "lut",
              "milan": "milan-like"}

# Student arch and a teacher of the student's shape (CLIP-B/16 at base, as in the paper).
SIZES = {
    "tiny": ("vit_tiny", ["teacher.backend=timm", "teacher.name=vit_tiny_patch16_224", "teacher.label=ViT-Ti/16"]),
    "small": ("vit_small", ["teacher.backend=open_clip", "teacher.name=ViT-S-16", "teacher.label=CLIP-S/16"]),
    "base": ("vit_base", ["teacher.backend=open_clip", "teacher.name=ViT-B-16", "teacher.label=CLIP-B/16"]),
    "large": ("vit_large", ["teacher.backend=open_clip", "teacher.name=ViT-B-16", "teacher.label=CLIP-B/16"]),
}
TEACHERS = {
    "clip-b16": ["teacher.backend=open_clip", "teacher.name=ViT-B-16", "teacher.label=CLIP-B/16"],
    "clip-s16": ["teacher.backend=open_clip", "teacher.name=ViT-S-16", "teacher.label=CLIP-S/16"],
    "vit-ti16": ["teacher.backend=timm", "teacher.name=vit_tiny_patch16_224", "teacher.label=ViT-Ti/16"],
    "vit-s16": ["teacher.backend=timm", "teacher.name=vit_small_patch16_224", "teacher.label=ViT-S/16"],
    "vit-b16": ["teacher.backend=timm", "teacher.name=vit_base_patch16_224", "teacher.label=ViT-B/16"],
}


@dataclass
class MethodSpec:
    key: str             # our id: maskalign, fd, mae, crossmae, lut, milan
    label: str
    config: str          # the method's paper-recipe experiment file in maskalign/configs/pretrain
    registry: str        # name in maskalign.objectives.OBJECTIVES ("" = built here)
    teacher: bool        # needs the frozen pretrained-style teacher
    overrides: list[str] = field(default_factory=list)


def registered_methods() -> list[MethodSpec]:
    """Every method id a registered objective declares a paper recipe for (``Objective.recipes``:
    MaskAlign declares FD too, as MaskAlign at mask ratio 0), in registration order, then the
    MILAN-style cost model built here. Each is built from its own ViT-B/16 recipe file (decoder
    sizes, mask ratios, drop path as in the paper's runs); only the student size, resolution and
    teacher are overridden."""
    from maskalign.objectives import OBJECTIVES

    specs = [MethodSpec(key, cls.method_labels().get(key, key), recipe, name, cls.uses_teacher)
             for name, cls in OBJECTIVES.items() for key, recipe in cls.recipes.items()]
    # A cost model of MILAN's decoder-style distillation, built here (not in the registry).
    specs.append(MethodSpec("milan", "MILAN-like", "maskalign_vitb16_clipb16_200ep", "", True,
                            ["student.drop_path=0.0"]))
    return specs


METHODS = registered_methods()


# --- FLOP counting ------------------------------------------------------------------------------
def _sdpa_cpu_fwd(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return _fc.sdpa_flop_count(q, k, v)


def _sdpa_cpu_bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return _fc.sdpa_backward_flop_count(grad_out, q, k, v)


def _native_mha(query, key, value, embed_dim, num_heads, *args, out_shape=None, **kwargs) -> int:
    """``nn.MultiheadAttention``'s inference fast path (one fused op): in-projections of q, k, v,
    attention, out-projection. Shapes are (B, L, D) there."""
    b, nq, d = query
    nk = key[1]
    return 2 * b * (nq + 2 * nk) * d * d + 2 * 2 * b * nq * nk * d + 2 * b * nq * d * d


def _extra_flop_formulas() -> dict[Any, Any]:
    """Kernels ``FlopCounterMode`` does not know, which it would count as 0: the CPU flash attention
    and ``nn.MultiheadAttention``'s fused inference path (open_clip teachers in eval/no_grad
    without autocast, an even number of heads)."""
    aten = torch.ops.aten
    out: dict[Any, Any] = {}
    if hasattr(aten, "_native_multi_head_attention"):
        out[aten._native_multi_head_attention] = _native_mha
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        out[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_fwd
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        out[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_cpu_bwd
    return out


def flop_counter() -> FlopCounterMode:
    """``FlopCounterMode`` (a multiply-add = 2 FLOPs) that also counts CPU fused attention."""
    return FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas())


def count_flops(fn, *args, **kwargs) -> int:
    """Total FLOPs of ``fn(*args, **kwargs)`` (matmuls, convolutions, attention)."""
    with flop_counter() as fc:
        fn(*args, **kwargs)
    return fc.get_total_flops()


# --- building the objectives --------------------------------------------------------------------
def _objective_base():
    from maskalign.objectives.base import Objective

    return Objective


class MilanLike(_objective_base()):
    """A MILAN-style cost model (not MILAN): the student encodes the visible 25% (attentive masking),
    an 8-block 512-d decoder sees all tokens (visible features + mask tokens), and predicts the
    teacher's last-layer features (LayerNorm-whitened) on the masked tokens. Only its cost matters."""

    name = "milan"

    def __init__(self, encoder, teacher, mask_ratio: float = 0.75, dec_dim: int = 512, dec_depth: int = 8,
                 dec_heads: int = 16) -> None:
        super().__init__()
        from functools import partial

        from timm.models.vision_transformer import Block

        from maskalign.models.pos_embed import sincos_2d

        self.encoder, self.teacher, self.mask_ratio = encoder, teacher, mask_ratio
        n = encoder.num_patches
        self.dec_embed = nn.Linear(encoder.embed_dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.register_buffer("dec_pos", sincos_2d(dec_dim, *encoder.grid), persistent=False)
        self.dec_blocks = nn.ModuleList(Block(dec_dim, dec_heads, 4.0, qkv_bias=True,
                                              norm_layer=partial(nn.LayerNorm, eps=1e-6))
                                        for _ in range(dec_depth))
        self.dec_norm = nn.LayerNorm(dec_dim, eps=1e-6)
        self.dec_pred = nn.Linear(dec_dim, teacher.dim)
        self.num_patches = n

    @property
    def method_id(self) -> str:
        return "milan-like"

    @property
    def forward_ratio(self) -> float:
        from maskalign.masking import num_visible

        return num_visible(self.num_patches, self.mask_ratio) / self.num_patches

    @property
    def reconstruct_ratio(self) -> float:
        return 1.0 - self.forward_ratio

    @property
    def supervision(self) -> str:
        return self.teacher.label

    def forward(self, images: torch.Tensor):
        from maskalign.masking import attentive_masking
        from maskalign.objectives.base import ObjectiveOutput

        last = self.teacher.depth - 1
        t = self.teacher(images, [last], with_attn=True)
        keep = attentive_masking(t.cls_attn, self.mask_ratio)
        b, n = keep.shape[0], self.num_patches
        x = self.dec_embed(self.encoder(images, keep))  # (B, 1+n_vis, Dd)
        full = self.mask_token.expand(b, n, -1).to(x.dtype).clone()
        full = full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x[:, 1:])
        z = torch.cat([x[:, :1], full], dim=1) + self.dec_pos.to(x.dtype)
        for blk in self.dec_blocks:
            z = blk(z)
        pred = self.dec_pred(self.dec_norm(z[:, 1:]))
        y = t.hidden[last][:, 1:].float()
        y = F.layer_norm(y, y.shape[-1:])
        masked = torch.ones(b, n, device=images.device).scatter_(1, keep, 0.0)
        err = F.mse_loss(pred.float(), y, reduction="none").mean(-1)
        loss = (err * masked).sum() / masked.sum()
        return ObjectiveOutput(loss, {})


def _load_cfg(config: str | None, overrides: list[str]):
    from maskalign.config import config_dir as shipped_configs
    from maskalign.config import load_config

    config_dir = shipped_configs("pretrain")
    if config and not (config_dir / f"{config}.yaml").is_file():
        config = None  # the recipe file is not there (yet): defaults plus the method's name
    return load_config(config, overrides, config_dir)


def build_one(spec: MethodSpec, base_overrides: list[str], teacher_overrides: list[str],
              extra: list[str]) -> tuple[nn.Module, Any]:
    """Build ``spec`` through the project's registry; raises ``LookupError`` when it is absent."""
    teacher = teacher_overrides if spec.teacher else []
    if spec.key == "milan":
        from maskalign.objectives import build_student
        from maskalign.teachers import build_teacher

        cfg = _load_cfg(spec.config, base_overrides + teacher + spec.overrides + extra)
        return MilanLike(build_student(cfg), build_teacher(cfg.teacher, cfg.student.img_size)), cfg
    from maskalign import objectives

    if spec.registry not in objectives.OBJECTIVES:
        try:  # an objective that registers itself at import time
            importlib.import_module(f"maskalign.objectives.{spec.registry}")
        except ModuleNotFoundError:
            pass
    if spec.registry not in objectives.OBJECTIVES:
        raise LookupError(f"objective {spec.registry!r} is not in maskalign.objectives yet")
    cfg = _load_cfg(spec.config, base_overrides + [f"method={spec.registry}"] + teacher + spec.overrides + extra)
    return objectives.build_objective(cfg), cfg


# --- timing helpers -----------------------------------------------------------------------------
class Clock:
    """``cuda``: CUDA events (read after one synchronisation per block, so the step never syncs);
    ``wall``: ``perf_counter``; ``cpu``: the process's CPU time (all threads), which a shared or
    oversubscribed machine disturbs far less than wall time (use it with ``--threads 1``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def mark(self):
        if self.kind == "cuda":
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.process_time() if self.kind == "cpu" else time.perf_counter()

    def seconds(self, a, b) -> float:
        if self.kind == "cuda":
            return a.elapsed_time(b) / 1000.0
        return b - a

    def sync(self) -> None:
        if self.kind == "cuda":
            torch.cuda.synchronize()


TEACHER_ATTRS = ("teacher", "ema", "model_ema", "ema_model", "teacher_model", "momentum_encoder")


def find_teacher(obj: nn.Module) -> tuple[str, nn.Module] | None:
    for name in TEACHER_ATTRS:
        m = getattr(obj, name, None)
        if isinstance(m, nn.Module):
            return name, m
    return None


class TeacherTimer:
    """Time spent inside the teacher: hooks on every module of its subtree, outermost calls only."""

    def __init__(self, teacher: nn.Module | None, clock: Clock) -> None:
        self.clock, self.depth, self.marks, self.handles = clock, 0, [], []
        self.enabled = False
        if teacher is None:
            return
        for m in teacher.modules():
            self.handles.append(m.register_forward_pre_hook(self._pre))
            self.handles.append(m.register_forward_hook(self._post))

    @torch._dynamo.disable
    def _pre(self, module, args):
        if self.enabled:
            if self.depth == 0:
                self.marks.append([self.clock.mark(), None])
            self.depth += 1

    @torch._dynamo.disable
    def _post(self, module, args, out):
        if self.enabled:
            self.depth -= 1
            if self.depth == 0:
                self.marks[-1][1] = self.clock.mark()

    def take(self) -> float:
        """Seconds recorded since the last call (call after ``clock.sync()``)."""
        s = sum(self.clock.seconds(a, b) for a, b in self.marks if b is not None)
        self.marks = []
        return s

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# --- memory -------------------------------------------------------------------------------------
class LiveTensorBytes(TorchDispatchMode):
    """Bytes of tensor storages created while active and still alive, and their peak.

    Every op's outputs are seen here; a storage is counted once (views share it) and uncounted when
    it is freed (a weak-reference finaliser on the storage, which torch keeps alive exactly as long
    as the memory). On CPU, where torch keeps no allocator statistics, this is the step's memory.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._known: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                st = t.untyped_storage()
                if st in self._known:
                    continue
                n = st.nbytes()
                self._known[st] = n
                weakref.finalize(st, self._free, n)
                self.live += n
                self.peak = max(self.peak, self.live)
        return out


def cpu_step_peak(e: Entry, device: torch.device, amp: str) -> dict[str, float]:
    """One step under ``LiveTensorBytes``: its peak over the resident state, and the total."""
    resident = state_bytes(e.obj, e.opt)
    tracker = LiveTensorBytes()
    with tracker:
        train_step(e, device, amp)
    return {"peak_mem_mb": (resident + tracker.peak) / 2**20, "act_mem_mb": tracker.peak / 2**20}


def state_bytes(obj: nn.Module, opt: torch.optim.Optimizer) -> int:
    n = sum(p.numel() * p.element_size() for p in obj.parameters())
    n += sum(b.numel() * b.element_size() for b in obj.buffers())
    n += sum(p.numel() * p.element_size() for p in obj.parameters() if p.requires_grad)  # grads
    for st in opt.state.values():
        n += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    return n


# --- the step -----------------------------------------------------------------------------------
@dataclass
class Entry:
    spec: MethodSpec
    obj: nn.Module
    opt: torch.optim.Optimizer
    images: Any
    timer: TeacherTimer
    teacher_attr: str | None
    times: list[float] = field(default_factory=list)          # seconds per iteration, one per round
    wall_times: list[float] = field(default_factory=list)     # wall seconds per iteration, one per round
    teacher_times: list[float] = field(default_factory=list)  # teacher seconds per iteration
    flops: dict[str, float] = field(default_factory=dict)
    mem: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    variant: str = ""  # "" = the run's own settings; else an A/B variant (see --variants)

    @property
    def label(self) -> str:
        return f"{self.spec.label} [{self.variant}]" if self.variant else self.spec.label


def train_step(e: Entry, device: torch.device, amp: str) -> torch.Tensor:
    """The engine's step: no host synchronisation anywhere."""
    with autocast(device, amp):
        out = e.obj(e.images)
    out.loss.backward()
    e.opt.step()
    e.opt.zero_grad(set_to_none=True)
    e.steps += 1
    e.obj.after_optimizer_step(min(e.steps / 1000.0, 1.0))
    return out.loss.detach()


def count_step_flops(e: Entry, device: torch.device, amp: str, batch: int = 2) -> dict[str, float]:
    """FLOPs of one step per image (forward, forward+backward, the teacher's forward), counted on a
    small batch of its own: every FLOP of these models is per image, so the count is linear in it."""
    ref = e.images[0] if isinstance(e.images, list) else e.images
    shape = (batch, *ref.shape[1:])
    images = [torch.randn(shape, device=device) for _ in e.images] if isinstance(e.images, list) \
        else torch.randn(shape, device=device)
    with flop_counter() as fc:
        with autocast(device, amp):
            out = e.obj(images)
        fwd = fc.get_total_flops()
        out.loss.backward()
    e.opt.zero_grad(set_to_none=True)
    total = fc.get_total_flops()
    counts = fc.get_flop_counts()
    teacher = 0
    if e.teacher_attr is not None:
        teacher = sum(counts.get(f"{type(e.obj).__name__}.{e.teacher_attr}", {}).values())
    return {"flops_per_image": total / batch, "fwd_flops_per_image": fwd / batch,
            "teacher_flops_per_image": teacher / batch}


def maybe_compile(obj: nn.Module, mode: str, compile_teacher: bool) -> None:
    """Compile in place, keeping module types and state-dict keys (no ``_orig_mod.``):

    * ``encoder``: the student's ``forward_blocks`` (which ``forward`` calls too) as one graph over
      all blocks, so it works whichever encoder method an objective calls;
    * ``blocks``: each student block (``nn.Module.compile``); blocks that differ in a Python
      constant (the drop-path rate) each get a graph, so the recompile limit is raised to the depth;
    * ``objective``: the objective's whole forward.
    ``compile_teacher`` also compiles the teacher's blocks (or LUT's EMA encoder's)."""
    import torch._dynamo.config as dcfg

    limit_name = "recompile_limit" if hasattr(dcfg, "recompile_limit") else "cache_size_limit"
    need = 8 + 2 * len(getattr(obj.encoder, "blocks", []))
    setattr(dcfg, limit_name, max(getattr(dcfg, limit_name), need))
    enc = obj.encoder
    if mode == "encoder":
        enc.forward_blocks = torch.compile(enc.forward_blocks)
    elif mode == "blocks":
        for blk in enc.blocks:
            blk.compile()
    elif mode == "objective":
        obj.compile()
    if compile_teacher:
        found = find_teacher(obj)
        if found is not None:
            for m in found[1].modules():
                if type(m).__name__ in ("Block", "ResidualAttentionBlock"):
                    m.compile()


VARIANT_PARTS = ("eager", "compile-encoder", "compile-blocks", "compile-objective", "compile-teacher",
                 "plain-attn", "fused-attn")


def parse_variant(v: str, args: argparse.Namespace) -> dict[str, Any]:
    """A variant's settings, starting from the run's own flags."""
    out = {"compile": args.compile, "compile_teacher": args.compile_teacher, "plain_attn": args.no_fused_attn}
    for part in v.split("+") if v else []:
        if part not in VARIANT_PARTS:
            raise SystemExit(f"--variants: unknown {part!r}; known: {', '.join(VARIANT_PARTS)}")
        if part == "eager":
            out["compile"], out["compile_teacher"] = "none", False
        elif part.startswith("compile-") and part != "compile-teacher":
            out["compile"] = part.split("-", 1)[1]
        elif part == "compile-teacher":
            out["compile_teacher"] = True
        else:
            out["plain_attn"] = part == "plain-attn"
    return out


# --- main ---------------------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="base", help="student size (default: base)")
    p.add_argument("--teacher", choices=["auto", *sorted(TEACHERS)], default="auto",
                   help="auto: a teacher of the student's shape (CLIP-B/16 for base, as in the paper)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--batch", type=int, default=None, help="per-step batch (default: 128 on CUDA, 4 on CPU)")
    p.add_argument("--methods", default=",".join(m.key for m in METHODS),
                   help="comma-separated subset of " + ",".join(m.key for m in METHODS))
    p.add_argument("--rounds", type=int, default=3, help="round-robin rounds over the objectives")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per objective per round "
                   "(default: 10 on CUDA, 1 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default: 3 CUDA, 1 CPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--clock", default="auto", choices=["auto", "wall", "cpu"],
                   help="what sec/iter measures: auto = CUDA events on a GPU, process CPU time on CPU")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default on CPU: 1, so CPU time = compute time on a shared machine)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "none"])
    p.add_argument("--compile", default="none", choices=["none", "encoder", "blocks", "objective"],
                   help="torch.compile the student's forward_blocks, each of its blocks, or the whole objective")
    p.add_argument("--compile-teacher", action="store_true", help="also compile the teacher's blocks")
    p.add_argument("--no-fused-attn", action="store_true", help="plain softmax attention in timm blocks")
    p.add_argument("--variants", default="",
                   help="A/B variants timed beside every objective in the same rounds, comma-separated, "
                        "each a '+'-joined set of: " + ", ".join(VARIANT_PARTS) + " (e.g. compile-encoder,"
                        "compile-encoder+compile-teacher,plain-attn)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="device bf16 dense peak for MFU (default: 989 on H100, 989 on H200, 312 on A100)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    p.add_argument("--flops-only", action="store_true",
                   help="count FLOPs only (no timing, no memory, no records): quick on any machine")
    p.add_argument("--no-memory", action="store_true", help="skip the memory pass")
    p.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                   help="extra config override for one method (or all:KEY=VALUE)")
    p.add_argument("--out", default=None, help="output folder (default: output/speed/<size>_<img>_<device>)")
    p.add_argument("--record", choices=["auto", "always", "never"], default="auto",
                   help="write one speed record per method (auto: only for ViT-B at 224, Table 7)")
    p.add_argument("--seed", type=int, default=0)
    return p


def calibrate_cpu_tflops(clock: Clock, bf16: bool, n: int = 1024) -> float:
    """The CPU's own matmul rate (fp32, or bf16 under bf16 autocast: AMX where present), measured
    with the benchmark's clock: the utilisation column on CPU is relative to it."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(3):
        reps = 4
        t0 = clock.mark()
        for _ in range(reps):
            a @ b
        dt = clock.seconds(t0, clock.mark())
        best = max(best, 2 * n ** 3 * reps / max(dt, 1e-9) / 1e12)
    return best


def default_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).upper()
    for key, tf in (("H200", 989.0), ("H100 PCIE", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("A100", 312.0),
                    ("L40S", 362.0), ("A10", 125.0),
                    ("4090", 165.0), ("B200", 2250.0)):
        if key in name:
            return tf
    return None


def main(args: argparse.Namespace) -> dict[str, Any]:
    import timm.layers

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    batch = args.batch or (128 if cuda else 4)
    iters = args.iters or (10 if cuda else 1)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    torch.manual_seed(args.seed)
    threads = args.threads or (None if cuda else 1)
    if threads:
        torch.set_num_threads(threads)
    clock_kind = "cuda" if cuda and args.clock in ("auto", "wall") else (
        "cpu" if args.clock in ("auto", "cpu") else "wall")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    arch, teacher_ov = SIZES[args.size]
    if args.teacher != "auto":
        teacher_ov = TEACHERS[args.teacher]
    base_ov = [f"student.arch={arch}", f"student.img_size={args.img_size}",
               f"student.patch_size={args.patch_size}", "runtime.compile=false"]
    teacher_ov = teacher_ov + ["teacher.pretrained=null", "teacher.input_size=null"]
    extra: dict[str, list[str]] = {}
    for s in args.set:
        who, _, kv = s.partition(":")
        extra.setdefault(who, []).append(kv)

    wanted = [k.strip() for k in args.methods.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in {m.key for m in METHODS}]
    if unknown:
        raise SystemExit(f"--methods: unknown {', '.join(unknown)}; known: {', '.join(m.key for m in METHODS)}")

    fused = timm.layers.use_fused_attn() and not args.no_fused_attn
    print(f"[speed] device {device}{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}, timm fused attention "
          f"{'on' if fused else 'OFF'}, amp {args.amp}, compile {args.compile}, clock {clock_kind}, "
          f"load avg {os.getloadavg()[0]:.1f}", flush=True)
    print(f"[speed] student {arch}/{args.patch_size} at {args.img_size}, batch {batch}, "
          f"teacher {next(o.split('=')[1] for o in teacher_ov if o.startswith('teacher.name'))} (random init), "
          f"{args.rounds} rounds x {iters} iters, warm-up {warmup}", flush=True)

    from maskalign.engine.optim import build_adamw, param_groups

    entries: list[Entry] = []
    notes: list[str] = []
    clock = Clock(clock_kind)
    variants = [""] + [v.strip() for v in args.variants.split(",") if v.strip()]
    settings = {v: parse_variant(v, args) for v in variants}
    todo = [(spec, v) for spec in METHODS if spec.key in wanted for v in variants]
    for spec, variant in todo:
        if variant and not any(e.spec is spec and not e.variant for e in entries):
            continue  # the objective itself could not be built
        try:
            obj, _cfg = build_one(spec, base_ov, teacher_ov, extra.get("all", []) + extra.get(spec.key, []))
        except Exception as err:  # noqa: BLE001 - one objective that cannot be built must not end the run
            why = str(err) if isinstance(err, LookupError) else f"{type(err).__name__}: {err}"
            notes.append(f"{spec.label}: skipped ({why})")
            print(f"[speed] {spec.label}: skipped ({why})", flush=True)
            continue
        obj = obj.to(device)
        obj.train()
        if settings[variant]["plain_attn"]:
            for m in obj.modules():
                if hasattr(m, "fused_attn"):
                    m.fused_attn = False
        opt = build_adamw(param_groups(obj, 0.05, obj.no_weight_decay()), 1e-4, (0.9, 0.95), device)
        nv = getattr(obj, "num_views", 1)
        shape = (batch, 3, args.img_size, args.img_size)
        images = ([torch.randn(shape, device=device) for _ in range(nv)] if nv > 1
                  else torch.randn(shape, device=device))
        found = find_teacher(obj)
        timer = TeacherTimer(found[1] if found else None, clock)
        entries.append(Entry(spec, obj, opt, images, timer, found[0] if found else None, variant=variant))

    if not entries:
        raise SystemExit("[speed] no objective could be built")

    # FLOPs (eager, before any compilation; one step each, untimed).
    if not args.no_flops:
        for e in entries:
            if not e.variant:
                e.flops = count_step_flops(e, device, args.amp)
        for e in entries:  # a variant does the same arithmetic
            if e.variant:
                e.flops = dict(next(b.flops for b in entries if b.spec is e.spec and not b.variant))
    for e in entries:
        st = settings[e.variant]
        maybe_compile(e.obj, st["compile"], st["compile_teacher"])

    if args.flops_only:
        if args.no_flops:
            raise SystemExit("--flops-only and --no-flops exclude each other")
        warmup, args.rounds, args.no_memory, args.record = 0, 0, True, "never"
    # Warm-up (compilation, cudnn autotuning, allocator growth, optimizer state creation).
    t_warm = time.perf_counter()
    for e in entries:
        for _ in range(warmup):
            train_step(e, device, args.amp)
    clock.sync()
    print(f"[speed] warm-up {time.perf_counter() - t_warm:.1f}s", flush=True)

    # Round-robin timing; the order rotates every round.
    for r in range(args.rounds):
        order = entries[r % len(entries):] + entries[:r % len(entries)]
        for e in order:
            e.timer.enabled = True
            w0, start = time.perf_counter(), clock.mark()
            for _ in range(iters):
                train_step(e, device, args.amp)
            end = clock.mark()
            e.timer.enabled = False
            clock.sync()
            e.wall_times.append((time.perf_counter() - w0) / iters)
            e.times.append(clock.seconds(start, end) / iters)
            e.teacher_times.append(e.timer.take() / iters)
        print(f"[speed] round {r + 1}/{args.rounds}: "
              + ", ".join(f"{e.label} {e.times[-1]:.3f}s" for e in entries), flush=True)

    # Memory: one more step each, measured alone. peak_mem_mb: this objective's parameters, buffers,
    # gradients, optimizer state and activations at the step's peak; act_mem_mb: what the step adds.
    if not args.no_memory:
        for e in entries:
            gc.collect()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                resident = state_bytes(e.obj, e.opt)
                train_step(e, device, args.amp)
                torch.cuda.synchronize()
                extra_b = torch.cuda.max_memory_allocated(device) - before
                e.mem = {"peak_mem_mb": (resident + extra_b) / 2**20, "act_mem_mb": extra_b / 2**20}
            else:
                e.mem = cpu_step_peak(e, device, args.amp) or {}

    for e in entries:
        e.timer.remove()

    peak_tf = args.peak_tflops or default_peak_tflops(device)
    peak_src = "given" if args.peak_tflops else "bf16 dense datasheet peak"
    if not cuda and not args.peak_tflops and not args.no_flops and not args.flops_only:
        peak_tf = calibrate_cpu_tflops(clock, args.amp == "bf16")
        peak_src = f"this CPU's measured {'bf16' if args.amp == 'bf16' else 'fp32'} 1024^3 matmul rate"
    rows = []
    for e in entries:
        timed = bool(e.times)
        spi = statistics.median(e.times) if timed else None
        tsh = statistics.median(t / s for t, s in zip(e.teacher_times, e.times)) if e.teacher_attr and timed \
            else None
        row = {
            "method": e.spec.key, "label": e.label, "variant": e.variant,
            "method_id": getattr(e.obj, "method_id", getattr(e.obj, "name", e.spec.key)),
            "sec_per_iter": spi, "sec_per_iter_min": min(e.times) if timed else None,
            "sec_per_iter_max": max(e.times) if timed else None,
            "wall_sec_per_iter": statistics.median(e.wall_times) if timed else None,
            "images_per_s": batch / spi if timed else None, "teacher_share": tsh,
            "paper_epochs": PAPER_EPOCHS.get(e.spec.key),
            **e.flops, **e.mem,
        }
        if e.flops and peak_tf and timed:
            row["achieved_tflops"] = e.flops["flops_per_image"] * batch / spi / 1e12
            row["mfu"] = row["achieved_tflops"] / peak_tf
        if row["paper_epochs"]:
            row["time_per_paper_run_rel"] = None  # filled below, relative to MaskAlign
        rows.append(row)
    base_row = next((r for r in rows if r["method"] == "maskalign" and not r["variant"]), None)
    for r in rows:
        ref = next((b for b in rows if b["method"] == "maskalign" and b["variant"] == r["variant"]), None)
        if ref and r["paper_epochs"] and r["sec_per_iter"] and ref["sec_per_iter"]:
            r["time_per_paper_run_rel"] = (r["sec_per_iter"] * r["paper_epochs"]) / (
                ref["sec_per_iter"] * ref["paper_epochs"])
        own = next((b for b in rows if b["method"] == r["method"] and not b["variant"]), None)
        if r["variant"] and own and own["sec_per_iter"] and r["sec_per_iter"]:
            r["speedup_vs_base"] = own["sec_per_iter"] / r["sec_per_iter"]

    # --- print ----------------------------------------------------------------------------------
    def fmt(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) and v is not None and not (
            isinstance(v, float) and math.isnan(v)) else "-"

    w_label = max([11] + [len(r["label"]) + 1 for r in rows])
    head = (f"{'method':<{w_label}}{'s/iter':>9}{'img/s':>9}{'GFLOP/img':>11}{'fwd GF':>9}{'teach GF':>10}"
            f"{'teach %':>9}{'act MB':>9}{'peak MB':>10}{'epochs':>8}{'time×':>7}" + ("    MFU" if peak_tf else ""))
    print("\n" + head)
    print("-" * len(head))
    for r in rows:
        line = (f"{r['label']:<{w_label}}{fmt(r['sec_per_iter'], '.4f'):>9}{fmt(r['images_per_s'], '.1f'):>9}"
                f"{fmt(r.get('flops_per_image', float('nan')) / 1e9 if 'flops_per_image' in r else None, '.2f'):>11}"
                f"{fmt(r['fwd_flops_per_image'] / 1e9 if 'fwd_flops_per_image' in r else None, '.2f'):>9}"
                f"{fmt(r['teacher_flops_per_image'] / 1e9 if 'teacher_flops_per_image' in r else None, '.2f'):>10}"
                f"{fmt(100 * r['teacher_share'] if r['teacher_share'] is not None else None, '.1f'):>9}"
                f"{fmt(r.get('act_mem_mb'), '.0f'):>9}"
                f"{fmt(r.get('peak_mem_mb'), '.0f'):>10}{fmt(r['paper_epochs'], 'd'):>8}"
                f"{fmt(r.get('time_per_paper_run_rel'), '.2f'):>7}")
        if "mfu" in r:
            line += f"  {100 * r['mfu']:5.1f}%"
        if "speedup_vs_base" in r:
            line += f"  ({r['speedup_vs_base']:.2f}x vs base)"
        print(line)
    summary: dict[str, Any] = {"rows": rows, "notes": notes}
    fd_row = next((r for r in rows if r["method"] == "fd" and not r["variant"]), None)
    print()
    if base_row and base_row["teacher_share"] is not None:
        print(f"MaskAlign teacher share of the step: {100 * base_row['teacher_share']:.1f}%")
    if base_row and fd_row and base_row.get("flops_per_image"):
        fr = fd_row["flops_per_image"] / base_row["flops_per_image"]
        summary["fd_over_maskalign_flops"] = fr
        print(f"FD / MaskAlign FLOPs per image: {fr:.2f}x; MaskAlign's teacher holds "
              f"{100 * base_row['teacher_flops_per_image'] / base_row['flops_per_image']:.1f}% of its FLOPs")
    if base_row and fd_row and base_row["sec_per_iter"]:
        ratio = fd_row["sec_per_iter"] / base_row["sec_per_iter"]
        summary["fd_over_maskalign_per_iter"] = ratio
        print(f"FD / MaskAlign per iteration: {ratio:.2f}x  (target >= 2.0x at ViT-B/16; paper, per run: "
              f"2.8x at 300 vs 200 epochs, i.e. ~1.87x per iteration)")
    for v in variants[1:]:
        m = next((r for r in rows if r["method"] == "maskalign" and r["variant"] == v), None)
        f = next((r for r in rows if r["method"] == "fd" and r["variant"] == v), None)
        if m and f and m["sec_per_iter"]:
            summary.setdefault("fd_over_maskalign_per_iter_variants", {})[v] = f["sec_per_iter"] / m["sec_per_iter"]
            print(f"FD / MaskAlign per iteration [{v}]: {f['sec_per_iter'] / m['sec_per_iter']:.2f}x")
    if peak_tf:
        print(f"MFU: counted FLOPs per second over {peak_tf:.3g} TFLOP/s, {peak_src} (forward+backward FLOPs; "
              f"attention backward counted with its recomputation)")
    for n in notes:
        print(f"note: {n}")

    # --- write ----------------------------------------------------------------------------------
    out = Path(args.out) if args.out else REPO / "output" / "speed" / f"{args.size}_{args.img_size}_{device.type}"
    out.mkdir(parents=True, exist_ok=True)
    from maskalign.atomic import atomic_write_text

    cols = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("method", "label"), k))
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(out / "speed.csv", buf.getvalue())
    setting = {"size": args.size, "student": arch, "img_size": args.img_size, "patch_size": args.patch_size,
               "batch": batch, "device": str(device), "device_name": torch.cuda.get_device_name(device) if cuda
               else "cpu", "threads": torch.get_num_threads(), "amp": args.amp, "compile": args.compile,
               "compile_teacher": args.compile_teacher, "fused_attn": fused, "clock": clock_kind, "rounds": args.rounds,
               "iters": iters, "warmup": warmup, "teacher": teacher_ov, "torch": torch.__version__,
               "paper_epochs": PAPER_EPOCHS, "peak_tflops": peak_tf, "peak_source": peak_src,
               "variants": variants[1:]}
    summary["setting"] = setting
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    write = args.record == "always" or (args.record == "auto" and args.size == "base" and args.img_size == 224)
    base_pairs = [(r, e) for r, e in zip(rows, entries) if not e.variant]
    if write:
        _write_records(out, base_pairs, setting)
    print(f"\n[speed] wrote {out / 'speed.csv'}, {out / 'summary.json'}"
          + (f" and {len(base_pairs)} speed records" if write else ""), flush=True)
    return summary


def _write_records(out: Path, pairs: list[tuple[dict, Entry]], setting: dict) -> None:
    from maskalign.labels import backbone_label
    from maskalign.records import Record, write_record

    def attr(obj, name):
        try:
            return getattr(obj, name)
        except (NotImplementedError, AttributeError):
            return None

    for r, e in pairs:
        metrics = {k: float(v) for k, v in r.items() if isinstance(v, (int, float)) and k not in ("paper_epochs",)}
        metrics.setdefault("teacher_share", 0.0)  # no teacher: none of the step is spent in one
        name = f"{setting['size']}_{setting['img_size']}_{setting['device'].split(':')[0]}"
        write_record(out / r["method"], Record(
            run_id=f"speed/{name}/{r['method']}", task="speed", method=str(r["method_id"]),
            backbone=backbone_label(setting["student"], setting["patch_size"]),
            supervision=str(attr(e.obj, "supervision") or "RGB"), forward_ratio=attr(e.obj, "forward_ratio"),
            reconstruct_ratio=attr(e.obj, "reconstruct_ratio"), pt_epochs=None,
            paper_ref={"table": "7", "row": TABLE7_ROW.get(r["method"], r["method"])},
            metrics=metrics, config={"epochs": r["paper_epochs"], **setting}))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
