"""Does pushing wrong-class logits up hinder learning? ``lossjax causal`` as a script (the
analysis is :mod:`lossjax.causal_effects`, :mod:`lossjax.within_loss` and
:mod:`lossjax.causal_report`):

    python experiments/causal.py results/mnist_causal [results/fashion_causal ...] --out DIR
"""

import sys

from lossjax import cli

if __name__ == "__main__":
    sys.exit(cli.main(["causal", *sys.argv[1:]]))
