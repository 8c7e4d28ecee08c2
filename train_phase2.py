"""The seed guide's entry point: ``purrsight train phase2`` under its documented name.

    python train_phase2.py --config config/train_config.yaml
    python train_phase2.py --config config/train_config.yaml --resume
    python train_phase2.py --config config/demo.yaml --batch-size 4 --debug
    torchrun --nproc_per_node=4 train_phase2.py --config config/train_config.yaml

Without ``--config`` it reads config/train_config.yaml (the guide's Qwen2.5 setup).
"""

import sys

from purrsight.cli import train_phase2_main

if __name__ == "__main__":
    sys.exit(train_phase2_main())
