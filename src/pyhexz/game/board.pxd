# The C-level interface of the Flagz engine, shared with the compiled search (mcts.pyx).
#
# A position is one flat, fixed-size struct, so copying it is a memcpy and the search can keep
# positions in plain arrays. Cells are numbered in the protobuf's flat order (FLAGZ.md section 1).

from libc.stdint cimport int8_t, uint8_t, uint64_t

cdef enum:
    NCELLS = 105        # valid cells
    NROWS = 11
    NCOLS = 10          # tensor width; odd rows use 9 of them
    NGRID = 110         # NROWS * NCOLS grid slots, the 5 at (odd row, col 9) do not exist
    NMOVES = 220        # policy size: type * NGRID + r * NCOLS + c (type 0 flag, 1 normal)
    NPLANES = 11
    # Cell types, the values of the protobuf enum Field.CellType.
    CELL_NORMAL = 0
    CELL_GRASS = 2
    CELL_ROCK = 3
    CELL_FLAG = 5
    MAX_VALUE = 5
    NFLAGS = 3
    NOT_LISTED = 255    # position of a cell that is not in a move list

cdef struct State:
    int8_t ctype[NCELLS]
    int8_t owner[NCELLS]      # 0 nobody, 1 or 2
    int8_t value[NCELLS]
    # Next value per player, as the Go server keeps it: 0 none, -1 blocked, 1..5. Left as it
    # was when a cell becomes occupied, so protobuf states round-trip exactly.
    int8_t nv[2][NCELLS]
    # Empty cells, and per player the empty cells with a normal move, as unordered lists with
    # each cell's position in them: O(1) add, remove and uniform sampling for playouts.
    uint8_t free_list[NCELLS]
    uint8_t free_pos[NCELLS]
    uint8_t nm_list[2][NCELLS]
    uint8_t nm_pos[2][NCELLS]
    int free_n
    int nm_n[2]
    int turn                  # 1 or 2
    int move                  # ply counter
    int score[2]
    int flags[2]              # flags left
    int over                  # 1 once the game has ended
    uint64_t cells_hash       # Zobrist hash of the cells (position_hash adds flags and turn)

cdef struct Rng:
    uint64_t s

cdef uint64_t rng_next(Rng* r) noexcept nogil
cdef int rng_below(Rng* r, int n) noexcept nogil

# Flat index of the cell and of its row / column.
cdef int cell_index(int row, int col) noexcept nogil
cdef int cell_row(int i) noexcept nogil
cdef int cell_col(int i) noexcept nogil

cdef int move_count(const State* s) noexcept nogil
# Fills moves with policy indices (type * 110 + r * 10 + c) of the legal moves; returns the count.
cdef int legal_policy_moves(const State* s, int* moves) noexcept nogil
# Applies a move given by its policy index; the caller guarantees it is legal.
cdef void apply_policy_move(State* s, int pmove) noexcept nogil
cdef void apply_move(State* s, int cell, int is_flag) noexcept nogil
cdef void random_move(State* s, Rng* rng) noexcept nogil
cdef int winner_of(const State* s) noexcept nogil
cdef int playout_state(State* s, Rng* rng) noexcept nogil
# A 64-bit Zobrist hash of the position (cells, flags left, player to move).
cdef uint64_t position_hash(const State* s) noexcept nogil
# Writes the network input planes (11*11*10 floats) and action mask (2*11*10 bytes).
cdef void encode_state(const State* s, float* planes, uint8_t* mask) noexcept nogil

cdef class Board:
    cdef State st
    cdef _play(self, int row, int col, int type)
