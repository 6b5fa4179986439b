"""Time the two choices behind the voters' training path: ``python tools/probe_voter_speed.py``.

1. The hierarchical voter's grouped convolution (G = 4 blocks), forward + backward, NCHW against
   channels-last (with the copy back to NCHW), at the width-16 CIFAR shapes, batch 128
   (``mvlib.voters.CHANNELS_LAST_BELOW``).
2. The per-channel std of the batch_std surrogate normalization: ``torch.std`` over axes (0, 2, 3)
   against one sum / sum-of-squares pass (``mvlib.voters._channel_std``).
3. ``--recompute`` (only this): a training step (forward, backward, Adam) of ReActNet-18 through hierarchical
   voters of 4 to 64 leaves (4-16 at width 16, batch 128; 16-64 at width 64, batch 16), the tree's tensors kept against recomputed in the backward
   pass (``mvlib.voters.RECOMPUTE_FROM_LEAVES``), with the bytes per image each keeps for the backward pass
   (``python tools/probe_voter_speed.py --recompute`` -> results/probes/voter_recompute_cpu.txt).
Calls are interleaved (``mvlib.bench.timing``); best of ``--reps`` in ms.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mvlib.bench.timing import interleaved_times  # noqa: E402
from mvlib.voters import HierarchicalVoter, _channel_std  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--reps", type=int, default=7)
ap.add_argument("--blocks", type=int, default=4)
ap.add_argument("--recompute", action="store_true", help="only part 3: the voter tree kept against recomputed")
args = ap.parse_args()


RECOMPUTE_ROWS = [(16, 128, f) for f in ([4], [8], [16], [4, 4], [2, 2, 2, 2])] + [
    (64, 16, f) for f in ([4, 4], [4, 4, 4], [2, 2, 2, 2, 2, 2])]  # (width, batch in images, fan-ins)


def recompute_probe(reps: int) -> None:
    from mvlib.study.estimate import build_network
    from mvlib.voter_spec import VoterSpec
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; reactnet18, one training step, best of "
          f"{reps} (s); MiB per image kept for the backward pass")
    for width, batch, fanins in RECOMPUTE_ROWS:
        x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
        steps, kept = {}, {}
        for recompute in (False, True):
            model = build_network("reactnet18", width, VoterSpec.hierarchical(fanins).tag()).train()
            for layer in model.modules():
                if isinstance(layer, HierarchicalVoter):
                    layer.recompute = recompute
            opt = torch.optim.Adam(model.parameters(), 1e-4)

            def step(model=model, opt=opt):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()
            sizes = []
            with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel() * t.element_size()) or t,
                                                          lambda t: t):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            kept[recompute] = sum(sizes) / 2**20 / batch
            steps["recomputed" if recompute else "kept"] = step
        t = interleaved_times(steps, reps)
        print(f"  width {width:>2} batch {batch:>3} fan-ins {str(tuple(fanins)):<19} kept {min(t['kept']):6.2f} s "
              f"{kept[False]:6.1f} MiB | recomputed {min(t['recomputed']):6.2f} s {kept[True]:6.1f} MiB | "
              f"time x{min(t['recomputed']) / min(t['kept']):.2f}", flush=True)


if args.recompute:
    recompute_probe(args.reps)
    sys.exit(0)
m = args.blocks
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 128, {m} blocks; best of {args.reps} (ms)")
for c, h in [(16, 32), (32, 16), (64, 8), (128, 4)]:
    x = torch.randn(128, c, h, h, requires_grad=True)
    w = torch.randn(m * c, c // m, 3, 3, requires_grad=True)

    def nchw():
        F.conv2d(x, w, None, 1, 1, 1, m).sum().backward()

    def channels_last():
        F.conv2d(x.contiguous(memory_format=torch.channels_last), w, None, 1, 1, 1, m).contiguous().sum().backward()

    s = torch.randint(-50, 51, (128, c, h, h)).float()
    t = interleaved_times({"nchw": nchw, "channels_last": channels_last,
                           "torch.std": lambda: s.std(dim=(0, 2, 3)), "_channel_std": lambda: _channel_std(s)},
                          args.reps)
    print(f"{c:4d} channels ({c // m} per block) @ {h:2d}x{h:<2d}: grouped conv+backward NCHW {1e3 * min(t['nchw']):7.1f}, "
          f"channels-last {1e3 * min(t['channels_last']):7.1f} | std: torch.std {1e3 * min(t['torch.std']):6.2f}, "
          f"_channel_std {1e3 * min(t['_channel_std']):6.2f}")
