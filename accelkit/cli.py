"""The `accelkit` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from accelkit.config import ConfigError


def cmd_report(args) -> int:
    from rich.console import Console

    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with console.status("DyBit: quantising all-MiniLM-L6-v2 (per-layer SQNR, embedding cosine)..."):
        from accelkit.flows.dybit_accuracy import minilm_study, render_markdown

        study = minilm_study()
    (out / "dybit_minilm.json").write_text(json.dumps(study, indent=2))
    md = "# accelkit report\n\n## DyBit: accuracy on all-MiniLM-L6-v2 (weight SQNR in dB)\n\n" + render_markdown(study)
    (out / "report.md").write_text(md)
    console.print(md)
    console.print(f"report written to {out / 'report.md'} (JSON beside it)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="accelkit", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report", help="run each block's studies and write a Markdown + JSON report")
    r.add_argument("-o", "--out", default="report", help="output folder (default: report/)")
    r.set_defaults(func=cmd_report)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, RuntimeError) as e:
        print(f"accelkit: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
