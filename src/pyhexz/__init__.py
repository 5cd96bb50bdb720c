"""pyhexz: AlphaZero-style self-play training and a CPU player for Flagz, the game of hexz."""

__version__ = "0.1.0"
