"""The policy/value network.

The network speaks the hexz TorchScript interface (FLAGZ.md section 7) in eager
mode as well, so the search, the trainer and the hexz Go/C++ side all use one
calling convention::

    forward(board: float32 (N, 11, 11, 10), action_mask: bool (N, 2, 11, 10))
        -> (logits: float32 (N, 220), illegal entries = -1e32,
            value:  float32 (N, 1), tanh, +1 = the player to move wins)

``board`` is channels-first: 11 feature planes over an 11 x 10 grid (the slots
(odd r, c = 9) do not exist; plane 2 marks them blocked). Logit index
``type * 110 + r * 10 + c`` (type 0 = flag, 1 = normal) is exactly the flatten
order of the (2, 11, 10) mask, so masking is ``action_mask.flatten(1)``.
"""


import torch
from torch import nn

from pyhexz.game.board import GRID_CELLS, PLANES, POLICY_SIZE

__all__ = ["ILLEGAL_LOGIT", "PRESETS", "HexzNet"]

# The logit of an illegal move: softmax gives it exactly 0 (hexz uses the same value).
ILLEGAL_LOGIT = -1e32

# name -> (residual blocks, filters)
PRESETS: dict[str, tuple[int, int]] = {"small": (5, 64), "large": (10, 128), "tiny": (2, 16)}

# Head sizes are fixed (not checkpoint params) so that (blocks, filters) alone
# determines the architecture. 2 policy planes -> 220 features, matching hexz.
POLICY_CHANNELS = 2
VALUE_CHANNELS = 1
VALUE_HIDDEN = 128


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the input, then ReLU."""

    def __init__(self, filters: int) -> None:
        super().__init__()
        # No conv bias: the following BatchNorm's beta makes it redundant.
        self.conv1 = nn.Conv2d(filters, filters, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters)
        self.conv2 = nn.Conv2d(filters, filters, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(filters)
        # Zero-init the last BN scale so each block starts as the identity;
        # deep towers then train stably from the first step (Goyal et al. 2017).
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(x + y)


def _squeeze(filters: int, channels: int) -> list[nn.Module]:
    """The start of a head: a 1x1 conv down to a few channels, flattened per position."""
    return [nn.Conv2d(filters, channels, 1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True), nn.Flatten()]


class HexzNet(nn.Module):
    """Residual policy/value CNN with the hexz TorchScript interface.

    ``forward(board, action_mask) -> (logits, value)``; see the module docstring.
    Zero padding in the 3x3 convolutions lets the net see the board edge.
    """

    def __init__(self, blocks: int = 5, filters: int = 64) -> None:
        super().__init__()
        for name, v in (("blocks", blocks), ("filters", filters)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"HexzNet: {name} must be a positive int, got {v!r}")
        self.blocks = blocks
        self.filters = filters
        self.stem = nn.Sequential(
            nn.Conv2d(PLANES, filters, 3, padding=1, bias=False),
            nn.BatchNorm2d(filters),
            nn.ReLU(inplace=True),
        )
        self.tower = nn.Sequential(*[ResidualBlock(filters) for _ in range(blocks)])
        self.policy_head = nn.Sequential(
            *_squeeze(filters, POLICY_CHANNELS),
            nn.Linear(POLICY_CHANNELS * GRID_CELLS, POLICY_SIZE),
        )
        self.value_head = nn.Sequential(
            *_squeeze(filters, VALUE_CHANNELS),
            nn.Linear(VALUE_CHANNELS * GRID_CELLS, VALUE_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(VALUE_HIDDEN, 1),
            nn.Tanh(),
        )

    def forward(self, board: torch.Tensor,
                action_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.tower(self.stem(board))
        # .float(): under fp16 autocast the Linear output is half, which cannot
        # hold -1e32; in fp32 this is a no-op.
        logits = self.policy_head(x).float()
        # Literal rather than ILLEGAL_LOGIT: TorchScript cannot read float globals.
        logits = logits.masked_fill(~action_mask.flatten(1), -1e32)
        value = self.value_head(x).float()
        return logits, value


def unwrap(model: nn.Module) -> nn.Module:
    """Return the plain module behind torch.compile / (Distributed)DataParallel."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model
