"""Time the two choices behind the voters' training path: ``python tools/probe_voter_speed.py``.

1. The hierarchical voter's grouped convolution (G = 4 blocks), forward + backward, NCHW against
   channels-last (with the copy back to NCHW), at the width-16 CIFAR shapes, batch 128
   (``mvlib.voters.CHANNELS_LAST_BELOW``).
2. The per-channel std of the batch_std surrogate normalization: ``torch.std`` over axes (0, 2, 3)
   against one sum / sum-of-squares pass (``mvlib.voters._channel_std``).
Calls are interleaved (``mvlib.bench.timing``); best of ``--reps`` in ms.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mvlib.bench.timing import interleaved_times  # noqa: E402
from mvlib.voters import _channel_std  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--reps", type=int, default=7)
ap.add_argument("--blocks", type=int, default=4)
args = ap.parse_args()
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
