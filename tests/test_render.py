"""Tests for pyhexz.game.render: the SVG is well-formed XML and shows what is on the board."""

import xml.etree.ElementTree as ET

import pytest

from pyhexz.game.board import Board
from pyhexz.game.render import PLAYER_COLORS, board_svg

NS = {"svg": "http://www.w3.org/2000/svg"}

# Player 1 (x) has a flag, a 1 and a 2; player 2 (o) a flag and a 3; grass 4 and 5; two rocks.
POSITION = """
..  ..  ..  ..  ..  ..  ..  ..  ..  ..
  ..  xF  x1  ..  ..  ..  ..  ..  ..
..  ..  x2  ..  ..  ##  ..  ..  ..  ..
  ..  ..  ..  ..  ..  ..  ..  ..  ..
..  ..  ..  ..  g4  ..  ..  ..  ..  ..
  ..  ..  ..  ..  ..  ..  ..  ..  ..
..  ..  ..  ..  ..  ..  ..  oF  ..  ..
  ..  ..  ..  ..  ..  ..  ..  o3  ..
..  ..  ..  ..  ..  ..  ..  ..  ..  ..
  ..  g5  ..  ..  ..  ..  ..  ##  ..
..  ..  ..  ..  ..  ..  ..  ..  ..  ..
"""


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def cells(root):
    """{(row, col): <g> element} of the 105 cells."""
    out = {}
    for g in root.iter("{http://www.w3.org/2000/svg}g"):
        if "cell" in g.get("class", "").split():
            out[int(g.get("data-row")), int(g.get("data-col"))] = g
    return out


def text_of(elem) -> str:
    return "".join(elem.itertext())


def caption(root) -> str:
    return " ".join(text_of(t) for t in root.iterfind("svg:text[@class='caption']", NS))


def test_new_board_parses_and_has_105_hexagons():
    svg = board_svg(Board.new(1))
    root = parse(svg)
    polys = root.findall(".//svg:polygon", NS)
    assert len(polys) == 105
    assert all(len(p.get("points").split()) == 6 for p in polys)
    assert len(cells(root)) == 105
    classes = [g.get("class") for g in cells(root).values()]
    assert classes.count("cell rock") == 15
    assert classes.count("cell grass") == 5
    assert classes.count("cell empty") == 85
    # Self-contained: no links to anything outside the document.
    assert "href" not in svg and "<script" not in svg and "url(" not in svg


def test_geometry_odd_rows_shifted_half_a_cell():
    root = parse(board_svg(Board.new(2), cell_size=30))
    centre = {}
    for (r, c), g in cells(root).items():
        points = g.find("svg:polygon", NS).get("points").split()
        pts = [tuple(map(float, p.split(","))) for p in points]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        assert max(xs) - min(xs) == pytest.approx(30, abs=0.05)     # pointy-top: width = cell
        assert max(ys) - min(ys) > max(xs) - min(xs)                 # taller than wide
        centre[r, c] = ((max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2)
    assert centre[0, 1][0] - centre[0, 0][0] == pytest.approx(30, abs=0.05)
    assert centre[1, 0][0] - centre[0, 0][0] == pytest.approx(15, abs=0.05)
    assert centre[2, 0][0] == pytest.approx(centre[0, 0][0], abs=0.05)
    assert centre[1, 0][1] > centre[0, 0][1]
    width = float(root.get("width"))
    assert max(x for x, _ in centre.values()) + 15 <= width


def test_shows_values_flags_and_caption():
    b = Board.from_ascii(POSITION, turn=1)
    root = parse(board_svg(b, 32))
    cs = cells(root)
    assert cs[1, 1].get("class") == "cell flag p1"
    assert cs[6, 7].get("class") == "cell flag p2"
    for rc in [(1, 1), (6, 7)]:
        # A flag glyph (pole and pennant) in the owner's colour, no number.
        owner = 1 if rc == (1, 1) else 2
        assert cs[rc].find("svg:path", NS).get("fill") == PLAYER_COLORS[owner]
        assert cs[rc].find("svg:text", NS) is None
    expected = {(1, 2): ("piece p1", "1"), (2, 2): ("piece p1", "2"), (7, 7): ("piece p2", "3"),
                (4, 4): ("grass", "4"), (9, 1): ("grass", "5")}
    for rc, (kind, value) in expected.items():
        assert cs[rc].get("class") == f"cell {kind}"
        assert cs[rc].find("svg:text[@class='value']", NS).text == value
    assert cs[1, 2].find("svg:polygon", NS).get("fill") == PLAYER_COLORS[1]
    assert cs[7, 7].find("svg:polygon", NS).get("fill") == PLAYER_COLORS[2]
    assert cs[2, 5].get("class") == "cell rock"
    assert cs[0, 0].get("class") == "cell empty" and cs[0, 0].find("svg:text", NS) is None
    cap = caption(root)
    assert f"move {b.move}" in cap and "player 1" in cap
    assert "score 3 : 3" in cap and "flags left 2 : 2" in cap    # 1 + 2 and 3
    assert "game over" not in cap


def test_finished_game_caption():
    b = Board.new(5)
    while not b.is_over:
        b.random_move(b.move)
    cap = caption(parse(board_svg(b)))
    s1, s2 = b.score
    assert f"score {s1} : {s2}" in cap
    assert "game over, " + (f"winner {b.winner}" if b.winner else "draw") in cap


class FakeDrawnBoard:
    """Only the attributes render uses: a finished, drawn game on an empty board."""

    turn, move, score, flags_left, is_over, winner = 2, 80, (40, 40), (0, 1), True, 0

    def cell(self, r, c):
        return (0, 0, 0)


def test_draw_caption():
    cap = caption(parse(board_svg(FakeDrawnBoard())))
    assert "game over, draw" in cap and "score 40 : 40" in cap and "flags left 0 : 1" in cap


def test_highlight_shades_cells():
    b = Board.new(3)
    root = parse(board_svg(b, 24, highlight={(0, 0): 1.0, (5, 4): 0.25, (10, 9): 0.0, (3, 3): 7}))
    shaded = root.findall(".//svg:polygon[@class='highlight']", NS)
    assert len(shaded) == 3                      # weight 0 draws nothing
    op = {(int(g.get("data-row")), int(g.get("data-col"))):
          float(g.find("svg:polygon[@class='highlight']", NS).get("fill-opacity"))
          for g in cells(root).values()
          if g.find("svg:polygon[@class='highlight']", NS) is not None}
    assert op[0, 0] > op[5, 4] > 0
    assert op[3, 3] == op[0, 0]                  # clipped to 1
    assert len(root.findall(".//svg:polygon[@class='hex']", NS)) == 105
    with pytest.raises(ValueError, match=r"highlight keys must be \(row, col\), got 3"):
        board_svg(b, highlight={3: 1.0})


def test_bad_cell_size():
    with pytest.raises(ValueError, match="cell_size must be positive, got 0"):
        board_svg(Board.new(1), cell_size=0)
