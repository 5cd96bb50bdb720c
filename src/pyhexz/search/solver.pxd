# The C-level interface of the exact endgame solver (solver.pyx), used by the search (mcts.pyx).

from libc.stdint cimport int8_t, uint64_t

from pyhexz.game.board cimport State

cdef enum:
    UNSOLVED = 2    # solve_state's answer when its node budget ran out
    TABLE_BITS = 16 # a SolverTable of 65,536 entries of 16 bytes: 1 MiB per searcher

cdef struct SolvedEntry:
    uint64_t key    # position hash
    int8_t value    # for the player to move: -1, 0, +1
    int8_t bound    # EXACT, LOWER or UPPER (alpha-beta bounds are facts too)

# The solver's transposition table: what it proved, by position; kept between solves (a proof
# stays true). One per searcher: it is not safe to share between threads.
cdef struct SolverTable:
    SolvedEntry* entries
    int mask

cdef int table_init(SolverTable* t, int bits) except -1
cdef void table_free(SolverTable* t) noexcept nogil
# Outcome for the player to move at s (not over): +1 win, 0 draw, -1 loss, or UNSOLVED when
# proving it would take more than `budget` positions. Adds the positions it made to nodes[0].
cdef int solve_state(const State* s, long long budget, SolverTable* t,
                     long long* nodes) noexcept nogil
# The two players' legal moves at s together (a flag move counts once per empty cell).
cdef int moves_left(const State* s) noexcept nogil
