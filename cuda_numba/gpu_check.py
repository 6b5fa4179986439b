"""Check every CUDA kernel bit-exact on a real card, then benchmark it: ``python -m cuda_numba.gpu_check --out DIR``.

Checks (references: mvlib's float simulation on the CPU): packing and
unpacking; XNOR + popcount, MV and HMV (several fan-ins and every tie rule)
on every ResNet-18 CIFAR 3x3 shape at batch 1 and 3, odd channel counts and
sizes, strides, paddings, forced ties; on a real card also the torch
operators on CUDA tensors and a converted ReActNet-18 / Bi-RealNet-18
(random weights, with and without voters) against the float model.

Benchmark (real card): per layer shape and batch, cuDNN fp32 with TF32 off,
TF32 and bf16 ``conv2d`` against the CUDA XNOR / MV / HMV kernels, kernel only
and including packing. Writes ``gpu_check.json`` (device name, every check,
timings), ``gpu_bench.csv`` and ``gpu_bench.png`` into ``--out``; exits 1 if
any check fails.

``--simulate`` runs the same code under Numba's CUDA simulator at tiny sizes
(no GPU needed; what the tests do); its timings mean nothing.
Needs a Numba CUDA target: numba's built-in ``numba.cuda`` or the
``numba-cuda`` package, with the CUDA toolkit's NVVM.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _enable_simulator() -> None:
    """The simulator must be chosen before ``numba.cuda`` is first imported."""
    if "numba.cuda" in sys.modules and not os.environ.get("NUMBA_ENABLE_CUDASIM"):
        raise RuntimeError("numba.cuda was imported before --simulate could enable the simulator")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    import numba

    numba.config.ENABLE_CUDASIM = 1


def _cases(simulate: bool):
    """(name, batch, Cin, Cout, H, W, stride, padding, [(fanins, tie)], forced_tie)."""
    from .bench import SHAPES

    if simulate:  # the simulator runs every thread in Python: tiny sizes
        return [("small", 1, 8, 40, 3, 3, 1, 1, [((4,), "first"), ((2, 2), "neg")], False),
                ("odd C, stride 2", 2, 70, 20, 4, 3, 2, 1, [((2,), "pos")], False),
                ("2 channels, ties", 2, 2, 8, 4, 4, 1, 1, [((2,), "first")], False),
                ("forced ties", 1, 64, 8, 3, 3, 1, 1, [((4,), "neg")], True)]
    cases = [(f"{ci}->{co}@{h}s{s} b{b}", b, ci, co, h, h, s, 1, [((4,), "pos"), ((2, 2), "first")], False)
             for ci, co, h, s in SHAPES for b in (1, 3)]
    cases += [("odd C/size", 2, 33, 17, 5, 7, 1, 1, [((3,), "first"), ((11,), "neg")], False),
              ("odd C, stride 2, pad 2", 2, 70, 40, 7, 5, 2, 2, [((2,), "neg"), ((5, 7), "first")], False),
              ("2 channels, ties", 4, 2, 24, 7, 7, 1, 1, [((2,), "first")], False),
              ("forced ties", 2, 64, 32, 6, 6, 1, 1, [((4,), "neg"), ((4,), "first")], True)]
    return cases


def check_kernels(simulate: bool) -> list[dict]:
    from numba import cuda

    from mvlib.binarizers import sign_pm1
    from mvlib.voters import block_partial_sums, hierarchical_vote, integer_conv, majority_vote

    from . import cuda_kernels as ck
    from .layout import pack_reference, unpack_reference

    out = []
    for name, b, ci, co, h, w, stride, pad, hmvs, forced in _cases(simulate):
        g = torch.Generator().manual_seed(ci * 31 + co)
        x, sh = torch.randn(b, ci, h, w, generator=g), torch.randn(ci, generator=g) * 0.3
        wt = torch.randn(co, ci, 3, 3, generator=g)
        if forced:  # channel pairs cancel: s == 0 everywhere
            sh.zero_()
            x[:, 1::2] = -x[:, 0::2]
            wt[:, 1::2] = wt[:, 0::2]
        a, wb = sign_pm1(x + sh.view(1, -1, 1, 1)), sign_pm1(wt)
        s_ref = integer_conv(a, wb, stride, pad)
        d_bits = ck.pack_cuda(cuda.to_device(x.numpy()), cuda.to_device(sh.numpy()))
        bits = d_bits.copy_to_host()
        out.append({"kernel": "pack", "case": name, "ok": bool(np.array_equal(bits, pack_reference(a.numpy())))})
        back = torch.from_numpy(ck.unpack_cuda(d_bits, ci).copy_to_host())
        out.append({"kernel": "unpack", "case": name, "ok": bool(torch.equal(back, a))})
        d_w = ck.prepare_cuda_weights(wt.numpy())
        s = torch.from_numpy(ck.conv_popcount_cuda(d_bits, d_w, ci, 3, 3, stride, pad).copy_to_host())
        out.append({"kernel": "popcount", "case": name,
                    "ok": bool(torch.equal(s.permute(0, 3, 1, 2).float(), s_ref)),
                    "ties": int((s_ref == 0).sum())})
        mv = unpack_reference(ck.conv_mv_cuda(d_bits, d_w, ci, 3, 3, stride, pad).copy_to_host(), co)
        out.append({"kernel": "mv", "case": name, "ok": bool(torch.equal(torch.from_numpy(mv), majority_vote(s_ref)))})
        for fanins, tie in hmvs:
            m = int(np.prod(fanins))
            ref = hierarchical_vote(block_partial_sums(a, wb, m, stride, pad), fanins, tie)
            got = unpack_reference(ck.conv_hmv_cuda(d_bits, d_w, ci, 3, 3, stride, pad, fanins, tie).copy_to_host(),
                                   co)
            out.append({"kernel": "hmv", "case": f"{name} fanins={fanins} tie={tie}",
                        "ok": bool(torch.equal(torch.from_numpy(got), ref))})
    return out


def check_torch_path() -> list[dict]:
    """Real card only: the torch operators on CUDA tensors, through converted models vs the float model.

    Both run on the card (the binary convolutions of the float model are exact
    on cuDNN too: ±1 products, integer sums below 2^24, also under TF32).
    """
    from mvlib.models import build_model
    from mvlib.voters import HierarchicalVoter, MajorityVoter

    from .convert import convert_model

    out = []
    for name in ("reactnet18", "birealnet18"):
        for voter in (None, "mv", "hmv"):
            v = {"mv": MajorityVoter(), "hmv": HierarchicalVoter(fanins=4, tie="pos"), None: None}[voter]
            torch.manual_seed(0)
            model = build_model(name, width=64, voter=v).eval().cuda()
            x = torch.randn(16, 3, 32, 32, device="cuda")
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            with torch.no_grad():  # same card, same cuDNN kernels for the real-valued layers
                ref = model(x).cpu()
                got = convert_model(model)(x).cpu()
            out.append({"kernel": "convert_model", "case": f"{name} voter={voter}", "ok": bool(torch.equal(ref, got)),
                        "differing_predictions": int((ref.argmax(1) != got.argmax(1)).sum()),
                        "max_abs_logit_diff": float((ref - got).abs().max())})
    return out


def _gpu_time(fn, reps: int, real: bool) -> float:
    from numba import cuda

    def sync():
        cuda.synchronize()
        if real:
            torch.cuda.synchronize()

    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps


def bench(batches, reps: int, simulate: bool) -> list[dict]:
    """cuDNN fp32 / TF32 / bf16 conv2d vs the CUDA bit kernels, kernel only and with packing.

    Under the simulator: one tiny shape, one repetition, no cuDNN (the code
    path runs; the times mean nothing).
    """
    from numba import cuda

    from . import cuda_kernels as ck
    from .bench import SHAPES

    real = not simulate
    shapes, batches, reps = (SHAPES, batches, reps) if real else ([(70, 40, 3, 2)], [1], 1)
    rows = []
    for batch in batches:
        for ci, co, h, s in shapes:
            x, w = torch.randn(batch, ci, h, h), torch.randn(co, ci, 3, 3)
            shift = torch.zeros(ci)
            if real:
                x, w, shift = x.cuda(), w.cuda(), shift.cuda()
            dx, dsh = (cuda.as_cuda_array(x), cuda.as_cuda_array(shift)) if real else \
                (cuda.to_device(x.numpy()), cuda.to_device(shift.numpy()))
            dw = ck.prepare_cuda_weights(w.cpu().numpy())
            bits = ck.pack_cuda(dx, dsh)
            row = {"shape": f"{ci}->{co}@{h}s{s}", "batch": batch,
                   "binary_macs": batch * ((h - 1) // s + 1) ** 2 * co * ci * 9}
            if real:
                for label, tf32, dtype in (("fp32", False, torch.float32), ("tf32", True, torch.float32),
                                           ("bf16", False, torch.bfloat16)):
                    torch.backends.cudnn.allow_tf32 = tf32
                    xd, wd = x.to(dtype), w.to(dtype)
                    row[f"cudnn_{label}_s"] = _gpu_time(lambda: F.conv2d(xd, wd, None, s, 1), reps, real)
                torch.backends.cudnn.allow_tf32 = True
            kernels = {"xnor": lambda xb: ck.conv_popcount_cuda(xb, dw, ci, 3, 3, s, 1),
                       "mv": lambda xb: ck.conv_mv_cuda(xb, dw, ci, 3, 3, s, 1),
                       "hmv": lambda xb: ck.conv_hmv_cuda(xb, dw, ci, 3, 3, s, 1, 4 if ci % 4 == 0 else 2, "pos")}
            for name, fn in kernels.items():
                row[f"{name}_s"] = _gpu_time(lambda: fn(bits), reps, real)
                row[f"{name}_pack_s"] = _gpu_time(lambda: fn(ck.pack_cuda(dx, dsh)), reps, real)
                row[f"{name}_tmacs"] = row["binary_macs"] / row[f"{name}_s"] / 1e12
                for label in ("fp32", "tf32", "bf16") if real else ():
                    row[f"{name}_vs_{label}"] = row[f"cudnn_{label}_s"] / row[f"{name}_s"]
                    row[f"{name}_pack_vs_{label}"] = row[f"cudnn_{label}_s"] / row[f"{name}_pack_s"]
            rows.append(row)
            if real:
                print(f"{row['shape']:>16} b{batch:<4} cuDNN fp32 {row['cudnn_fp32_s'] * 1e3:.3f} ms tf32 "
                      f"{row['cudnn_tf32_s'] * 1e3:.3f} bf16 {row['cudnn_bf16_s'] * 1e3:.3f} | "
                      + " | ".join(f"{k} {row[k + '_s'] * 1e3:.3f} ms ({row[k + '_vs_fp32']:.1f}x fp32, "
                                   f"{row[k + '_vs_bf16']:.1f}x bf16)" for k in kernels), flush=True)
    return rows


def _plot(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        sel = [r for r in rows if r["batch"] == batch]
        xs = np.arange(len(sel))
        for i, key in enumerate(("xnor_vs_fp32", "xnor_vs_tf32", "xnor_vs_bf16", "mv_vs_bf16")):
            ax.bar(xs + (i - 1.5) * 0.2, [r[key] for r in sel], 0.2, label=key)
        ax.axhline(1, color="gray", lw=0.8)
        ax.set_xticks(xs, [r["shape"] for r in sel], rotation=45, ha="right", fontsize=8)
        ax.set_title(f"batch {batch}")
    axes[0][0].set_ylabel("speed-up over cuDNN")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_bench.csv, gpu_bench.png")
    p.add_argument("--simulate", action="store_true", help="CUDA simulator, tiny sizes (no GPU needed)")
    p.add_argument("--no-bench", action="store_true")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128])
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args(argv)
    if a.simulate:
        _enable_simulator()
    from numba import cuda

    if not cuda.is_available():
        print("no CUDA device visible to Numba (use --simulate to run under the simulator)", file=sys.stderr)
        return 2
    device = "CUDA simulator" if a.simulate else torch.cuda.get_device_name(0)
    print(f"device: {device}", flush=True)
    t0 = time.time()
    checks = check_kernels(a.simulate)
    if not a.simulate:
        checks += check_torch_path()
    failed = [c for c in checks if not c["ok"]]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks bit-exact ({time.time() - t0:.1f} s)", flush=True)
    for c in failed:
        print("FAILED:", c, flush=True)
    rows = [] if a.no_bench else bench(a.batches, a.reps, a.simulate)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": device, "simulated": a.simulate, "torch": torch.__version__,
              "cuda": torch.version.cuda, "checks": checks, "bench": rows}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    if rows and not a.simulate:
        import csv

        with open(out / "gpu_bench.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        _plot(rows, out / "gpu_bench.png")
    print(f"wrote {out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
