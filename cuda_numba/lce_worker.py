"""Larq Compute Engine side of the network benchmark (run under an interpreter that has LCE and TensorFlow).

Started by :class:`cuda_numba.bench_peers.LceWorker`; not imported by the
project. It builds the peer network in Larq - ReActNet-18's shape for CIFAR:
real 3x3 stem + BN, 16 blocks of one binary 3x3 ``QuantConv2D`` (``ste_sign``
on activations and weights) + BN + shortcut (AvgPool 2 + real 1x1 conv + BN
at the transitions) + PReLU, global pooling, dense - converts it with
``convert_keras_model`` (which folds each BN into the binary convolution's
output transform), one flatbuffer per batch size (fixed batch dimension), and
runs it in LCE's interpreter with its ``use_indirect_bgemm`` x86 kernels,
with and without the XNNPACK delegate for the real-valued layers (the faster
of the two per batch size is kept and reported). Binary convolutions use
``pad_values=1.0``, LCE's fast padding (the project's semantics pad with 0,
which LCE handles with an extra correction): the peer gets its best case.

Protocol (one JSON object per line on stdout): first ``{"ready": true, ...}``
with the chosen configurations; then, for each line ``<batch>`` on stdin, one
inference of that batch size and ``{"seconds": t}``; ``quit`` ends it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def build(width: int, batch: int):
    import larq as lq
    import tensorflow as tf

    bq = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
              use_bias=False, pad_values=1.0)
    x = inp = tf.keras.Input((32, 32, 3), batch_size=batch)
    x = tf.keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = tf.keras.layers.BatchNormalization()(x)
    cin = width
    for stage, mult in enumerate((1, 2, 4, 8)):
        for i in range(4):
            cout, stride = width * mult, (2 if stage > 0 and i == 0 else 1)
            y = lq.layers.QuantConv2D(cout, 3, strides=stride, padding="same", **bq)(x)
            y = tf.keras.layers.BatchNormalization()(y)
            res = x
            if stride != 1 or cin != cout:
                res = tf.keras.layers.AveragePooling2D(2)(x) if stride != 1 else x
                res = tf.keras.layers.Conv2D(cout, 1, use_bias=False)(res)
                res = tf.keras.layers.BatchNormalization()(res)
            x = tf.keras.layers.PReLU(shared_axes=[1, 2])(tf.keras.layers.Add()([y, res]))
            cin = cout
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(10)(x))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128])
    p.add_argument("--clock", default="wall", choices=["wall", "process"])
    a = p.parse_args(argv)
    global _CLOCK
    _CLOCK = time.process_time if a.clock == "process" else time.perf_counter
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # larq needs Keras 2 (tf-keras); TF 2.16 defaults to Keras 3
    import larq_compute_engine as lce
    import numpy as np
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    out = sys.stdout
    sys.stdout = sys.stderr  # TensorFlow's chatter must not reach the protocol pipe
    runners, chosen = {}, {}
    for batch in a.batches:
        flat = lce.convert_keras_model(build(a.width, batch))
        x = np.random.default_rng(batch).standard_normal((batch, 32, 32, 3)).astype(np.float32)
        best = None
        for xnn in (False, True):
            interp = Interpreter(flat, num_threads=a.threads, use_indirect_bgemm=True, use_xnnpack=xnn)
            run = (lambda it=interp, xb=x: it.interpreter.predict([xb]))
            run()
            t = min(_timed(run) for _ in range(3))
            if best is None or t < best[0]:
                best = (t, xnn, run)
        runners[batch] = best[2]
        chosen[str(batch)] = {"xnnpack": best[1], "probe_s": best[0]}
    import tensorflow as tf

    info = {"ready": True, "lce": lce.__version__, "tensorflow": tf.__version__, "threads": a.threads, "clock": a.clock,
            "kernels": "use_indirect_bgemm", "pad_values": 1.0, "configs": chosen, "measured": True}
    out.write(json.dumps(info) + "\n")
    out.flush()
    for line in sys.stdin:
        line = line.strip()
        if line == "quit":
            break
        out.write(json.dumps({"seconds": _timed(runners[int(line)])}) + "\n")
        out.flush()


_CLOCK = time.perf_counter


def _timed(fn) -> float:
    t0 = _CLOCK()
    fn()
    return _CLOCK() - t0


if __name__ == "__main__":
    main()
