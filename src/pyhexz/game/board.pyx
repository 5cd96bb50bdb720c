# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The Flagz rules engine, move for move what the hexz Go game server referees.

FLAGZ.md is the reference for the rules; the comments here point to its sections. The whole
position lives in one C struct (board.pxd), so copies are cheap and the compiled search in
`pyhexz.search.mcts` works on positions without touching Python objects. The Python API is thin:
`Board.new`, `Board.from_proto`, `legal_moves`, `play`, `encode`, `playout` and a few
properties.

A move is a tuple `(row, col, type)` with type 0 (NORMAL) or 5 (FLAG), the values of the
protobuf enum `Field.CellType`.
"""

import os

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int8_t, uint8_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

cnp.import_array()

# The one home of the board's shapes and encodings (FLAGZ.md sections 1 and 7): every other
# module, the network included, takes them from here.
NORMAL = CELL_NORMAL        # cell types: the values of the protobuf enum Field.CellType
GRASS = CELL_GRASS
ROCK = CELL_ROCK
FLAG = CELL_FLAG
ROWS = NROWS
COLS = NCOLS
CELLS = NCELLS              # the cells that exist
GRID_CELLS = NGRID          # ROWS * COLS slots of the tensor grid
PLANES = NPLANES
POLICY_SIZE = NMOVES        # policy index: type * GRID_CELLS + row * COLS + col (type 0 flag)
BOARD_SHAPE = (NPLANES, NROWS, NCOLS)   # the network's input planes, channels first
MASK_SHAPE = (2, NROWS, NCOLS)          # legal moves: [0] flags, [1] normal moves

_CELL_NAMES = {CELL_NORMAL: "NORMAL", CELL_GRASS: "GRASS", CELL_ROCK: "ROCK", CELL_FLAG: "FLAG"}

cdef enum:
    NROCKS = 15     # rocks of every position, never more or fewer (FLAGZ.md section 3)
    NGRASS = 5      # grass cells of the initial position, valued 1..5


class IllegalMoveError(ValueError):
    """A move that the rules do not allow; the board is left unchanged."""


class InvalidStateError(ValueError):
    """A serialized state that is malformed or contradicts itself."""


# ---------------------------------------------------------------------------
# Geometry (FLAGZ.md section 1), computed once at import.

cdef int ROW_OF[NCELLS]
cdef int COL_OF[NCELLS]
cdef int NB[NCELLS][6]     # neighbours in the Go server's order
cdef int NB_N[NCELLS]


cdef inline bint _valid(int r, int c) noexcept nogil:
    return 0 <= r < NROWS and 0 <= c < NCOLS - (r & 1)


cdef int cell_index(int row, int col) noexcept nogil:
    return 19 * (row >> 1) + 10 * (row & 1) + col


cdef int cell_row(int i) noexcept nogil:
    return ROW_OF[i]


cdef int cell_col(int i) noexcept nogil:
    return COL_OF[i]


cdef void _init_geometry():
    cdef int r, c, i, k, s, j
    cdef int dr[6]
    cdef int dc[6]
    for r in range(NROWS):
        s = r & 1
        for c in range(NCOLS - s):
            i = cell_index(r, c)
            ROW_OF[i] = r
            COL_OF[i] = c
            # (r, c+1), (r-1, c+s), (r-1, c-1+s), (r, c-1), (r+1, c-1+s), (r+1, c+s)
            dr[0] = 0;  dc[0] = 1
            dr[1] = -1; dc[1] = s
            dr[2] = -1; dc[2] = s - 1
            dr[3] = 0;  dc[3] = -1
            dr[4] = 1;  dc[4] = s - 1
            dr[5] = 1;  dc[5] = s
            k = 0
            for j in range(6):
                if _valid(r + dr[j], c + dc[j]):
                    NB[i][k] = cell_index(r + dr[j], c + dc[j])
                    k += 1
            NB_N[i] = k


_init_geometry()


def neighbors(int row, int col):
    """The neighbours of a cell as (row, col) tuples, in the Go server's order."""
    if not _valid(row, col):
        raise ValueError(f"({row}, {col}) is not a cell of the board")
    cdef int i = cell_index(row, col)
    return [(ROW_OF[NB[i][k]], COL_OF[NB[i][k]]) for k in range(NB_N[i])]


def policy_index(int row, int col, int cell_type):
    """Index of a move in the network's 220 policy outputs (FLAGZ.md section 7)."""
    return (0 if cell_type == CELL_FLAG else NGRID) + row * NCOLS + col


def policy_move_tuple(int index):
    """The move `(row, col, type)` of a policy index: the inverse of policy_index."""
    if not 0 <= index < NMOVES:
        raise ValueError(f"policy index {index} is not in [0, {NMOVES})")
    t, rc = divmod(index, NGRID)
    return rc // NCOLS, rc % NCOLS, (CELL_FLAG if t == 0 else CELL_NORMAL)


# Moves as Python tuples, made once: legal_moves() only has to put references in a list.
_MOVE_TUPLES = [[(ROW_OF[i], COL_OF[i], CELL_NORMAL), (ROW_OF[i], COL_OF[i], CELL_FLAG)]
                for i in range(NCELLS)]


# ---------------------------------------------------------------------------
# Random numbers: splitmix64. Small, fast, and seeded the same on every platform, so
# `Board.new(seed)` and `playout(seed)` are reproducible.

cdef uint64_t rng_next(Rng* r) noexcept nogil:
    r.s += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = r.s
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef int rng_below(Rng* r, int n) noexcept nogil:
    # Multiply-shift: maps 32 random bits onto [0, n) with negligible bias for n <= 220.
    return <int>(((rng_next(r) >> 32) * <uint64_t>n) >> 32)


cdef uint64_t _seed_value(seed) except? 0:
    if seed is None:
        return int.from_bytes(os.urandom(8), "little")
    return (<object>seed) & 0xFFFFFFFFFFFFFFFF


# ---------------------------------------------------------------------------
# Move lists.

cdef inline void _list_add(uint8_t* lst, uint8_t* pos, int* n, int i) noexcept nogil:
    pos[i] = n[0]
    lst[n[0]] = i
    n[0] += 1


cdef inline void _list_remove(uint8_t* lst, uint8_t* pos, int* n, int i) noexcept nogil:
    cdef int p = pos[i]
    if p == NOT_LISTED:
        return
    n[0] -= 1
    cdef int last = lst[n[0]]
    lst[p] = last
    pos[last] = p
    pos[i] = NOT_LISTED


cdef inline bint _empty(const State* s, int i) noexcept nogil:
    return s.ctype[i] == CELL_NORMAL and s.owner[i] == 0


# ---------------------------------------------------------------------------
# Position hash (Zobrist 1970): the key of the search's evaluation cache and of the endgame
# solver's table (pyhexz.search).
#
# Everything the rules and the network encoding depend on is a function of the cells, the
# flags left and the player to move: next values, move lists and scores derive from the cells
# (pieces are never removed, so blocking too), and within one game the move counter is the
# number of cells filled by moves. So two positions of a game that hash alike are the same
# position reached by different move orders, barring a 64-bit collision (a lookup among 10^5
# cached positions takes one for another with a probability of about 10^-14).
#
# The cells' part, `State.cells_hash`, is kept up to date by every change of a cell (a move, a
# capture) and computed afresh by _derive; position_hash adds the flags and the turn, so
# reading it costs three XORs.

cdef enum:
    NCODES = 19     # what a cell holds: see _cell_code
cdef uint64_t ZOBRIST_CELL[NCELLS][NCODES]
cdef uint64_t ZOBRIST_FLAGS[2][NFLAGS + 1]
cdef uint64_t ZOBRIST_TURN


cdef inline int _cell_code(const State* s, int i) noexcept nogil:
    """0 empty, 1 rock, 2..6 grass 1..5, 7..16 a piece of player 1 or 2 valued 1..5, 17..18 a
    flag of player 1 or 2."""
    cdef int t = s.ctype[i]
    if t == CELL_NORMAL:
        return 0 if s.owner[i] == 0 else 6 + 5 * (s.owner[i] - 1) + s.value[i]
    if t == CELL_ROCK:
        return 1
    if t == CELL_GRASS:
        return 1 + s.value[i]
    return 16 + s.owner[i]   # CELL_FLAG


cdef void _init_zobrist():
    # Fixed keys from a fixed seed: hashes are the same in every process and on every run.
    # Code 0 (an empty cell) has key 0, so empty cells leave the hash alone.
    global ZOBRIST_TURN
    cdef Rng rng
    cdef int i, k, p
    rng.s = 0x5EED0F1A62
    for i in range(NCELLS):
        ZOBRIST_CELL[i][0] = 0
        for k in range(1, NCODES):
            ZOBRIST_CELL[i][k] = rng_next(&rng)
    for p in range(2):
        for k in range(NFLAGS + 1):
            ZOBRIST_FLAGS[p][k] = rng_next(&rng)
    ZOBRIST_TURN = rng_next(&rng)


_init_zobrist()


cdef uint64_t _cells_hash(const State* s) noexcept nogil:
    cdef uint64_t h = 0
    cdef int i
    for i in range(NCELLS):
        h ^= ZOBRIST_CELL[i][_cell_code(s, i)]
    return h


cdef uint64_t position_hash(const State* s) noexcept nogil:
    cdef uint64_t h = s.cells_hash ^ ZOBRIST_FLAGS[0][s.flags[0]] ^ ZOBRIST_FLAGS[1][s.flags[1]]
    return h ^ ZOBRIST_TURN if s.turn == 2 else h


# ---------------------------------------------------------------------------
# Rules (FLAGZ.md sections 5 and 6).

cdef void _update_neighbors(State* s, int i, int p, int v) noexcept nogil:
    """Effects of a piece of value v (flag: 0) just placed or captured by player index p on i."""
    cdef int k, j, g
    for k in range(NB_N[i]):
        j = NB[i][k]
        if _empty(s, j):
            if v == MAX_VALUE:
                # Blocking is permanent: -1 is never raised again.
                _list_remove(s.nm_list[p], s.nm_pos[p], &s.nm_n[p], j)
                s.nv[p][j] = -1
            elif s.nv[p][j] == 0:
                s.nv[p][j] = v + 1
                _list_add(s.nm_list[p], s.nm_pos[p], &s.nm_n[p], j)
            elif s.nv[p][j] > v + 1:
                s.nv[p][j] = v + 1
        elif s.ctype[j] == CELL_GRASS and s.value[j] <= v:
            # A capture is not a move; it acts like placing the grass value, so captures chain.
            g = s.value[j]
            s.cells_hash ^= ZOBRIST_CELL[j][_cell_code(s, j)]
            s.ctype[j] = CELL_NORMAL
            s.owner[j] = p + 1
            s.cells_hash ^= ZOBRIST_CELL[j][_cell_code(s, j)]
            s.score[p] += g
            _update_neighbors(s, j, p, g)


cdef void _recompute(State* s) noexcept nogil:
    """Skips a stuck player and detects the end of the game, as the Go server does."""
    cdef bint can1 = s.nm_n[0] > 0 or (s.free_n > 0 and s.flags[0] > 0)
    cdef bint can2 = s.nm_n[1] > 0 or (s.free_n > 0 and s.flags[1] > 0)
    if can2 and not can1:
        s.turn = 2
    elif can1 and not can2:
        s.turn = 1
    if (s.free_n == 0 or not (can1 or can2)
            or (s.score[0] > s.score[1] and not can2)
            or (s.score[1] > s.score[0] and not can1)):
        s.over = 1


cdef void apply_move(State* s, int i, int is_flag) noexcept nogil:
    cdef int p = s.turn - 1
    cdef int v
    if is_flag:
        v = 0
        s.ctype[i] = CELL_FLAG
        s.flags[p] -= 1
    else:
        v = s.nv[p][i]
        s.ctype[i] = CELL_NORMAL
        s.score[p] += v
    s.owner[i] = p + 1
    s.value[i] = v
    s.cells_hash ^= ZOBRIST_CELL[i][_cell_code(s, i)]   # the cell was empty: code 0
    _list_remove(s.free_list, s.free_pos, &s.free_n, i)
    _list_remove(s.nm_list[0], s.nm_pos[0], &s.nm_n[0], i)
    _list_remove(s.nm_list[1], s.nm_pos[1], &s.nm_n[1], i)
    _update_neighbors(s, i, p, v)
    s.turn = 3 - s.turn
    s.move += 1
    _recompute(s)


cdef void apply_policy_move(State* s, int pmove) noexcept nogil:
    cdef int t = pmove // NGRID
    cdef int rc = pmove - t * NGRID
    apply_move(s, cell_index(rc // NCOLS, rc % NCOLS), t == 0)


cdef int move_count(const State* s) noexcept nogil:
    if s.over:
        return 0
    cdef int p = s.turn - 1
    return s.nm_n[p] + (s.free_n if s.flags[p] > 0 else 0)


cdef int legal_policy_moves(const State* s, int* moves) noexcept nogil:
    if s.over:
        return 0
    cdef int p = s.turn - 1
    cdef int n = 0, i, base
    cdef bint flags = s.flags[p] > 0
    for i in range(NCELLS):
        if _empty(s, i):
            base = ROW_OF[i] * NCOLS + COL_OF[i]
            if flags:
                moves[n] = base
                n += 1
            if s.nv[p][i] > 0:
                moves[n] = NGRID + base
                n += 1
    return n


cdef void random_move(State* s, Rng* rng) noexcept nogil:
    """Plays a uniformly random legal move; the game must not be over."""
    cdef int p = s.turn - 1
    cdef int nflag = s.free_n if s.flags[p] > 0 else 0
    cdef int k = rng_below(rng, s.nm_n[p] + nflag)
    if k < nflag:
        apply_move(s, s.free_list[k], 1)
    else:
        apply_move(s, s.nm_list[p][k - nflag], 0)


cdef int winner_of(const State* s) noexcept nogil:
    if not s.over or s.score[0] == s.score[1]:
        return 0
    return 1 if s.score[0] > s.score[1] else 2


cdef int playout_state(State* s, Rng* rng) noexcept nogil:
    while not s.over:
        random_move(s, rng)
    return winner_of(s)


cdef void encode_state(const State* s, float* planes, uint8_t* mask) noexcept nogil:
    # Planes (FLAGZ.md section 7), from the view of the player to move:
    # 0 own flags, 1 own values, 2 own blocked, 3 own next value, 4 own flags left,
    # 5..9 the same for the opponent, 10 uncaptured grass.
    cdef int me = s.turn - 1
    cdef int q, base, i, r, c, t
    cdef int plane = NROWS * NCOLS
    memset(planes, 0, NPLANES * plane * sizeof(float))
    memset(mask, 0, 2 * plane)
    for q in range(2):
        base = (0 if q == me else 5) * plane
        for t in range(plane):
            planes[base + 2 * plane + t] = 1.0   # blocked unless found empty below
            planes[base + 4 * plane + t] = s.flags[q]
    for i in range(NCELLS):
        t = ROW_OF[i] * NCOLS + COL_OF[i]
        if s.ctype[i] == CELL_GRASS:
            planes[10 * plane + t] = s.value[i]
        elif s.owner[i] != 0:
            base = (0 if s.owner[i] - 1 == me else 5) * plane
            if s.ctype[i] == CELL_FLAG:
                planes[base + t] = 1.0
            else:
                planes[base + plane + t] = s.value[i]
        elif s.ctype[i] == CELL_NORMAL:
            for q in range(2):
                base = (0 if q == me else 5) * plane
                if s.nv[q][i] >= 0:
                    planes[base + 2 * plane + t] = 0.0
                if s.nv[q][i] > 0:
                    planes[base + 3 * plane + t] = s.nv[q][i]
            if not s.over:
                if s.flags[me] > 0:
                    mask[t] = 1
                if s.nv[me][i] > 0:
                    mask[plane + t] = 1


# ---------------------------------------------------------------------------
# Checking encoded positions: planes and masks that arrive from elsewhere (training examples)
# must be the encoding of a position the rules can reach.

PLANE_NAMES = ("own flags", "own piece values", "own blocked", "own next value",
               "own flags left", "opponent flags", "opponent piece values", "opponent blocked",
               "opponent next value", "opponent flags left", "uncaptured grass")
# The planes that say what stands on a cell (at most one of them is non-zero) and their
# largest value: own flag, own piece, opponent flag, opponent piece, grass.
cdef int CONTENT_PLANE[5]
cdef int CONTENT_MAX[5]
CONTENT_PLANE[:] = [0, 1, 5, 6, 10]
CONTENT_MAX[:] = [1, MAX_VALUE, 1, MAX_VALUE, MAX_VALUE]


cdef str _slot(int t):
    r, c = divmod(t, NCOLS)
    return f"({r}, {c})" if _valid(r, c) else f"({r}, {c}) (no cell there)"


cdef int _count(float v, int hi) noexcept nogil:
    """`v` as an integer in 0..hi, or -1 if it is not one."""
    if 0 <= v <= hi and v == <int>v:
        return <int>v
    return -1


cdef bint _next_to_fives_of_both(const State* s, int i) noexcept nogil:
    cdef bint fives[2]
    fives[0] = fives[1] = False
    cdef int k, j
    for k in range(NB_N[i]):
        j = NB[i][k]
        if s.ctype[j] == CELL_NORMAL and s.owner[j] != 0 and s.value[j] == MAX_VALUE:
            fives[s.owner[j] - 1] = True
    return fives[0] and fives[1]


# What is wrong with an encoded position (_check_one), with the numbers its message needs.
cdef enum:
    OK = 0
    BAD_FLAGS_LEFT      # plane, value
    BAD_CONTENT         # plane, slot, value, hi
    SEVERAL             # slot, hi = bit set of the CONTENT_PLANE entries in use
    GRASS_TWICE         # hi = the grass value
    FLAG_COUNT          # plane = player (0 mover), slot = on the board, hi = left
    ROCK_COUNT          # slot = rocks
    GAME_OVER
    MOVER_STUCK
    PLANE_DIFFERS       # plane, slot, value, want
    MASK_DIFFERS        # plane (0 flag, 1 normal), slot, value, want

cdef struct Problem:
    int code
    int plane
    int slot
    int hi
    float value
    float want


cdef int _problem(Problem* p, int code, int plane, int slot, int hi, float value,
                  float want) noexcept nogil:
    p.code, p.plane, p.slot, p.hi, p.value, p.want = code, plane, slot, hi, value, want
    return code


cdef int _rebuild(const float* planes, const uint8_t* mask, State* s, Problem* p) noexcept nogil:
    """Fills `s` with the position the planes describe, the player to move as player 1;
    returns OK or what is wrong (details in `p`).

    The planes hold every piece, flag and grass value and both players' flags left; the
    rest of the cells are empty or rocks. A rock and an empty cell next to 5s of both players
    encode alike (blocked for both, no next value): the flag moves of the mask tell them apart
    while the mover has flags; without flags either reading encodes the same.
    """
    cdef int g = NGRID
    cdef int i, t, k, q, v, used, rocks = 0, unexplained = 0, grass_seen = 0
    cdef int vals[5]
    cdef int on_board[2]
    memset(s, 0, sizeof(State))
    s.turn = 1
    for q in range(2):
        v = _count(planes[(4 + 5 * q) * g], NFLAGS)
        if v < 0:
            return _problem(p, BAD_FLAGS_LEFT, 4 + 5 * q, 0, NFLAGS, planes[(4 + 5 * q) * g], 0)
        s.flags[q] = v
        on_board[q] = 0
    for i in range(NCELLS):
        t = ROW_OF[i] * NCOLS + COL_OF[i]
        used = 0
        for k in range(5):
            v = _count(planes[CONTENT_PLANE[k] * g + t], CONTENT_MAX[k])
            if v < 0:
                return _problem(p, BAD_CONTENT, CONTENT_PLANE[k], t, CONTENT_MAX[k],
                                planes[CONTENT_PLANE[k] * g + t], 0)
            vals[k] = v
            if v:
                used |= 1 << k
        if used & (used - 1):
            return _problem(p, SEVERAL, 0, t, used, 0, 0)
        if vals[0] or vals[2]:
            q = 0 if vals[0] else 1
            s.ctype[i] = CELL_FLAG
            s.owner[i] = q + 1
            on_board[q] += 1
        elif vals[1] or vals[3]:
            s.owner[i] = 1 if vals[1] else 2
            s.value[i] = vals[1] + vals[3]
        elif vals[4]:
            if grass_seen & (1 << vals[4]):
                return _problem(p, GRASS_TWICE, 0, t, vals[4], 0, 0)
            grass_seen |= 1 << vals[4]
            s.ctype[i] = CELL_GRASS
            s.value[i] = vals[4]
        elif (planes[2 * g + t] == 1 and planes[7 * g + t] == 1
              and not (s.flags[0] > 0 and mask[t])):
            s.ctype[i] = CELL_ROCK
            rocks += 1
    for q in range(2):
        if on_board[q] + s.flags[q] != NFLAGS:
            return _problem(p, FLAG_COUNT, q, on_board[q], s.flags[q], 0, 0)
    _derive(s)
    for i in range(NCELLS):
        if s.ctype[i] == CELL_ROCK and not _next_to_fives_of_both(s, i):
            unexplained += 1
    # Without flags, the cells read as rocks may include empty ones next to 5s of both players;
    # those aside, there must be the position's 15 rocks.
    if (s.flags[0] > 0 and rocks != NROCKS) or rocks < NROCKS or unexplained > NROCKS:
        return _problem(p, ROCK_COUNT, 0, rocks, 0, 0, 0)
    _recompute(s)
    if s.over:
        return _problem(p, GAME_OVER, 0, 0, 0, 0, 0)
    if s.turn != 1:
        return _problem(p, MOVER_STUCK, 0, 0, 0, 0, 0)
    return OK


cdef int _check_one(const float* planes, const uint8_t* mask, Problem* p) noexcept nogil:
    """OK if planes and mask are exactly the encoding of the position they describe."""
    cdef State s
    cdef float want_planes[NPLANES * NGRID]
    cdef uint8_t want_mask[2 * NGRID]
    cdef int k
    if _rebuild(planes, mask, &s, p) != OK:
        return p.code
    encode_state(&s, want_planes, want_mask)
    if memcmp(planes, want_planes, sizeof(want_planes)) != 0:
        for k in range(NPLANES * NGRID):
            if planes[k] != want_planes[k]:
                return _problem(p, PLANE_DIFFERS, k // NGRID, k % NGRID, 0, planes[k],
                                want_planes[k])
    if memcmp(mask, want_mask, sizeof(want_mask)) != 0:
        for k in range(2 * NGRID):
            if mask[k] != want_mask[k]:
                return _problem(p, MASK_DIFFERS, k // NGRID, k % NGRID, 0, mask[k], want_mask[k])
    return OK


# What each problem code says; the fields are _explain's.
_PROBLEMS = {
    BAD_FLAGS_LEFT: "plane {plane} ({name}) is {value:g}, not a count of 0..{hi} flags",
    BAD_CONTENT: "plane {plane} ({name}) at {slot} is {value:g}, not an integer in 0..{hi}",
    SEVERAL: "cell {slot} holds several things at once ({held})",
    GRASS_TWICE: "grass of value {hi} is on two cells; each value is on one at most",
    FLAG_COUNT: "{who} has {count} flags on the board and {hi} left; these add up to {flags}",
    ROCK_COUNT: ("{count} cells are blocked for both players with nothing on them and no flag "
                 "move; a position has {rocks} rocks"),
    GAME_OVER: "the game is over in this position: there is no move to learn",
    MOVER_STUCK: "the player to move cannot move in this position",
    PLANE_DIFFERS: "plane {plane} ({name}) at {slot} is {value:g} where the position gives {want:g}",
    MASK_DIFFERS: ("action_mask says a {kind} move at {slot} is {legal}, the position says "
                   "{legal_want}"),
}


cdef str _explain(const Problem* p):
    cdef int k
    return _PROBLEMS[p.code].format(
        plane=p.plane, name=PLANE_NAMES[p.plane] if 0 <= p.plane < NPLANES else "",
        slot=_slot(p.slot), count=p.slot, value=p.value, want=p.want, hi=p.hi,
        held=", ".join(PLANE_NAMES[CONTENT_PLANE[k]] for k in range(5) if p.hi & (1 << k)),
        who="the player to move" if p.plane == 0 else "the opponent",
        kind="flag" if p.plane == 0 else "normal", legal="legal" if p.value else "illegal",
        legal_want="legal" if p.want else "illegal", flags=NFLAGS, rocks=NROCKS)


def check_encoded(planes, masks):
    """The first (index, what is wrong) among encoded positions that are not the encoding of a
    Flagz position whose player to move can move, or None if all are.

    `planes`: float32 (N, 11, 11, 10); `masks`: bool (N, 2, 11, 10). Each position is rebuilt
    from its planes (pieces, flags, grass, flags left, rocks) and encoded again; planes and
    mask must come back exactly: every plane one-hot or a count where the encoding makes it
    one, next values and blocked cells as the pieces imply, the mask exactly the legal moves.
    Training servers check every example they accept, so this runs without the GIL, a few
    microseconds a position.
    """
    p = np.ascontiguousarray(planes, dtype=np.float32)
    m = np.ascontiguousarray(masks, dtype=np.bool_).view(np.uint8)
    n = len(p)
    if p.shape != (n,) + BOARD_SHAPE or m.shape != (n,) + MASK_SHAPE:
        raise ValueError(f"expected planes (N,) + {BOARD_SHAPE} and masks (N,) + {MASK_SHAPE}, "
                         f"got {p.shape} and {m.shape}")
    if n == 0:
        return None
    cdef const float[:, :, :, ::1] pv = p
    cdef const uint8_t[:, :, :, ::1] mv = m
    cdef Problem problem
    cdef Py_ssize_t e, bad = -1
    with nogil:
        for e in range(n):
            if _check_one(&pv[e, 0, 0, 0], &mv[e, 0, 0, 0], &problem) != OK:
                bad = e
                break
    return None if bad < 0 else (int(bad), _explain(&problem))


# ---------------------------------------------------------------------------
# Building a consistent state from cell contents (shared by protobuf and ASCII input).

cdef str _cell_name(int i):
    return f"({ROW_OF[i]}, {COL_OF[i]})"


cdef void _derive(State* s) noexcept nogil:
    """Fills next values of empty cells, move lists, counters and the hash from the cells
    alone."""
    cdef int i, k, j, p, v, best
    s.cells_hash = _cells_hash(s)
    s.free_n = 0
    s.nm_n[0] = 0
    s.nm_n[1] = 0
    memset(s.free_pos, NOT_LISTED, NCELLS)
    memset(s.nm_pos, NOT_LISTED, 2 * NCELLS)
    s.score[0] = 0
    s.score[1] = 0
    for i in range(NCELLS):
        if s.ctype[i] == CELL_NORMAL and s.owner[i] != 0:
            s.score[s.owner[i] - 1] += s.value[i]
        if not _empty(s, i):
            continue
        _list_add(s.free_list, s.free_pos, &s.free_n, i)
        for p in range(2):
            best = 0
            for k in range(NB_N[i]):
                j = NB[i][k]
                if s.owner[j] == p + 1:
                    v = s.value[j]
                    if v == MAX_VALUE:
                        best = -1
                        break
                    if best == 0 or v + 1 < best:
                        best = v + 1
            s.nv[p][i] = best
            if best > 0:
                _list_add(s.nm_list[p], s.nm_pos[p], &s.nm_n[p], i)


cdef class Board:
    """A Flagz position. Create one with `Board.new`, `Board.from_proto` or `Board.from_ascii`."""

    @staticmethod
    def new(seed=None):
        """A random initial position: 15 rocks, then 5 grass cells valued 1..5 (FLAGZ.md 3).

        The same seed gives the same position; no seed draws one from the OS.
        """
        cdef Board b = Board.__new__(Board)
        cdef Rng rng
        cdef int cells[NCELLS]
        cdef int i, k, tmp
        rng.s = _seed_value(seed)
        for i in range(NCELLS):
            cells[i] = i
        # Partial Fisher-Yates: the first 20 entries are distinct uniformly drawn cells.
        for i in range(20):
            k = i + rng_below(&rng, NCELLS - i)
            tmp = cells[i]
            cells[i] = cells[k]
            cells[k] = tmp
        for i in range(NROCKS):
            b.st.ctype[cells[i]] = CELL_ROCK
        for i in range(NGRASS):
            b.st.ctype[cells[NROCKS + i]] = CELL_GRASS
            b.st.value[cells[NROCKS + i]] = i + 1
        b.st.turn = 1
        b.st.flags[0] = NFLAGS
        b.st.flags[1] = NFLAGS
        _derive(&b.st)
        return b

    def __cinit__(self):
        memset(&self.st, 0, sizeof(State))

    # -- properties -------------------------------------------------------------

    @property
    def turn(self) -> int:
        """The player to move, 1 or 2 (after the game ends: as the Go server leaves it)."""
        return self.st.turn

    @property
    def move(self) -> int:
        """The ply counter: moves made so far (captures are not moves)."""
        return self.st.move

    @property
    def score(self) -> tuple:
        return (self.st.score[0], self.st.score[1])

    @property
    def flags_left(self) -> tuple:
        return (self.st.flags[0], self.st.flags[1])

    @property
    def free_cells(self) -> int:
        return self.st.free_n

    @property
    def normal_moves(self) -> tuple:
        """Per player, the number of cells where that player has a normal move."""
        return (self.st.nm_n[0], self.st.nm_n[1])

    @property
    def is_over(self) -> bool:
        return bool(self.st.over)

    @property
    def winner(self) -> int:
        """0 while the game runs or after a draw, else the player with the higher score."""
        return winner_of(&self.st)

    def copy(self) -> Board:
        cdef Board b = Board.__new__(Board)
        memcpy(&b.st, &self.st, sizeof(State))
        return b

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __reduce__(self):
        return (_board_from_bytes, (self._state_bytes(),))

    def _state_bytes(self) -> bytes:
        return (<char*>&self.st)[:sizeof(State)]

    def position_hash(self) -> int:
        """A 64-bit hash of the position (Zobrist): equal for the same position reached by
        different move orders, what the search's evaluation cache is keyed by."""
        return position_hash(&self.st)

    # -- cells ------------------------------------------------------------------

    def cell(self, int row, int col) -> tuple:
        """(type, owner, value) of a cell."""
        if not _valid(row, col):
            raise ValueError(f"({row}, {col}) is not a cell of the board")
        cdef int i = cell_index(row, col)
        return (self.st.ctype[i], self.st.owner[i], self.st.value[i])

    def next_value(self, int row, int col, int player) -> int:
        """The value a normal move of `player` would get here: 0 none, -1 blocked."""
        if not _valid(row, col) or player not in (1, 2):
            raise ValueError(f"no cell ({row}, {col}) or player {player}")
        cdef int i = cell_index(row, col)
        return self.st.nv[player - 1][i] if _empty(&self.st, i) else 0

    # -- moves ------------------------------------------------------------------

    def legal_moves(self) -> list:
        """The legal moves of the player to move, as (row, col, type), in board order."""
        cdef list out = []
        if self.st.over:
            return out
        cdef int p = self.st.turn - 1
        cdef bint flags = self.st.flags[p] > 0
        cdef int i
        for i in range(NCELLS):
            if self.st.ctype[i] == CELL_NORMAL and self.st.owner[i] == 0:
                if flags:
                    out.append(_MOVE_TUPLES[i][1])
                if self.st.nv[p][i] > 0:
                    out.append(_MOVE_TUPLES[i][0])
        return out

    def play(self, row, col, type=CELL_NORMAL) -> None:
        """Makes a move for the player to move.

        Raises IllegalMoveError, saying why, and leaves the board unchanged if the move is not
        legal.
        """
        try:
            self._play(row, col, type)
        except OverflowError:
            raise IllegalMoveError(
                f"({row}, {col}) with type {type} is not a move on this board") from None

    cdef _play(self, int row, int col, int type):
        cdef int p = self.st.turn - 1
        cdef int i
        if self.st.over:
            raise IllegalMoveError(f"the game is over (score {self.score})")
        if type != CELL_NORMAL and type != CELL_FLAG:
            raise IllegalMoveError(f"move type {type}: must be 0 (NORMAL) or 5 (FLAG)")
        if not _valid(row, col):
            raise IllegalMoveError(f"({row}, {col}) is not a cell of the board")
        i = cell_index(row, col)
        if not _empty(&self.st, i):
            raise IllegalMoveError(f"cell ({row}, {col}) is occupied ({self._describe(i)})")
        if type == CELL_FLAG:
            if self.st.flags[p] == 0:
                raise IllegalMoveError(f"player {p + 1} has no flags left")
        elif self.st.nv[p][i] == -1:
            raise IllegalMoveError(
                f"cell ({row}, {col}) is blocked for player {p + 1}: it is next to one of "
                f"that player's 5s")
        elif self.st.nv[p][i] == 0:
            raise IllegalMoveError(
                f"player {p + 1} has no piece next to ({row}, {col}), so no normal move there")
        apply_move(&self.st, i, type == CELL_FLAG)

    def _describe(self, int i) -> str:
        t = self.st.ctype[i]
        if t == CELL_ROCK:
            return "a rock"
        if t == CELL_GRASS:
            return f"grass {self.st.value[i]}"
        if t == CELL_FLAG:
            return f"a flag of player {self.st.owner[i]}"
        return f"a {self.st.value[i]} of player {self.st.owner[i]}"

    def playout(self, seed=None) -> int:
        """Plays uniformly random legal moves on a copy to the end; returns the winner (0 draw)."""
        cdef State s
        cdef Rng rng
        rng.s = _seed_value(seed)
        cdef int winner
        memcpy(&s, &self.st, sizeof(State))
        with nogil:
            winner = playout_state(&s, &rng)
        return winner

    def random_move(self, seed=None) -> None:
        """Plays one uniformly random legal move (the board's own copy is changed)."""
        if self.st.over:
            raise IllegalMoveError("the game is over")
        cdef Rng rng
        rng.s = _seed_value(seed)
        random_move(&self.st, &rng)

    # -- network encoding -------------------------------------------------------

    def encode(self) -> tuple:
        """(planes float32 (11, 11, 10), action mask bool (2, 11, 10)), mover's view (FLAGZ 7)."""
        planes = np.empty((NPLANES, NROWS, NCOLS), dtype=np.float32)
        mask = np.empty((2, NROWS, NCOLS), dtype=np.bool_)
        cdef float[:, :, ::1] pv = planes
        cdef uint8_t[:, :, ::1] mv = mask.view(np.uint8)
        encode_state(&self.st, &pv[0, 0, 0], &mv[0, 0, 0])
        return planes, mask

    # -- protobuf ---------------------------------------------------------------

    def to_proto(self):
        """This position as a `hexz_pb2.GameEngineState`, exactly as the Go server writes it."""
        from pyhexz import hexz_pb2 as pb
        cdef int i, t
        state = pb.GameEngineState()
        fz = state.flagz
        b = fz.board
        b.turn = self.st.turn
        b.move = self.st.move
        b.score.extend([self.st.score[0], self.st.score[1]])
        for p in range(2):
            b.resources.add().num_pieces.extend([-1, 0, 0, 0, 0, self.st.flags[p], 0, 0])
        b.state = pb.Board.FINISHED if self.st.over else pb.Board.RUNNING
        for i in range(NCELLS):
            f = b.flat_fields.add()
            t = self.st.ctype[i]
            f.type = t
            f.owner = self.st.owner[i]
            f.value = self.st.value[i]
            f.blocked = (1 if self.st.nv[0][i] == -1 else 0) | (2 if self.st.nv[1][i] == -1 else 0)
            f.lifetime = 0 if _empty(&self.st, i) else -1
            f.next_val.extend([self.st.nv[0][i], self.st.nv[1][i]])
        fz.free_cells = self.st.free_n
        fz.normal_moves.extend([self.st.nm_n[0], self.st.nm_n[1]])
        return state

    @staticmethod
    def from_proto(state) -> Board:
        """Reads a `hexz_pb2.GameEngineState` (or its serialized bytes).

        Raises InvalidStateError, naming the offending field, for states that are malformed or
        contradict themselves (cells against counters, scores, next values, turn).
        """
        from pyhexz import hexz_pb2 as pb
        from google.protobuf.message import DecodeError
        if isinstance(state, (bytes, bytearray, memoryview)):
            msg = pb.GameEngineState()
            try:
                msg.ParseFromString(bytes(state))
            except DecodeError as e:
                raise InvalidStateError(f"not a GameEngineState protobuf: {e}") from None
            state = msg
        if not isinstance(state, pb.GameEngineState):
            raise TypeError(f"expected hexz_pb2.GameEngineState, got {type(state).__name__}")
        which = state.WhichOneof("state")
        if which != "flagz":
            raise InvalidStateError(f"expected a flagz game state, got {which or 'none'}")
        fz = state.flagz
        if not fz.HasField("board"):
            raise InvalidStateError("flagz state has no board")
        b = fz.board
        if len(b.flat_fields) != NCELLS:
            raise InvalidStateError(f"board has {len(b.flat_fields)} cells, expected {NCELLS}")
        if b.turn not in (1, 2):
            raise InvalidStateError(f"turn is {b.turn}, expected 1 or 2")
        if b.move < 0:
            raise InvalidStateError(f"move counter is negative ({b.move})")
        if len(b.score) != 2 or len(b.resources) != 2 or len(fz.normal_moves) != 2:
            raise InvalidStateError(
                f"score, resources and normal_moves need 2 entries each, got "
                f"{len(b.score)}, {len(b.resources)}, {len(fz.normal_moves)}")
        if b.state not in (pb.Board.RUNNING, pb.Board.FINISHED):
            name = pb.Board.GameState.Name(b.state) if b.state == pb.Board.INITIAL else b.state
            raise InvalidStateError(f"game state {name}: a Flagz game is RUNNING or FINISHED")
        cdef Board out = Board.__new__(Board)
        cdef State* s = &out.st
        cdef int i, p, nflags
        for p in range(2):
            pieces = b.resources[p].num_pieces
            if len(pieces) != 8 or pieces[CELL_NORMAL] != -1 or not 0 <= pieces[CELL_FLAG] <= NFLAGS:
                raise InvalidStateError(
                    f"resources of player {p + 1} are {list(pieces)}: expected 8 counts with "
                    f"NORMAL = -1 and 0..3 flags")
            s.flags[p] = pieces[CELL_FLAG]
        given_nv = []
        for i in range(NCELLS):
            f = b.flat_fields[i]
            where = _cell_name(i)
            t, owner, value = f.type, f.owner, f.value
            if t not in _CELL_NAMES:
                raise InvalidStateError(f"cell {where}: type {t} is not used in Flagz")
            if len(f.next_val) != 2 or not all(-1 <= v <= MAX_VALUE for v in f.next_val):
                raise InvalidStateError(
                    f"cell {where}: next_val {list(f.next_val)} must be 2 values in -1..5")
            if f.hidden:
                raise InvalidStateError(f"cell {where}: hidden cells do not exist in Flagz")
            if t == CELL_NORMAL and owner in (1, 2):
                ok = 1 <= value <= MAX_VALUE
            elif t == CELL_FLAG:
                ok = owner in (1, 2) and value == 0
            elif t == CELL_GRASS:
                ok = owner == 0 and 1 <= value <= MAX_VALUE
            else:  # empty or rock
                ok = owner == 0 and value == 0
            if not ok:
                raise InvalidStateError(
                    f"cell {where}: {_CELL_NAMES[t]} with owner {owner} and value {value} "
                    f"is not a Flagz piece")
            s.ctype[i] = t
            s.owner[i] = owner
            s.value[i] = value
            s.nv[0][i] = f.next_val[0]
            s.nv[1][i] = f.next_val[1]
            given_nv.append((f.next_val[0], f.next_val[1], f.blocked))
        s.turn = b.turn
        s.move = b.move
        _derive(s)
        # The Go server never changes next values of occupied cells; they travel unchanged.
        for i in range(NCELLS):
            nv0, nv1, blocked = given_nv[i]
            if _empty(s, i) and (nv0, nv1) != (s.nv[0][i], s.nv[1][i]):
                raise InvalidStateError(
                    f"cell {_cell_name(i)}: next_val is [{nv0}, {nv1}] but its neighbours "
                    f"give [{s.nv[0][i]}, {s.nv[1][i]}]")
            if not _empty(s, i):
                s.nv[0][i] = nv0
                s.nv[1][i] = nv1
            if blocked != (1 if nv0 == -1 else 0) | (2 if nv1 == -1 else 0):
                raise InvalidStateError(
                    f"cell {_cell_name(i)}: blocked bits {blocked} contradict next_val [{nv0}, {nv1}]")
        for p in range(2):
            nflags = sum(1 for i in range(NCELLS) if s.ctype[i] == CELL_FLAG and s.owner[i] == p + 1)
            if nflags + s.flags[p] != NFLAGS:
                raise InvalidStateError(
                    f"player {p + 1} has {nflags} flags on the board and {s.flags[p]} left; "
                    f"these must add up to {NFLAGS}")
        counters = {
            "score": ((b.score[0], b.score[1]), (s.score[0], s.score[1])),
            "free_cells": (fz.free_cells, s.free_n),
            "normal_moves": ((fz.normal_moves[0], fz.normal_moves[1]), (s.nm_n[0], s.nm_n[1])),
        }
        for name, (given, actual) in counters.items():
            if given != actual:
                raise InvalidStateError(f"{name} is {given} but the cells give {actual}")
        out._check_turn_and_end(b.state == pb.Board.FINISHED)
        return out

    def _check_turn_and_end(self, bint finished):
        cdef int turn = self.st.turn
        _recompute(&self.st)
        if bool(self.st.over) != finished:
            raise InvalidStateError(
                f"state says {'FINISHED' if finished else 'RUNNING'} but the position is "
                f"{'over' if self.st.over else 'still running'}")
        if not finished and self.st.turn != turn:
            raise InvalidStateError(
                f"turn is {turn} but player {turn} cannot move and player {self.st.turn} can")

    # -- ASCII ------------------------------------------------------------------

    @staticmethod
    def from_ascii(str text, int turn=1, flags_left=None, move=None, str fill="..") -> Board:
        """A position from the picture `str(board)` draws (header lines are optional).

        Tokens: `..` empty, `##` rock, `g3` grass of value 3, `x3`/`o3` a 3 of player 1/2,
        `xF`/`oF` a flag of player 1/2. Rows may be left out at the bottom; they are filled with
        `fill` (`##` makes tiny boards). Flags left default to 3 minus the flags drawn, the move
        counter to the number of pieces drawn; the turn passes to the other player if the given
        one cannot move, as in a real game.
        """
        rows = [ln.split() for ln in text.splitlines() if ln.split() and ln.split()[0] != "turn"]
        if len(rows) > NROWS:
            raise ValueError(f"{len(rows)} rows drawn, the board has {NROWS}")
        cdef Board out = Board.__new__(Board)
        cdef State* s = &out.st
        cdef int r, c, i
        for r in range(NROWS):
            width = NCOLS - (r & 1)
            tokens = rows[r] if r < len(rows) else [fill] * width
            if len(tokens) != width:
                raise ValueError(f"row {r} has {len(tokens)} cells, expected {width}: {tokens}")
            for c, tok in enumerate(tokens):
                i = cell_index(r, c)
                kind, val = (tok[0], tok[1:]) if len(tok) == 2 else ("?", "")
                if tok == "..":
                    continue
                elif tok == "##":
                    s.ctype[i] = CELL_ROCK
                elif kind == "g" and val in "12345":
                    s.ctype[i] = CELL_GRASS
                    s.value[i] = int(val)
                elif kind in "xo" and (val in "12345" or val == "F"):
                    s.owner[i] = 1 if kind == "x" else 2
                    if val == "F":
                        s.ctype[i] = CELL_FLAG
                    else:
                        s.value[i] = int(val)
                else:
                    raise ValueError(f"row {r}, col {c}: unknown token {tok!r}")
        s.turn = turn
        for p in range(2):
            drawn = sum(1 for i in range(NCELLS) if s.ctype[i] == CELL_FLAG and s.owner[i] == p + 1)
            s.flags[p] = NFLAGS - drawn if flags_left is None else flags_left[p]
        s.move = (sum(1 for i in range(NCELLS) if s.owner[i] != 0) if move is None else move)
        _derive(s)
        _recompute(s)
        return out

    def __str__(self):
        lines = [f"turn {self.st.turn}  move {self.st.move}  score {self.st.score[0]}:"
                 f"{self.st.score[1]}  flags {self.st.flags[0]}:{self.st.flags[1]}"
                 + ("  over" if self.st.over else "")]
        cdef int r, c, i
        for r in range(NROWS):
            cells = []
            for c in range(NCOLS - (r & 1)):
                i = cell_index(r, c)
                t = self.st.ctype[i]
                if t == CELL_ROCK:
                    cells.append("##")
                elif t == CELL_GRASS:
                    cells.append(f"g{self.st.value[i]}")
                elif self.st.owner[i] == 0:
                    cells.append("..")
                else:
                    who = "x" if self.st.owner[i] == 1 else "o"
                    cells.append(who + ("F" if t == CELL_FLAG else str(self.st.value[i])))
            lines.append(("  " if r & 1 else "") + "  ".join(cells))
        return "\n".join(lines)

    def __repr__(self):
        return (f"<Board turn={self.st.turn} move={self.st.move} score={self.score} "
                f"over={bool(self.st.over)}>")


def _board_from_bytes(bytes data):
    cdef Board b = Board.__new__(Board)
    if len(data) != sizeof(State):
        raise ValueError("state bytes of the wrong size")
    memcpy(&b.st, <char*>data, sizeof(State))
    return b
