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

Beside the two heads of that interface the network has a score head, an auxiliary target
(KataGo's): it predicts the game's final score difference from the mover's view, divided by
``SCORE_SCALE``. ``forward`` leaves it out, so TorchScript and ONNX exports keep the hexz
signature; ``forward_with_score`` returns all three. Learning how much a position is won by,
not only whether, gives the trunk a denser signal than the win/loss alone.
"""


import torch
from torch import nn

from pyhexz.game.board import GRID_CELLS, PLANES, POLICY_SIZE

__all__ = ["ILLEGAL_LOGIT", "OPTIONAL_HEADS", "PRESETS", "SCORE_SCALE", "HexzNet"]

# The logit of an illegal move: softmax gives it exactly 0 (hexz uses the same value).
ILLEGAL_LOGIT = -1e32

# name -> (residual blocks, filters)
PRESETS: dict[str, tuple[int, int]] = {"small": (5, 64), "large": (10, 128), "tiny": (2, 16)}

# Head sizes are fixed (not checkpoint params) so that (blocks, filters) alone
# determines the architecture. 2 policy planes -> 220 features, matching hexz.
POLICY_CHANNELS = 2
VALUE_CHANNELS = 1
VALUE_HIDDEN = 128

# The score head's output times this is a score difference in points. Final differences of
# random games have a standard deviation of about 9 points (at most a few dozen); this brings
# the target near unit size.
SCORE_SCALE = 10.0
# Heads that checkpoints written before them lack: such a checkpoint loads with the head
# freshly initialised (nn/checkpoint.py). They are registered last, so their parameters come
# last in `parameters()`, after those of the older checkpoint (the trainer relies on this to
# keep the optimizer's state).
OPTIONAL_HEADS = ("score_head",)


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


class GlobalPoolingBlock(nn.Module):
    """A residual block biased by board-wide statistics (KataGo's global pooling bias).

    A quarter of the first convolution's channels are pooled over the whole board (mean and
    max), and a linear layer turns them into a bias for each of the other channels. A tower of
    3x3 convolutions sees only its receptive field; in Flagz the worth of a move depends on
    things anywhere on the board (the score, flags left, a region far away). Otherwise as
    ResidualBlock: conv-BN-ReLU-conv-BN plus the input, then ReLU.
    """

    def __init__(self, filters: int) -> None:
        super().__init__()
        self.pooled = max(1, filters // 4)
        rest = filters - self.pooled
        self.conv1 = nn.Conv2d(filters, filters, 3, padding=1, bias=False)
        self.bn_pooled = nn.BatchNorm2d(self.pooled)
        self.to_bias = nn.Linear(2 * self.pooled, rest)
        self.bn1 = nn.BatchNorm2d(rest)
        self.conv2 = nn.Conv2d(rest, filters, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(filters)
        nn.init.zeros_(self.bn2.weight)   # starts as the identity, as ResidualBlock

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        g = torch.relu(self.bn_pooled(y[:, :self.pooled]))
        stats = torch.cat([g.mean(dim=[2, 3]), g.amax(dim=[2, 3])], dim=1)
        r = y[:, self.pooled:] + self.to_bias(stats)[:, :, None, None]
        y = self.bn2(self.conv2(torch.relu(self.bn1(r))))
        return torch.relu(x + y)


def _pools(i: int, blocks: int) -> bool:
    """Whether block i of a global-pooling tower is a GlobalPoolingBlock: the second of every
    three (KataGo spreads a few through the tower), and the only one of a one-block tower."""
    return i % 3 == 1 or blocks == 1


def _squeeze(filters: int, channels: int) -> list[nn.Module]:
    """The start of a head: a 1x1 conv down to a few channels, flattened per position."""
    return [nn.Conv2d(filters, channels, 1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True), nn.Flatten()]


class HexzNet(nn.Module):
    """Residual policy/value CNN with the hexz TorchScript interface.

    ``forward(board, action_mask) -> (logits, value)``; see the module docstring.
    Zero padding in the 3x3 convolutions lets the net see the board edge.
    ``global_pooling``: some residual blocks are GlobalPoolingBlocks.
    """

    # TorchScript compiles a module's properties unless told not to; `params` is Python's.
    __jit_unused_properties__ = ["params"]

    def __init__(self, blocks: int = 5, filters: int = 64, global_pooling: bool = False) -> None:
        super().__init__()
        for name, v in (("blocks", blocks), ("filters", filters)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"HexzNet: {name} must be a positive int, got {v!r}")
        if not isinstance(global_pooling, bool):
            raise ValueError(f"HexzNet: global_pooling must be a bool, got {global_pooling!r}")
        self.blocks = blocks
        self.filters = filters
        self.global_pooling = global_pooling
        self.stem = nn.Sequential(
            nn.Conv2d(PLANES, filters, 3, padding=1, bias=False),
            nn.BatchNorm2d(filters),
            nn.ReLU(inplace=True),
        )
        self.tower = nn.Sequential(*[
            GlobalPoolingBlock(filters) if global_pooling and _pools(i, blocks)
            else ResidualBlock(filters) for i in range(blocks)])
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
        # Last, as OPTIONAL_HEADS says. No tanh: a difference in SCORE_SCALE units.
        self.score_head = nn.Sequential(
            *_squeeze(filters, VALUE_CHANNELS),
            nn.Linear(VALUE_CHANNELS * GRID_CELLS, VALUE_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(VALUE_HIDDEN, 1),
        )

    @property
    def params(self) -> dict:
        """The constructor's arguments, as checkpoints record them. global_pooling only when
        on, so that a checkpoint of the plain architecture stays what older pyhexz reads."""
        out: dict = {"blocks": self.blocks, "filters": self.filters}
        if self.global_pooling:
            out["global_pooling"] = True
        return out

    def forward(self, board: torch.Tensor,
                action_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.tower(self.stem(board))
        return self._policy(x, action_mask), self.value_head(x).float()

    def forward_with_score(self, board: torch.Tensor, action_mask: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, value, score): forward's outputs and the score head's, (N, 1), the final
        score difference from the mover's view in SCORE_SCALE units."""
        x = self.tower(self.stem(board))
        return (self._policy(x, action_mask), self.value_head(x).float(),
                self.score_head(x).float())

    def _policy(self, x: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
        # .float(): under fp16 autocast the Linear output is half, which cannot
        # hold -1e32; in fp32 this is a no-op.
        logits = self.policy_head(x).float()
        # Literal rather than ILLEGAL_LOGIT: TorchScript cannot read float globals.
        return logits.masked_fill(~action_mask.flatten(1), -1e32)


def unwrap(model: nn.Module) -> nn.Module:
    """Return the plain module behind torch.compile / (Distributed)DataParallel."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model
