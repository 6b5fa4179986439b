import sys; sys.path.insert(0, "tools")
from nb import HEADER_IMPORTS, PARAMS_CELL, write

write("notebooks/01_baseline.ipynb", [
("md", """
# 01 · Baselines: ReActNet-18 and Bi-RealNet-18 on CIFAR-10

**Reproduces** the deck's baseline rows (*Results with CIFAR-10*): ReActNet-18 **93.38 / 99.80** and
Bi-RealNet-18 **88.77 / 98.25** top-1 / top-5 (%).

**Hardware and scale.** Profile `cpu`: a 2-core CPU, width 16, 20,000 training images, 3 epochs,
evaluated on the full 10,000-image test set (about 5 minutes per model). Profile `paper`: width 64,
all 50,000 images, 256 epochs with two-step training and distillation, on a GPU.

**Result.** The table below is built from the run records this notebook writes
(`results/runs/01_baseline/…`); the `cpu` profile lands far below the deck (small model, few epochs):
it is the starting point for the voter experiments of notebooks 02–04, not a reproduction of 93.38.
"""),
("code", HEADER_IMPORTS + """
import pandas as pd
from mvlib.experiment import train_baseline
from mvlib.plots import plot_histories
from mvlib.deck import deck_numbers, binomial_se"""),
PARAMS_CELL,
("code", """
cfg = notebook_config(globals(), _names_before_parameters)
{k: cfg[k] for k in ("profile", "models", "width", "train_per_class", "epochs", "batch_size", "lr", "two_step", "distill")}"""),
("md", "## Train (or reuse finished runs of this exact configuration)"),
("code", """
runs = {}
for name in cfg["models"]:
    model, run = train_baseline(cfg, name)
    runs[name] = run"""),
("md", "## Results beside the deck"),
("code", """
deck = deck_numbers("main").query("variant == 'baseline'").set_index("model")
rows = []
for name, run in runs.items():
    m = run.metrics
    rows.append({"model": name, "deck top1": deck.top1.get(name), "ours top1": m["top1"],
                 "± s.e.": binomial_se(m["top1"], m["test_images"]), "deck top5": deck.top5.get(name),
                 "ours top5": m["top5"], "train s": m["seconds"], "run": run.run_id})
table = pd.DataFrame(rows).set_index("model")
table["Δ top1"] = table["ours top1"] - table["deck top1"]
table.round(2)"""),
("code", """
fig = plot_histories({n: r.history() for n, r in runs.items()}, title=f"baselines, profile {cfg['profile']}",
                     metrics=("train_loss", "train_top1", "test_top1"))"""),
])
