"""``python -m pipeline.samplegen --out sample_logs [--seed N] [--scale X]``."""

from __future__ import annotations

import argparse
import sys

from pipeline.samplegen import DEFAULT_SEED, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.samplegen", description=__doc__)
    parser.add_argument("--out", default="sample_logs", help="output folder (created; files are overwritten)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"scenario seed (default {DEFAULT_SEED})")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the number of users (default 1.0)")
    args = parser.parse_args(argv)
    summary = generate(args.out, seed=args.seed, scale=args.scale)
    total_bytes = sum(f["bytes"] for f in summary["files"].values())
    print(f"wrote {summary['records_total']} records ({total_bytes / 1e6:.2f} MB) to {args.out} "
          f"in {summary['elapsed_s']:.1f}s ({summary['records_per_s']} records/s); "
          f"{len(summary['planted_bad_records'])} planted bad records, "
          f"{len(summary['attack']['forged_tokens'])} forged tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
