"""Inference engine for the binary ResNet-18s: fused bit kernels end to end (CPU, Numba).

``engine = BinaryEngine(model)`` compiles a trained :class:`mvlib.models.resnet18.BinaryResNet18`
(ReActNet-18, Bi-RealNet-18, XNORNet-18; ``norm="bn"`` or ``"none"``; popcount,
MV, HMV or BN-folded threshold voters, per layer) into a plan; ``engine(images)``
returns the logits. Why it is fast where :func:`cuda_numba.convert_model` is
not: the converted model calls the bit kernels per layer and leaves packing,
``alpha * s``, BN, the residual add, RPReLU and the next sign to torch and to
separate passes; here each binary block is *one* kernel call
(:func:`cuda_numba.engine_kernels.block_kernel`) that reads packed bits and
writes the float residual stream and the next layer's packed bits, with
the epilogue applied per chunk of output pixels while its sums are in cache.

One layout end to end: the residual stream is float32 NHWC (one flat
buffer, updated in place by every block), every packed input is ``[B, H(+2), W(+2), NW]``
uint64 (with the zero border the direct kernel path reads in place), and all
of it is allocated once per batch size (:meth:`BinaryEngine.work_buffers`).
What stays in torch is what is real-valued and not elementwise: the stem's
3x3 convolution, the projection shortcuts' AvgPool + 1x1 convolution (their
BN is folded into the block's epilogue), global pooling and the classifier.
They are the float model's own modules, run on the memory layout the float
model gives them (probed: :meth:`BinaryEngine._probe_layouts`) and on the
caller's torch thread count, so their outputs are bit-identical to the float
model's on the same machine (checked in the tests). Both matter on some CPUs:
on an AMD EPYC, oneDNN's 1x1 convolution rounds differently on a contiguous
and on a channels-last input, and with 1 and with 2 threads.

Exactness: the integer sums are exact and every float operation of the
epilogue is the one the float simulation performs (see
:mod:`cuda_numba.engine_kernels`), so the residual stream, every sign and
the logits equal the float model's bit for bit when both run on the same machine
with the same torch thread count (``torch_threads`` other than the caller's:
the same predictions, logits that may differ in the last bits); the tests check
this on random models of awkward widths and :func:`cuda_numba.prediction_agreement`
on trained ones.

Threads: Numba's ``omp`` layer with a short spin is much faster here than the
``workqueue`` layer :mod:`mvlib.fused` selects (1.5-1.8x on 2 cores): call
:func:`configure_threads` first thing in the process (the benchmark does).
:class:`BinaryEngine` keeps ``model`` (its real-valued modules run the stem,
the shortcuts and the head) and puts it in eval mode: do not train it
afterwards; :func:`compile_engine` works on a copy.

Not supported (:class:`EngineUnsupported`, raised while :mod:`cuda_numba.engine_plan` plans the blocks):
``norm="bnfree"`` (weight standardization and branch scalings),
``binary_downsample=True`` (a binary 1x1 shortcut; use ``convert_model``), a
shortcut-only block, real weights or activations, other voters, hierarchical
voters of more than 64 leaves. ``binary_downsample="weights"`` runs (it is a
torch module).
"""
from __future__ import annotations

import time

import numba
import numpy as np
import torch
import torch.nn as nn

from .cpu_kernels import MAX_CHUNK, _chunk_size
from .engine_kernels import (F_BITS, F_HAS_BN, F_OUT_PAD, MODE_HMV, MODE_LINEAR, MODE_MV, MODE_THRESHOLD, N_FLAGS,
                             N_PARAMS, P_BN_A, P_BN_B, block_kernel, stem_kernel)
from .engine_plan import BlockPlan, EngineUnsupported, bn_affine, input_sign_terms, next_terms
from .layout import n_words


def _slices(batch: int, sub_batch: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the sub-batches of a batch: ``sub_batch`` images each, none of a single image.

    A lone image would be folded into the slice before it: on some CPUs (an AMD EPYC) torch's stem
    convolution takes another path for a batch of one than for a larger batch and differs in the last bit,
    so the engine's float parts would no longer be the float model's on that batch.
    """
    starts = list(range(0, batch, sub_batch))
    if len(starts) > 1 and batch - starts[-1] == 1:
        starts.pop()
    return [(a, starts[i + 1] if i + 1 < len(starts) else batch) for i, a in enumerate(starts)]


def _layout_of(t: torch.Tensor) -> str:
    if t.is_contiguous():
        return "nchw"
    return "cl" if t.is_contiguous(memory_format=torch.channels_last) else "other"


class BinaryEngine(nn.Module):
    """A trained binary ResNet-18 compiled for inference on fused CPU bit kernels (see the module docstring)."""

    def __init__(self, model: nn.Module, torch_threads: int | None = None, sub_batch: int = 32):
        super().__init__()
        # larger batches run in slices of sub_batch images: the residual stream of one slice (8 MiB at
        # width 64) stays in cache from block to block (measured +8 % at batch 128 over one slice of 128)
        self.sub_batch = int(sub_batch)
        # threads of the torch parts (stem conv, shortcuts, head): None = torch's own at the call, so that they
        # round as the caller's float model does. On some CPUs a torch convolution's result depends on its
        # thread count (an AMD EPYC's 1x1 convolution differs in the last bit between 1 and 2 threads), so a
        # different count keeps the predictions but not every bit. A benchmark may still ask for 1 thread at
        # small batches (faster there: the OpenMP workers of a second torch thread spin against the Numba
        # kernel that follows) and compare with the float model on 1 thread.
        self.torch_threads = torch_threads
        from mvlib.models.resnet18 import BinaryResNet18

        if not isinstance(model, BinaryResNet18):
            raise EngineUnsupported(f"the engine compiles mvlib's BinaryResNet18 models, got {type(model).__name__}")
        if model.norm_kind not in ("bn", "none"):
            raise EngineUnsupported(f"norm={model.norm_kind!r} is not supported by the engine (bn and none are)")
        if model.downsample_kind == "binary":
            raise EngineUnsupported("binary_downsample=True (a binary 1x1 shortcut) is not fused; use convert_model")
        self.model = model  # the float model whose modules run the real-valued parts (and the layout probe)
        self.style = model.style
        blocks = list(model.blocks)
        self.plan = [BlockPlan(b, self.style) for b in blocks]
        self.stem_conv = model.stem[0]
        width = self.plan[0].cin
        self.stem_P = np.zeros((N_PARAMS, width), np.float32)
        self.stem_flags = np.zeros(N_FLAGS, np.int64)
        stem_bn = bn_affine(model.stem[1], width)
        if stem_bn is not None:
            self.stem_flags[F_HAS_BN] = 1
            self.stem_P[P_BN_A], self.stem_P[P_BN_B] = stem_bn
        self.stem_flags[F_BITS], self.stem_flags[F_OUT_PAD] = 1, self.plan[0].in_pad
        for i, blk in enumerate(blocks):  # each layer's epilogue packs the input of the next
            pre, shift = input_sign_terms(blk)
            if i == 0:
                next_terms(self.stem_P, pre, shift)
            else:
                self.plan[i - 1].set_next(self.plan[i], pre, shift)
        self.plan[-1].set_next(None, None, None)
        self._bufs: dict = {}
        self.eval()

    # ------------------------------------------------------------------
    def work_buffers(self, batch: int, h: int = 32, w: int = 32) -> dict:
        """Every array one forward at this batch size and image size needs, allocated once and kept.

        Not named ``buffers``: that is :meth:`torch.nn.Module.buffers`, which ``.to()``, ``state_dict`` and
        friends iterate over.
        """
        threads = numba.get_num_threads()
        key = (batch, h, w, threads)
        if key in self._bufs:
            return self._bufs[key]
        geo, sizes = [], []
        for blk in self.plan:
            ho, wo = blk.wts.out_size(h, w, blk.stride, 1)
            bits = np.zeros((batch, h + 2 * blk.in_pad, w + 2 * blk.in_pad, n_words(blk.cin)), np.uint64)
            base, pix_u = blk.wts.border_table(h, w, blk.stride, 1)
            geo.append({"h": h, "w": w, "ho": ho, "wo": wo, "bits": bits, "base": base, "pix_u": pix_u,
                        "chunk": _chunk_size(batch * ho * wo)})
            sizes.append(batch * ho * wo * blk.cout)
            h, w = ho, wo
        stream = max([batch * geo[0]["h"] * geo[0]["w"] * self.plan[0].cin] + sizes)
        k_max = max([b.wts.k for b in self.plan if b.in_pad == 0] + [1])
        co_max = max(b.cout for b in self.plan)
        bufs = {
            "geo": geo, "stream": np.empty(stream, np.float32),
            "scr_s": np.empty((threads, MAX_CHUNK * co_max), np.int32),
            "scr_a": np.zeros((threads, MAX_CHUNK * k_max), np.uint64),
            "scr_v": np.zeros((threads, MAX_CHUNK * n_words(co_max)), np.uint64),
            "no_bits": np.zeros(1, np.uint64),
            "layouts": self._probe_layouts(min(batch, 2), geo[0]["h"], geo[0]["w"]),
        }
        self._bufs[key] = bufs
        return bufs

    @torch.no_grad()
    def _probe_layouts(self, batch, h, w) -> dict[str, str]:
        """The memory layout of the float model's input to each shortcut and to global pooling.

        Their results depend on it: oneDNN's 1x1 convolution rounds differently on a contiguous and on a
        channels-last input on some CPUs (an AMD EPYC: last-bit differences; Intel Xeons agreed), and the
        float model's stream is contiguous after a hierarchical voter's simulation, channels-last otherwise.
        Keys ``shortcut{i}`` (block index) and ``pool``. Probed on two images: the layout follows the
        layers' memory formats, not the batch size, and a full batch through a hierarchical voter's float
        simulation would cost as much as the evaluation the engine replaces (one image is not used: a
        batch of 1 is both contiguous and channels-last).
        """
        seen: dict[str, str] = {}

        def probe(name):
            return lambda m, inp: seen.__setitem__(name, _layout_of(inp[0]))
        handles = [self.model.pool.register_forward_pre_hook(probe("pool"))]
        for i, blk in enumerate(self.model.blocks):
            if blk.shortcut.body is not None:
                handles.append(blk.shortcut.register_forward_pre_hook(probe(f"shortcut{i}")))
        try:
            self.model.eval()(torch.zeros(batch, self.stem_conv.in_channels, h, w))
        finally:
            for handle in handles:
                handle.remove()
        return seen

    # ------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, x: torch.Tensor, times: dict | None = None, clock=time.perf_counter) -> torch.Tensor:
        """Logits ``[B, classes]`` of images ``[B, C, H, W]`` (float32, CPU).

        ``times`` (a dict): per-stage wall seconds are added to it
        (``stem``, ``stem_epilogue``, ``block{i}``, ``shortcut{i}``, ``head``), read from ``clock``.
        """
        if x.device.type != "cpu":
            raise ValueError("the engine runs on the CPU (the CUDA kernels are used through convert_model)")
        sb = min(x.shape[0], self.sub_batch)
        want = self.torch_threads or torch.get_num_threads()
        have = torch.get_num_threads()
        if want != have:
            torch.set_num_threads(want)
        # numba's count keys the scratch buffers, and the float model's kernels set it to torch's mid-call:
        # the engine owns it for the call, so every sub-batch uses one buffer set
        numba_have = numba.get_num_threads()
        numba.set_num_threads(max(1, min(want, numba.config.NUMBA_NUM_THREADS)))
        try:
            if x.shape[0] <= sb:
                feats = self._forward(x, times, clock)
            else:
                feats = torch.cat([self._forward(x[a:b], times, clock) for a, b in _slices(x.shape[0], sb)])
            # the classifier on the whole batch: torch's Linear rounds differently for a few rows than for many
            # (MKL's small-M path), convolutions and pooling do not depend on the batch
            t0 = clock()
            logits = self.model.classifier(feats)
            if times is not None:
                times["head"] = times.get("head", 0.0) + (clock() - t0)
            return logits
        finally:
            if want != have:
                torch.set_num_threads(have)
            numba.set_num_threads(numba_have)

    def _forward(self, x: torch.Tensor, times: dict | None, clock) -> torch.Tensor:
        """The pooled features ``[B, C]`` of one (sub-)batch: stem, the 16 fused blocks, global pooling."""
        t0 = clock()
        B, _, H, W = x.shape
        bufs = self.work_buffers(B, H, W)
        x = x.to(torch.float32).contiguous(memory_format=torch.channels_last)
        y = self.stem_conv(x).contiguous(memory_format=torch.channels_last)  # the float model's own stem conv
        t1 = clock()
        xs = bufs["stream"]  # the residual stream, updated in place block after block
        g0 = bufs["geo"][0]
        stem_kernel(y.permute(0, 2, 3, 1).numpy().reshape(-1), self.stem_P, self.stem_flags, xs,
                    g0["bits"].reshape(-1), B, H, W)
        if times is not None:
            t2 = clock()
            times["stem"] = times.get("stem", 0.0) + (t1 - t0)
            times["stem_epilogue"] = times.get("stem_epilogue", 0.0) + (t2 - t1)
        for i, blk in enumerate(self.plan):
            g = bufs["geo"][i]
            t_a = clock()
            out = xs[: B * g["ho"] * g["wo"] * blk.cout]
            if blk.shortcut is None:
                res = out  # identity: out[m, c] depends on res[m, c] only, so in place (no second stream)
            else:  # torch's AvgPool + 1x1 conv of the stream (channels-last view); its BN is in the epilogue
                pool, conv = blk.shortcut
                xt = torch.from_numpy(xs[: B * g["h"] * g["w"] * blk.cin]).view(B, g["h"], g["w"], blk.cin)
                xt = xt.permute(0, 3, 1, 2)
                if bufs["layouts"].get(f"shortcut{i}") != "cl":
                    xt = xt.contiguous()
                r = conv(pool(xt)).contiguous(memory_format=torch.channels_last)
                res = r.permute(0, 2, 3, 1).numpy().reshape(-1)  # the stream's old contents are dead from here
            t_b = clock()
            nbits = bufs["geo"][i + 1]["bits"].reshape(-1) if i + 1 < len(self.plan) else bufs["no_bits"]
            w = blk.wts
            block_kernel(g["bits"].reshape(-1), B, g["h"], g["w"], g["bits"].shape[3], blk.in_pad, w.panel,
                         g["base"], g["pix_u"], w.ci, w.co, w.blocks, w.kh, w.kw, blk.stride, 1, g["ho"], g["wo"],
                         g["chunk"], blk.fanins, blk.P, blk.flags, res, out, nbits, bufs["scr_s"], bufs["scr_a"],
                         bufs["scr_v"])
            if times is not None:
                t_c = clock()
                if blk.shortcut is not None:
                    times[f"shortcut{i}"] = times.get(f"shortcut{i}", 0.0) + (t_b - t_a)
                times[f"block{i}"] = times.get(f"block{i}", 0.0) + (t_c - t_b)
        t_h = clock()
        last, g = self.plan[-1], bufs["geo"][-1]
        feat = torch.from_numpy(xs[: B * g["ho"] * g["wo"] * last.cout]).view(B, g["ho"], g["wo"], last.cout)
        feat = feat.permute(0, 3, 1, 2)
        if bufs["layouts"]["pool"] != "cl":
            feat = feat.contiguous()
        pooled = self.model.pool(feat).flatten(1)
        if times is not None:
            times["head"] = times.get("head", 0.0) + (clock() - t_h)
        return pooled

    def binary_macs(self, h: int = 32, w: int = 32) -> int:
        """Binary multiply-accumulates of one image's binary convolutions (the roofline's numerator)."""
        total = 0
        for blk in self.plan:
            ho, wo = blk.wts.out_size(h, w, blk.stride, 1)
            total += ho * wo * blk.cout * blk.cin * 9
            h, w = ho, wo
        return total

    def extra_repr(self) -> str:
        kinds = {MODE_LINEAR: "popcount", MODE_MV: "mv", MODE_HMV: "hmv", MODE_THRESHOLD: "threshold"}
        return f"style={self.style}, voters={[kinds[b.mode] for b in self.plan]}"


def configure_threads(spincount: int = 10_000) -> bool:
    """Numba's OpenMP threading layer with a short spin, for this process; call before any Numba parallel kernel.

    Measured on the 2-core VM (2 threads, ReActNet-18 width 64, interleaved):
    the engine runs 1.5-1.8x faster on Numba's ``omp`` layer than on the
    ``workqueue`` layer that :mod:`mvlib.fused` selects by default (each
    parallel launch costs ~2 us instead of 50-140 us), and mvlib's own float
    path gains 1.5x at batch 16-128 as well - *provided* the OpenMP workers stop
    spinning soon after a kernel: with libgomp's default spin (300,000) they
    compete with torch's threads and everything slows down 3-10x. Setting
    ``GOMP_SPINCOUNT`` here, after torch has loaded its own libgomp, affects only
    the libgomp that Numba loads at its first parallel launch. An explicit
    ``NUMBA_THREADING_LAYER`` or ``GOMP_SPINCOUNT`` in the environment wins.
    Returns False (and changes nothing) once a layer is running.
    """
    import os

    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", False):
        return False
    os.environ.setdefault("GOMP_SPINCOUNT", str(int(spincount)))
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "omp"
    return True


def compile_engine(model: nn.Module, torch_threads: int | None = None, sub_batch: int = 32) -> BinaryEngine:
    """``BinaryEngine(model)`` on an eval-mode copy of ``model`` (the model itself is not modified)."""
    import copy

    return BinaryEngine(copy.deepcopy(model).eval(), torch_threads, sub_batch)
