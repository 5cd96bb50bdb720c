"""SVG pictures of Flagz positions, for people (notebooks, the web UI, bug reports).

`board_svg(board)` draws the 105 cells as pointy-top hexagons, odd rows shifted half a cell to
the right as in FLAGZ.md section 1, and writes a caption with the turn, move counter, score and
flags left. The SVG is self-contained: no scripts, stylesheets, fonts or images from outside.

Only the public `Board` API is used (`cell`, `turn`, `move`, `score`, `flags_left`, `is_over`,
`winner`) and the engine's constants.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from pyhexz.game.board import COLS, ROWS
from pyhexz.game.board import FLAG as _FLAG
from pyhexz.game.board import GRASS as _GRASS
from pyhexz.game.board import NORMAL as _NORMAL
from pyhexz.game.board import ROCK as _ROCK

__all__ = ["board_svg", "PLAYER_COLORS"]

# Player 1 blue, player 2 red: pieces in full colour, flags on a pale tint of it.
PLAYER_COLORS = {1: "#2f6bd8", 2: "#d8392f"}
_PLAYER_TINTS = {1: "#d6e3fa", 2: "#f8d9d6"}
_PLAYER_NAMES = {1: "blue", 2: "red"}
_EMPTY = "#ebe5d5"
_ROCK_FILL = "#4d4d4d"
_GRASS_FILL = "#7cc26a"
_GRASS_TEXT = "#1d4a12"
_HIGHLIGHT = "#ff9a00"
_LABEL = "#8a8578"
_FONT = "DejaVu Sans, Verdana, Arial, Helvetica, sans-serif"


def _f(x: float) -> str:
    """A coordinate with at most two decimals and no trailing zeros."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def _hexagon(x: float, y: float, radius: float) -> str:
    """The `points` of a pointy-top hexagon centred on (x, y)."""
    pts = []
    for k in range(6):
        a = math.radians(60 * k - 30)
        pts.append(f"{_f(x + radius * math.cos(a))},{_f(y + radius * math.sin(a))}")
    return " ".join(pts)


def _flag_glyph(x: float, y: float, w: float, color: str) -> str:
    """A flag on a pole, about half a cell tall, centred on (x, y)."""
    px = x - 0.17 * w
    top, bottom = y - 0.27 * w, y + 0.27 * w
    pennant = (f"M{_f(px)},{_f(top)} L{_f(x + 0.24 * w)},{_f(top + 0.13 * w)} "
               f"L{_f(px)},{_f(top + 0.26 * w)} Z")
    return (f'<line x1="{_f(px)}" y1="{_f(top)}" x2="{_f(px)}" y2="{_f(bottom)}" '
            f'stroke="{color}" stroke-width="{_f(max(1.0, 0.06 * w))}" stroke-linecap="round"/>'
            f'<path d="{pennant}" fill="{color}"/>')


def _caption(board) -> list[list[tuple[str, str | None]]]:
    """The caption: two lines of (text, colour) pieces, colour None the default text colour."""
    s1, s2 = board.score
    f1, f2 = board.flags_left
    first: list[tuple[str, str | None]] = [(f"move {board.move}  ·  ", None)]
    if board.is_over:
        w = board.winner
        first.append(("game over, ", None))
        first.append((f"winner {w} ({_PLAYER_NAMES[w]})", PLAYER_COLORS[w]) if w in PLAYER_COLORS
                     else ("draw", None))
    else:
        t = board.turn
        first += [("turn: ", None), (f"player {t} ({_PLAYER_NAMES.get(t, '?')})",
                                     PLAYER_COLORS.get(t))]
    second = [("score ", None), (str(s1), PLAYER_COLORS[1]), (" : ", None),
              (str(s2), PLAYER_COLORS[2]), (f"  ·  flags left {f1} : {f2}", None)]
    return [first, second]


def board_svg(board, cell_size: int = 32, highlight: dict | None = None) -> str:
    """The position as a self-contained SVG document.

    cell_size: the width of one hexagon (the distance between neighbouring centres in a row)
    in SVG user units (pixels).
    highlight: optional {(row, col): weight} to shade cells in orange, weight 0..1 (clipped;
    for example visit shares normalised by their maximum). Weights of 0 draw nothing.
    """
    w = float(cell_size)
    if not w > 0:
        raise ValueError(f"cell_size must be positive, got {cell_size}")
    radius = w / math.sqrt(3)         # pointy-top: width = sqrt(3) * radius
    dy = 1.5 * radius                 # distance between rows
    margin = 0.35 * w
    label = 0.55 * w                  # room for the row and column numbers
    cap_font = max(9.0, 0.42 * w)
    cap_h = 3.1 * cap_font            # two caption lines
    x0 = margin + label + w / 2       # centre of (0, 0)
    y0 = cap_h + label + radius
    width = x0 + (COLS - 1) * w + w / 2 + margin
    height = y0 + (ROWS - 1) * dy + radius + margin

    highlight = highlight or {}
    for key in highlight:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"highlight keys must be (row, col), got {key!r}")

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_f(width)}" height="{_f(height)}" '
        f'viewBox="0 0 {_f(width)} {_f(height)}" font-family="{_FONT}">',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
    ]

    # Caption, then the column numbers above row 0 and the row numbers left of each row.
    for k, line in enumerate(_caption(board)):
        spans = "".join(
            f'<tspan fill="{color}" font-weight="bold">{escape(text)}</tspan>' if color
            else f"<tspan>{escape(text)}</tspan>" for text, color in line)
        out.append(f'<text class="caption" x="{_f(margin)}" y="{_f(cap_font * (1.2 + 1.3 * k))}" '
                   f'font-size="{_f(cap_font)}" fill="#333333" xml:space="preserve">{spans}</text>')
    lab_font = max(7.0, 0.3 * w)
    for c in range(COLS):
        out.append(f'<text class="label" x="{_f(x0 + c * w)}" y="{_f(y0 - radius - 0.2 * w)}" '
                   f'font-size="{_f(lab_font)}" fill="{_LABEL}" '
                   f'text-anchor="middle">{c}</text>')
    for r in range(ROWS):
        out.append(f'<text class="label" x="{_f(margin + label / 2)}" y="{_f(y0 + r * dy)}" '
                   f'font-size="{_f(lab_font)}" fill="{_LABEL}" text-anchor="middle" '
                   f'dominant-baseline="central">{r}</text>')

    val_font = 0.46 * w
    for r in range(ROWS):
        for c in range(COLS - (r % 2)):
            x = x0 + c * w + (w / 2 if r % 2 else 0.0)
            y = y0 + r * dy
            ctype, owner, value = board.cell(r, c)
            if ctype == _ROCK:
                kind, fill, title = "rock", _ROCK_FILL, "rock"
            elif ctype == _GRASS:
                kind, fill, title = "grass", _GRASS_FILL, f"grass {value}"
            elif ctype == _FLAG:
                kind, fill, title = f"flag p{owner}", _PLAYER_TINTS.get(owner, _EMPTY), \
                    f"flag of player {owner}"
            elif owner:
                kind, fill, title = f"piece p{owner}", PLAYER_COLORS.get(owner, "#888888"), \
                    f"{value} of player {owner}"
            else:
                kind, fill, title = "empty", _EMPTY, "empty"
            out.append(f'<g class="cell {kind}" data-row="{r}" data-col="{c}">'
                       f'<title>({r}, {c}) {escape(title)}</title>')
            out.append(f'<polygon class="hex" points="{_hexagon(x, y, radius)}" fill="{fill}" '
                       f'stroke="#ffffff" stroke-width="{_f(max(1.0, 0.05 * w))}"/>')
            weight = highlight.get((r, c), 0.0)
            weight = min(1.0, max(0.0, float(weight)))
            if weight > 0:
                out.append(f'<polygon class="highlight" points="{_hexagon(x, y, radius * 0.92)}" '
                           f'fill="{_HIGHLIGHT}" fill-opacity="{_f(0.1 + 0.65 * weight)}"/>')
            if ctype == _FLAG:
                out.append(_flag_glyph(x, y, w, PLAYER_COLORS.get(owner, "#888888")))
            elif ctype == _GRASS or (ctype == _NORMAL and owner):
                color = _GRASS_TEXT if ctype == _GRASS else "#ffffff"
                out.append(f'<text class="value" x="{_f(x)}" y="{_f(y)}" '
                           f'font-size="{_f(val_font)}" '
                           f'font-weight="bold" fill="{color}" text-anchor="middle" '
                           f'dominant-baseline="central">{value}</text>')
            out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
