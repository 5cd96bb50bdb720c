"""The network and everything that carries it: checkpoints, TorchScript, batched inference.

    network.py     HexzNet, the residual policy/value CNN with the hexz TorchScript interface
    checkpoint.py  checkpoint files, TorchScript export, load_model for either; ModelLoadError
    predictor.py   Predictor: numpy batches in, move probabilities and values out
    follow.py      following a training run's newest model (Redis or the server), hot-swapped

The shapes the network reads and writes are the engine's (pyhexz.game.board).
"""

from pyhexz.nn.checkpoint import (
                                  Checkpoint,
                                  ModelLoadError,
                                  export_torchscript,
                                  load_checkpoint,
                                  load_model,
                                  load_model_bytes,
                                  save_checkpoint,
)
from pyhexz.nn.network import ILLEGAL_LOGIT, PRESETS, HexzNet
from pyhexz.nn.predictor import Predictor

__all__ = ["ILLEGAL_LOGIT", "PRESETS", "HexzNet", "Checkpoint", "ModelLoadError", "save_checkpoint",
           "load_checkpoint", "export_torchscript", "load_model", "load_model_bytes", "Predictor"]
