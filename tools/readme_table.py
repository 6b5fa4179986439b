"""Print the report's main table (cpu profile) as Markdown for the README: python tools/readme_table.py"""
import sys

from mvlib import report

profile = sys.argv[1] if len(sys.argv) > 1 else "cpu"
t = report.main_table("results", profile).drop(columns=["run", "seeds", "runs of config"])
cols = list(t.columns)
print("| " + " | ".join(cols) + " |")
print("| " + " | ".join("---" for _ in cols) + " |")
for _, r in t.iterrows():
    print("| " + " | ".join("" if v is None or v != v else (f"{v:.2f}" if isinstance(v, float) else str(v)) for v in r) + " |")
