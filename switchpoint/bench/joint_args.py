"""The flags of `switchpoint bench joint` (a light module: `switchpoint --help` does not import the router core).

They are the scenario's single source of defaults: switchpoint.bench.joint builds its Scenario from them.
"""

from __future__ import annotations

import argparse


def add_joint_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("--rate", type=float, default=18.0, help="mean request rate of the default scenario (req/s)")
    b.add_argument("--rates", type=float, nargs="+", help="rates swept (default 12 to 36 by 4; --quick 12 18 24 36)")
    b.add_argument("--strong-replicas", type=int, default=2, help="replicas of the strong (dear, slow) pool")
    b.add_argument("--weak-replicas", type=int, default=4, help="replicas of the weak (cheap, fast) pool")
    b.add_argument("--burst-factor", type=float, default=3.0, help="the rate inside a burst, as a multiple of the mean")
    b.add_argument("--burst-share", type=float, default=0.25, help="the share of every period spent in a burst")
    b.add_argument("--period", type=float, default=20.0, help="seconds from one burst's start to the next")
    b.add_argument("--ttft-ms", type=int, default=1000, help="the TTFT objective (joint's decision; every SLO)")
    b.add_argument("--tpot-ms", type=int, default=None, help="a TPOT objective too (counted in SLO attainment)")
    b.add_argument("--max-quality-loss", type=float, default=0.4,
                   help="joint's objective maxQualityLoss (in the kNN's predicted quality; see bench/joint.py)")
    b.add_argument("--lambda", dest="lam", type=float, default=10.0,
                   help="the kNN selector's lambda (quality points per USD per request)")
    b.add_argument("--k", type=int, default=10, help="the kNN selector's neighbours")
    b.add_argument("--seconds", type=float, default=None, help="seconds of arrivals per run (default and --quick: 60)")
    b.add_argument("--seeds", type=int, nargs="+", help="arrival seeds, pooled (default 7 8 9; --quick: 7)")
    b.add_argument("--quick", action="store_true", help="four rates, one seed")
    b.add_argument("--plot", default="bench-results/joint.png", help="where to write the PNG")
    b.add_argument("--no-plot", action="store_true")
    b.add_argument("--json", action="store_true", help="print one JSON object")
