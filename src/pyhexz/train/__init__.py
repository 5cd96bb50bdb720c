"""Learning: self-play, the trainer, the one-machine job, and the matches that measure strength.

    selfplay.py    one self-play loop for every caller; only where finished games go differs
    trainer.py     replay window, losses, non-finite guards, the Trainer that publishes checkpoints
    local.py       `pyhexz train`: self-play processes and a trainer on one machine, crash-safe
    arena.py       matches over fixed openings from both seats, with Elo
    evaluation.py  the per-checkpoint matches behind the web UI's Elo curve
"""
