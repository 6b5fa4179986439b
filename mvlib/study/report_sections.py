"""The report, section by section: one call per table, figure and verdict (notebook ``99_report``).

:class:`Report` reads the records and result files of one profile and one code once (``code``: ``"current"`` the
running code's records, a code hash, or None for any code) and gives, for each section, its table
(:mod:`mvlib.study.report_tables`), its figure (:mod:`mvlib.study.plots_report`) with its caption, and its verdict
(the library's own verdict functions; :mod:`mvlib.study.report_verdicts` where no notebook module has one). Where
the data of a section is missing, each call says so in one line instead of failing. Numbers only come from the
data; the words around them say what each number is.
"""
from __future__ import annotations

import re
from functools import cached_property

import pandas as pd
from IPython.display import Markdown, display

from . import appendix_report, report
from . import plots_report as pr
from . import report_tables as rt
from . import report_verdicts as rv
from .plots_layout import clip_note, render, timing_figure, training_curves

BUDGET_MIN = {"cpu": 90}  # the study's wall-time budget per profile (minutes)
TWO_SEEDS = "with 2 seeds a t interval has one degree of freedom, t = 12.7"


class Parts:
    """Several outputs shown one after the other (a verdict's sentences around its table)."""

    def __init__(self, *parts):
        self.parts = [p for p in parts if p is not None]

    def _ipython_display_(self):
        for p in self.parts:
            display(p)


def note(text: str) -> Markdown:
    return Markdown(f"_{text}_")


def verdict(text: str, lead: str = "Verdict.") -> Markdown:
    """A verdict as a quoted block under its figure, every line of ``text`` kept (a number that rounds to zero
    printed without its sign: "-0.0" reads as a loss that is not there)."""
    text = re.sub(r"(?<![\w.])[-−]0(\.0+)?(?![\d.])", r"0\1", text)
    body = "\n".join(f"> {line}" if line.strip() else ">" for line in text.strip().splitlines())
    return Markdown(f"> **{lead}**\n>\n{body}")


class Report:
    """The records and result files of one profile and code, and the report's sections built from them."""

    def __init__(self, profile: str = "cpu", results_dir=None, code: str | None = "current"):
        self.profile, self.results_dir, self.code = profile, results_dir or "results", code
        self.want = report.wanted_code(code)
        self.rows = report.records_of(self.results_dir, profile, code)

    def _missing(self, what: str) -> Markdown:
        which = "any code" if self.want is None else f"code {self.want}"
        return note(f"No {what} of profile {self.profile} and {which} in the results: this section has nothing "
                    "to show.")

    # ------------------------------------------------------------------------------------------ provenance
    def provenance(self) -> Markdown:
        if not self.rows:
            return self._missing("run records")
        p = report.provenance(self.rows)
        dirty = f"**{p['dirty']} from a tree with uncommitted changes**" if p["dirty"] else "a committed tree"
        return Markdown(f"**Data.** Profile `{self.profile}`: {p['records']} run records of code "
                        f"`{', '.join(p['code'])}`, commit `{', '.join(c[:10] for c in p['commits'])}` ({dirty}), "
                        f"runs from {p['first']} to {p['last']} UTC on {', '.join(p['machines']) or 'no machine'}.")

    # ------------------------------------------------------------------------------------------ §1
    @cached_property
    def main(self) -> pd.DataFrame:
        from .deck_pattern import main_table
        return main_table(self.rows, self.profile, code=self.code)

    def main_table(self):
        if self.main.empty or self.main["ours top1"].isna().all():
            return self._missing("baseline or voter records")
        return rt.main_rows(self.main)

    def main_figure(self):
        if self.main.empty or self.main["ours top1"].isna().all():
            return None
        fig, n = pr.deck_bars(self.main, self.profile)
        return render(fig, "Figure 1. CIFAR-10 test top-1 of the deck's three rows per network: the deck (grey) and "
                           "ours (blue: mean over training seeds, 95 % Student-t interval); dotted: chance (10 %)."
                      + clip_note(n["clipped"]))

    def regime(self, profile: str | None = None) -> str:
        """``cpu profile (width 16, 20,000 training images, 4 epochs)``: the regime a verdict speaks for."""
        from .deck_pattern import regime_of
        p = profile or self.profile
        return f"{p} profile ({regime_of(self.rows if p == self.profile else self.other_rows.get(p, []), p)})"

    def main_verdict(self, profile: str | None = None):
        """The deck's claims at one regime (this report's profile by default), the regime named in the lead."""
        from .deck_pattern import verdicts
        p = profile or self.profile
        rows = self.rows if p == self.profile else self.other_rows.get(p, [])
        claims, lines = verdicts(rows, p, code=self.code)
        if claims.empty:
            return self._missing("pairs of baseline and voter records")
        return Parts(verdict(lines[0], f"Verdict at the {self.regime(p)}."), rt.claims_rows(claims),
                     verdict("\n\n".join(lines[1:]), "Reading."))

    # ------------------------------------------------------------------------------------------ §1 at every regime
    @cached_property
    def other_rows(self) -> dict[str, list[dict]]:
        """The records of the other regimes' profiles (:data:`mvlib.study.deck_pattern.REGIMES`), same code rule."""
        from .deck_pattern import REGIMES
        return {p: report.records_of(self.results_dir, p, self.code) for p in REGIMES if p != self.profile}

    @cached_property
    def regimes(self) -> dict[str, pd.DataFrame]:
        from .deck_pattern import regime_tables
        return regime_tables({**self.other_rows, self.profile: self.rows}, code=self.code)

    def regime_table(self):
        """Table 1b: the deck's rows at every regime that has run, side by side, or a line naming what to run."""
        from .deck_pattern import REGIMES
        missing = [p for p in REGIMES if p not in self.regimes]
        line = note("Not run with this code: " + ", ".join(f"`{p}` (`make study PROFILE={p}`)" for p in missing)
                    + ".") if missing else None
        if len(self.regimes) < 2:
            return line
        return Parts(rt.regime_rows(self.regimes, {p: self.regime(p).split(" (", 1)[1].rstrip(")")
                                                   for p in self.regimes}), line)

    def regime_verdicts(self):
        """The deck's claims at each other regime that has run, each under its regime's name."""
        others = [p for p in self.regimes if p != self.profile]
        return Parts(*[self.main_verdict(p) for p in others]) if others else None

    # ------------------------------------------------------------------------------------------ §2
    @cached_property
    def hmv(self) -> pd.DataFrame:
        return rv.hmv_costs(self.rows, self.profile, self.code)

    def hmv_table(self):
        if self.hmv.empty:
            return self._missing("hierarchical-voter records (notebook 04)")
        return rt.hmv_cost_rows(self.hmv, how=("retrained", "naive+recal"))

    def hmv_figure(self):
        if self.hmv.empty:
            return None
        fig, _ = pr.hmv_figure(self.hmv)
        return render(fig, "Figure 2. What the hierarchical voter costs against the exact voter (points of top-1; "
                           "0: no cost), per outer fan-in, for the voter substituted into the trained baselines "
                           "(circles: with BN recalibration, squares: bare ±1; validation subset) and retrained "
                           "through it (stars; test split). Bars: 95 % intervals (see the verdict for how each is "
                           "made). Points of one fan-in are drawn side by side.")

    def hmv_verdict(self):
        return verdict(rv.hmv_verdict(self.hmv)) if not self.hmv.empty else None

    # ------------------------------------------------------------------------------------------ §3
    @cached_property
    def bench(self) -> dict | None:
        return report.kernel_results(self.results_dir, self.profile)

    def kernel_table(self):
        if self.bench is None:
            return self._missing("kernel benchmark (notebook 05)")
        return rt.kernel_goal_rows(self.bench, rv.KERNEL_GOALS)

    def kernel_figure(self):
        if self.bench is None:
            return None
        fig, _ = pr.kernel_figure(self.bench, rv.KERNEL_GOALS)
        machine = self.bench["machine"]
        return render(fig, f"Figure 3. Speed-up of each bit kernel against torch fp32 conv2d per ResNet-18 layer "
                           f"shape ({machine.get('cpu', '?')}, {machine.get('threads', '?')} threads, best of "
                           f"{self.bench.get('reps', '?')} interleaved calls; file "
                           f"{report.relative(self.bench['file'], self.results_dir)}). Dashed: the project's "
                           "goals; dotted red: the roofline ratio measured in the same run.")

    def kernel_verdict(self):
        if self.bench is None:
            return None
        return verdict(rv.kernel_verdict(self.bench, report.engine_results(self.results_dir, self.profile),
                                         report.trained_check(self.results_dir, self.profile)))

    # ------------------------------------------------------------------------------------------ §4
    @cached_property
    def appendix(self) -> pd.DataFrame:
        return appendix_report.appendix_results(self.rows, self.profile)

    def appendix_table(self):
        if not self.appendix.top1.notna().any():
            return self._missing("BN / w/o BN / BN-Free records (notebook 06)")
        return rt.appendix_rows(self.appendix)

    def appendix_figure(self):
        if not self.appendix.top1.notna().any():
            return None
        fig, n = pr.appendix_figure(self.appendix)
        return render(fig, "Figure 4. Test top-1 with BN, without BN and BN-Free: ours as bars (95 % interval over "
                           "seeds, or 1.96 binomial standard errors of the test set for a one-seed cell), the deck's "
                           "as black ticks, our shortcut-only floor dotted." + clip_note(n["clipped"]))

    def appendix_verdict(self):
        if not self.appendix.top1.notna().any():
            return None
        return verdict(appendix_report.pattern_statement(self.appendix))

    # ------------------------------------------------------------------------------------------ §5
    @cached_property
    def hw(self) -> dict[str, pd.DataFrame]:
        return report.hardware_tables(self.results_dir, self.profile)

    @cached_property
    def scatter(self) -> float:
        from ..hw import flow
        comp = self.hw.get("composed")
        return flow.mapper_scatter(self.hw["costs"], comp) if comp is not None else 0.0

    def hardware_table(self):
        deck = self.hw.get("deck_m512")
        if deck is None:
            return self._missing("synthesis results (notebook 07)")
        main = deck[deck["circuit"].isin(["popcount", "pc_cmp", "mv", "hmv4_pos"]) & (deck["method"] == "flat")]
        return rt.deck_m512_rows(main)

    def hardware_figure(self):
        if "costs" not in self.hw:
            return None
        fig, _ = pr.hardware_figure(self.hw["costs"], self.scatter)
        return render(fig, "Figure 5. Area of each voter circuit (Yosys + ABC, NAND2 equivalents) saved against "
                           "XNOR + popcount + compare, per fan-in N. Grey: the band within which heuristic synthesis "
                           "cannot tell two circuits apart.")

    def hardware_verdict(self):
        if "costs" not in self.hw:
            return None
        return verdict(rv.hardware_verdict(self.hw["costs"], self.hw.get("network_totals"), self.scatter,
                                           self.hw.get("deck_m512")))

    # ------------------------------------------------------------------------------------------ §6
    @cached_property
    def order(self) -> pd.DataFrame | None:
        from . import voter_drop_verdicts as vdv
        rows = report.step_table("08_voter_drop", "rows", self.results_dir, self.profile, self.code)
        return None if rows is None or rows.empty else vdv.ordering_table(rows)

    def drop_table(self):
        from . import voter_drop_verdicts as vdv
        if self.order is None:
            return self._missing("notebook-08 results")
        return rt.factor_rows(vdv.factor_verdicts(self.order)[0])

    def drop_figure(self):
        from . import voter_drop_verdicts as vdv
        if self.order is None:
            return None
        fig, _ = pr.ordering_forest(self.order, vdv.deck_difference())
        return render(fig, "Figure 6. Bi-RealNet-18's drop minus ReActNet-18's, per condition of notebook 08 (Welch "
                           "95 % interval over seeds; colour: the verdict of the row, Holm over all rows), against "
                           "the deck's difference (dashed). Letters: the factor each condition tests.")

    def drop_verdict(self):
        from . import voter_drop_verdicts as vdv
        if self.order is None:
            return None
        return verdict("\n\n".join(vdv.factor_verdicts(self.order)[1]))

    # ------------------------------------------------------------------------------------------ §7
    @cached_property
    def pareto(self):
        from . import pareto
        runs = report.step_table("09_voter_pareto", "runs", self.results_dir, self.profile, self.code)
        costs = report.step_table("09_voter_pareto", "costs", self.results_dir, self.profile, self.code)
        if runs is None or runs.empty or costs is None:
            return None
        runs = pareto.runs_from_csv(runs)
        points = pareto.points_table(runs, costs)
        return runs, points, pareto.front(points)

    def pareto_table(self):
        if self.pareto is None:
            return self._missing("notebook-09 results")
        return rt.pareto_rows(self.pareto[1], self.pareto[2], front_only=True)

    def pareto_figure(self):
        if self.pareto is None:
            return None
        fig, n = pr.pareto_figure(self.pareto[1], self.pareto[2])
        two = 2 in set(self.pareto[1].seeds)
        return render(fig, "Figure 7. Test top-1 against the logic work per image of every design (markers: kind; "
                           "hollow: degenerate), the front dashed; bars: 95 % intervals over seeds. Below each "
                           "network: the designs at its base width (the dotted box above), enlarged."
                      + clip_note(n["clipped"], TWO_SEEDS if two else "")
                      + (f" {n['labels_left_out']} label(s) found no free place and are left out (the table in the "
                         "appendix names every point)." if n["labels_left_out"] else ""))

    def pareto_verdict(self):
        from . import pareto
        from .records import all_metrics
        if self.pareto is None:
            return None
        runs, points, _ = self.pareto
        text = pareto.verdict(runs, points, pareto.studied_width(points),
                              pareto.recipe_note(all_metrics(self.results_dir), self.profile, self.want))
        return verdict("\n\n".join(line.strip() for line in text.splitlines()))

    # ------------------------------------------------------------------------------------------ §8
    @cached_property
    def steps(self) -> list[dict]:
        return report.step_records(self.results_dir, self.profile, self.code)

    def timing_table(self):
        if not self.steps:
            return self._missing("notebook runs of the pipeline")
        return rt.timing_rows(self.steps, report.STEP_NAMES)

    def timing_figure(self):
        if not self.steps:
            return None
        fig, n = timing_figure(self.steps, BUDGET_MIN.get(self.profile))
        return render(fig, "Figure 8. Each notebook's run, from its start to its end (the pipeline's records); "
                           "notebooks that overlap ran at once, and none ran in a gap." + (f" Without start times: {', '.join(n['untimed'])}."
                                                                   if n["untimed"] else ""))

    def timing_verdict(self):
        timing = report.study_timing(self.results_dir, self.profile, self.code)
        return verdict(rv.timing_verdict(timing, BUDGET_MIN.get(self.profile))) if timing else None

    # ------------------------------------------------------------------------------------------ appendix
    def curves_figure(self):
        hist = report.histories(self.rows, [("01", "baseline"), ("03", "retrain-approx")])
        if not hist:
            return self._missing("training curves")
        fig, n = training_curves(hist)
        short = sorted({f"{rt.network(k.split()[0])} {rt.ROW_LABELS.get(k.split()[1], k.split()[1])}"
                        for k in n["left_out"]})
        return render(fig, "Figure A1. Training loss and validation top-1 after each epoch of the baselines of "
                           "Table 1." + (f" Left out, as they train for one epoch only (no curve; their end points "
                                         f"are in Table 1): {', '.join(short)}." if short else ""))

    def hmv_sweep_table(self):
        table = report.hmv_table(self.rows)
        return self._missing("hierarchical-voter records") if table.empty else rt.hmv_sweep_rows(table)

    def hmv_naive_table(self):
        return None if self.hmv.empty else rt.hmv_cost_rows(self.hmv, how=("naive",))

    def kernel_batch_table(self):
        return None if self.bench is None else rt.kernel_batch_rows(self.bench)

    def kernel_layer_table(self):
        return None if self.bench is None else rt.kernel_layer_rows(self.bench)

    def hardware_tables(self):
        if "deck_m512" not in self.hw:
            return None
        net = self.hw.get("network_totals")
        return Parts(rt.deck_m512_rows(self.hw["deck_m512"]), rt.network_cost_rows(net) if net is not None else None)

    def drop_rows_table(self):
        return None if self.order is None else rt.ordering_rows(self.order)

    def drop_accuracy_figure(self):
        from .voter_drop import MODELS
        from .deck import deck_numbers
        if self.order is None:
            return None
        deck = deck_numbers("main").set_index(["model", "variant"]).top1
        points = self.order[(self.order.convention == "naive") & (self.order.kind == "real")]
        fig, n = pr.drop_vs_accuracy(points, {m: (deck[m, "baseline"], deck[m, "baseline"] - deck[m, "naive"])
                                              for m in MODELS})
        return render(fig, "Figure A2. The naive voter's drop against the float network's top-1 per training point "
                           "of notebook 08 (mean over seeds, 95 % interval), with the deck's two points (stars)."
                      + (f" {n['labels_left_out']} label(s) found no free place." if n["labels_left_out"] else ""))

    def damage_text(self):
        from .voter_drop import damage_lines
        flips = report.step_table("08_voter_drop", "flips", self.results_dir, self.profile, self.code)
        damage = report.step_table("08_voter_drop", "damage", self.results_dir, self.profile, self.code)
        if flips is None or damage is None or flips.empty or damage.empty:
            return None
        return Markdown("\n".join(f"- {line}" for line in damage_lines(flips, damage)))

    def pareto_points_table(self):
        return None if self.pareto is None else rt.pareto_rows(self.pareto[1], self.pareto[2])
