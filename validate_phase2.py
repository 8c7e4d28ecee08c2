"""The seed guide's validation script: ``purrsight validate`` under its documented name.

    python validate_phase2.py --config config/demo.yaml          # the nine checks
    python validate_phase2.py --config config/demo.yaml --quick  # the guide's quick set
    python validate_phase2.py --quick --json                     # JSON on stdout

Without ``--config`` it reads config/train_config.yaml (the guide's Qwen2.5 setup).
"""

import sys

from purrsight.cli import validate_phase2_main

if __name__ == "__main__":
    sys.exit(validate_phase2_main())
