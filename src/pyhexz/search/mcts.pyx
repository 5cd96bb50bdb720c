# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Monte Carlo tree search over many games at once, compiled.

`MCTS` holds one search tree per game ("a forest"). Each tree is a typed array of nodes, as in
DeepMind's mctx: a node knows its parent, its contiguous block of children, its visit count N,
its total value W and its prior P. No position is stored in the tree; a simulation copies the
root position (one memcpy) and replays the moves down the path, which is cheaper than keeping
a kilobyte per node.

Neural search is split in two calls so that the network sees one big batch:

    n = mcts.collect(planes, masks)    # select up to `leaves_per_tree` leaves in every tree
    probs, values = predictor(planes[:n], masks[:n])
    mcts.apply(probs, values)          # expand those leaves and back their values up

Values follow one convention everywhere (ARCHITECTURE.md): the network's value is +1 when the
player to move wins. Inside the tree every W is kept from player 1's view and turned into the
chooser's view when a child is selected, so a skipped turn (the same player moving twice) needs
no special case. Finished positions are scored exactly from the final score.

After a move, `play` keeps the subtree below it with the network's outputs (priors and value
of every evaluated node) but, by default, resets the visit statistics, as hexz found best: the
next search starts afresh yet needs no network call for positions it evaluated before. So the
visit distribution of every move holds exactly the simulations of that move.

Neural search selects by PUCT (AlphaZero; `MCTS._puct_child`): argmax Q(s,a) + c_puct P(s,a)
sqrt(N(s)) / (1 + N(s,a)), with unvisited children valued at their parent's Q ("first play
urgency" = parent). With more than one leaf per tree in a batch, virtual losses keep the
selections apart.

`run_rollouts` is the classic baseline: UCT (`MCTS._uct_child`: argmax Q + c sqrt(ln N / n))
with uniformly random playouts, no network, the whole search in C.
"""

import numpy as np

cimport numpy as cnp
from libc.math cimport log, sqrt
from libc.stdint cimport uint8_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

from pyhexz.game.board cimport (
    NMOVES, NPLANES, NROWS, NCOLS, Board, Rng, State, apply_policy_move, encode_state,
    legal_policy_moves, playout_state, rng_next, winner_of,
)

cnp.import_array()

cdef int PLANE_SIZE = NPLANES * NROWS * NCOLS
cdef int MASK_SIZE = 2 * NROWS * NCOLS
# The most leaves one batch may hold: slot arrays are indexed by leaf * NMOVES + move in C ints.
cdef int MAX_BATCH = 2147483647 // NMOVES


cdef struct Node:
    int parent          # -1 for the root
    int first_child     # -1 until expanded
    int nchildren
    int move            # policy index of the move that led here
    int n               # visits
    int vl              # virtual losses of selections still waiting for the network
    float w             # sum of backed-up values, player 1's view
    float p             # prior probability of the move that led here
    float nnv           # the network's value here, player 1's view (cached for reuse)
    signed char turn    # player to move here; 0 until first reached
    signed char terminal
    signed char pending # selected as a leaf in the current batch


cdef struct Tree:
    Node* nodes
    int size
    int cap
    State root
    int todo            # simulations still to run
    bint noise          # the root's priors get Dirichlet noise (set_root and play say)


cdef inline float _value_for(float w1, int player) noexcept nogil:
    return w1 if player == 1 else -w1


cdef class MCTS:
    """Search trees for `num_trees` games, advanced together."""

    cdef Tree* trees
    cdef readonly int num_trees
    cdef readonly int leaves_per_tree
    cdef readonly float c_puct
    cdef readonly float dirichlet_alpha
    cdef readonly float dirichlet_weight
    cdef Rng rng
    cdef object np_rng
    # Leaves of the current batch: tree, node and the legal moves found there.
    cdef int* slot_tree
    cdef int* slot_node
    cdef int* slot_nmoves
    cdef short* slot_moves
    cdef int nslots
    cdef readonly long long terminal_hits
    cdef readonly long long cache_hits

    def __cinit__(self, int num_trees, float c_puct=1.5, float dirichlet_alpha=0.0,
                  float dirichlet_weight=0.25, int leaves_per_tree=1, seed=None):
        # Every pointer is NULL before anything can fail, so that __dealloc__ (which Cython
        # runs even when __cinit__ raises) frees only what was really allocated.
        self.trees = NULL
        self.num_trees = 0
        self.slot_tree = NULL
        self.slot_node = NULL
        self.slot_nmoves = NULL
        self.slot_moves = NULL
        self.nslots = 0
        if num_trees < 1 or leaves_per_tree < 1:
            raise ValueError("num_trees and leaves_per_tree must be at least 1")
        if num_trees > MAX_BATCH // leaves_per_tree:
            # Slot indices (leaf * NMOVES + move) are C ints; refuse what would overflow them.
            raise ValueError(f"num_trees * leaves_per_tree must be at most {MAX_BATCH}, got "
                             f"{num_trees} * {leaves_per_tree}")
        if c_puct <= 0 or dirichlet_alpha < 0 or not 0 <= dirichlet_weight <= 1:
            raise ValueError("need c_puct > 0, dirichlet_alpha >= 0, 0 <= dirichlet_weight <= 1")
        self.leaves_per_tree = leaves_per_tree
        self.c_puct = c_puct
        self.dirichlet_alpha = dirichlet_alpha
        self.dirichlet_weight = dirichlet_weight
        self.np_rng = np.random.default_rng(seed)
        self.rng.s = <unsigned long long>self.np_rng.integers(0, 2**63)
        cdef size_t b = <size_t>num_trees * <size_t>leaves_per_tree
        # calloc: every tree starts empty (nodes NULL, size 0, cap 0, todo 0).
        self.trees = <Tree*>calloc(num_trees, sizeof(Tree))
        if self.trees == NULL:
            raise MemoryError(f"cannot allocate {num_trees} search trees")
        self.num_trees = num_trees   # only now may __dealloc__ walk the trees
        self.slot_tree = <int*>malloc(b * sizeof(int))
        self.slot_node = <int*>malloc(b * sizeof(int))
        self.slot_nmoves = <int*>malloc(b * sizeof(int))
        self.slot_moves = <short*>malloc(b * NMOVES * sizeof(short))
        if (self.slot_tree == NULL or self.slot_node == NULL or self.slot_nmoves == NULL
                or self.slot_moves == NULL):
            raise MemoryError(f"cannot allocate a batch of {b} leaves")

    def __dealloc__(self):
        cdef int t
        if self.trees != NULL:
            for t in range(self.num_trees):
                free(self.trees[t].nodes)
            free(self.trees)
            self.trees = NULL
        free(self.slot_tree)     # free(NULL) does nothing
        free(self.slot_node)
        free(self.slot_nmoves)
        free(self.slot_moves)

    @property
    def batch_size(self) -> int:
        """The most leaves one `collect` can return."""
        return self.num_trees * self.leaves_per_tree

    # -- tree storage -----------------------------------------------------------

    cdef int _alloc(self, Tree* tr, int k) except -1:
        """Appends k fresh nodes to a tree; returns the index of the first."""
        cdef int cap
        cdef Node* grown
        if tr.size + k > tr.cap:
            cap = max(2 * tr.cap, tr.size + k, 256)
            grown = <Node*>realloc(tr.nodes, cap * sizeof(Node))
            if grown == NULL:
                raise MemoryError()
            tr.nodes = grown
            tr.cap = cap
        cdef int first = tr.size
        cdef int i
        for i in range(first, first + k):
            tr.nodes[i].parent = -1
            tr.nodes[i].first_child = -1
            tr.nodes[i].nchildren = 0
            tr.nodes[i].move = -1
            tr.nodes[i].n = 0
            tr.nodes[i].vl = 0
            tr.nodes[i].w = 0
            tr.nodes[i].p = 0
            tr.nodes[i].nnv = 0
            tr.nodes[i].turn = 0
            tr.nodes[i].terminal = 0
            tr.nodes[i].pending = 0
        tr.size += k
        return first

    def _check_no_batch(self):
        if self.nslots:
            raise RuntimeError("a batch of leaves waits for apply(); trees cannot change now")

    cdef Tree* _tree(self, int t) except NULL:
        if not 0 <= t < self.num_trees:
            raise IndexError(f"tree {t} out of range 0..{self.num_trees - 1}")
        return &self.trees[t]

    def set_root(self, int t, Board board, bint noise=True) -> None:
        """Starts a fresh tree for tree t at the given position. `noise`: its root's priors
        get Dirichlet noise (if the forest has any); self-play's cheap searches have none."""
        cdef Tree* tr = self._tree(t)
        self._check_no_batch()
        tr.noise = noise
        memcpy(&tr.root, &board.st, sizeof(State))
        tr.size = 0
        tr.todo = 0
        self._alloc(tr, 1)
        tr.nodes[0].turn = tr.root.turn
        tr.nodes[0].terminal = tr.root.over

    def play(self, int t, int move, bint keep_stats=False, bint noise=True) -> None:
        """Advances tree t's root by a move (policy index), reusing the subtree below it.

        The subtree keeps its cached network outputs; its visit counts and values are reset
        unless `keep_stats`. `noise` as for set_root, for the new root.
        """
        cdef Tree* tr = self._tree(t)
        if tr.size == 0:
            raise ValueError(f"tree {t} has no root; call set_root first")
        self._check_no_batch()
        cdef int moves[NMOVES]
        cdef int n = legal_policy_moves(&tr.root, moves)
        cdef int i, child = -1
        for i in range(n):
            if moves[i] == move:
                break
        else:
            raise ValueError(f"move {move} is not legal at the root of tree {t}")
        tr.noise = noise
        cdef Node* root = &tr.nodes[0]
        for i in range(root.first_child, root.first_child + root.nchildren):
            if root.first_child >= 0 and tr.nodes[i].move == move:
                child = i
        apply_policy_move(&tr.root, move)
        if child < 0 or tr.nodes[child].first_child < 0:
            tr.size = 0
            self._alloc(tr, 1)
            tr.nodes[0].turn = tr.root.turn
            tr.nodes[0].terminal = tr.root.over
        else:
            self._reroot(tr, child)
            if not keep_stats:
                for i in range(tr.size):
                    tr.nodes[i].n = 0
                    tr.nodes[i].w = 0
            self._add_noise(tr)
        tr.todo = 0

    cdef int _reroot(self, Tree* tr, int child) except -1:
        """Keeps only the subtree of `child`, copied breadth first into a fresh array."""
        cdef Tree out
        out.nodes = NULL
        out.size = 0
        out.cap = 0
        self._alloc(&out, 1)
        out.nodes[0] = tr.nodes[child]
        out.nodes[0].parent = -1
        cdef int x = 0, old_first, k, first, j
        while x < out.size:
            old_first = out.nodes[x].first_child
            k = out.nodes[x].nchildren
            if old_first >= 0:
                first = self._alloc(&out, k)
                for j in range(k):
                    out.nodes[first + j] = tr.nodes[old_first + j]
                    out.nodes[first + j].parent = x
                out.nodes[x].first_child = first
            x += 1
        free(tr.nodes)
        tr.nodes = out.nodes
        tr.size = out.size
        tr.cap = out.cap
        return 0

    # -- simulations ------------------------------------------------------------

    def start(self, int t, int simulations) -> None:
        """Schedules `simulations` more simulations for tree t."""
        cdef Tree* tr = self._tree(t)
        if tr.size == 0:
            raise ValueError(f"tree {t} has no root; call set_root first")
        if tr.root.over:
            raise ValueError(f"the game of tree {t} is over; there is nothing to search")
        if simulations < 0:
            raise ValueError("simulations must be >= 0")
        # The root's own first visit (its evaluation) is not one of the simulations.
        tr.todo += simulations + (1 if tr.nodes[0].n == 0 and tr.todo == 0 else 0)

    def busy(self) -> bool:
        """True while some tree has simulations to run."""
        cdef int t
        for t in range(self.num_trees):
            if self.trees[t].todo > 0:
                return True
        return False

    cdef int _select(self, Tree* tr, State* s, bint rollouts) noexcept nogil:
        """Walks from the root to a leaf, applying virtual losses; returns the leaf.

        The walk is the same for both searches; only the rule that picks a child differs:
        `_puct_child` for neural search, `_uct_child` for random rollouts. `s` ends as the
        leaf's position (the root's, replayed down the path).
        """
        cdef int x = 0
        cdef Node* nd
        memcpy(s, &tr.root, sizeof(State))
        while True:
            nd = &tr.nodes[x]
            nd.vl += 1
            if nd.first_child < 0 or nd.terminal or nd.n == 0:
                return x
            x = self._uct_child(tr, nd) if rollouts else self._puct_child(tr, nd)
            apply_policy_move(s, tr.nodes[x].move)
            nd = &tr.nodes[x]
            if nd.turn == 0:
                nd.turn = s.turn
                nd.terminal = s.over

    cdef int _puct_child(self, Tree* tr, Node* nd) noexcept nogil:
        """AlphaZero's PUCT rule: the child a maximising

            Q(s,a) + c_puct * P(s,a) * sqrt(N(s)) / (1 + N(s,a))

        N(s) is the node's visit count before this descent (other descents' virtual losses
        count as visits), N(s,a) the child's visits plus its virtual losses, P(s,a) its prior
        and Q(s,a) its mean value for the player choosing here, with each virtual loss counted
        as a loss (-1). An unvisited child has Q(s,a) = Q(s), the node's own mean value ("first
        play urgency" = parent). Ties go to the first child. `nd` is expanded and visited.
        """
        cdef int chooser = nd.turn
        cdef int ntot = nd.n + nd.vl - 1   # visits so far, without this descent's own
        cdef float q_parent = _value_for(nd.w, chooser) / nd.n if nd.n > 0 else 0
        cdef float u_scale = self.c_puct * sqrt(<float>(ntot if ntot > 1 else 1))
        cdef int i, best = -1
        cdef float q, score, best_score = -1e30
        cdef Node* ch
        for i in range(nd.first_child, nd.first_child + nd.nchildren):
            ch = &tr.nodes[i]
            if ch.n + ch.vl == 0:
                score = q_parent + u_scale * ch.p
            else:
                q = (_value_for(ch.w, chooser) - ch.vl) / (ch.n + ch.vl)
                score = q + u_scale * ch.p / (1 + ch.n + ch.vl)
            if score > best_score:
                best_score = score
                best = i
        return best

    cdef int _uct_child(self, Tree* tr, Node* nd) noexcept nogil:
        """UCT (UCB1 applied to trees, Kocsis and Szepesvari 2006): the child maximising

            Q + c * sqrt(ln N / n)

        with c = c_puct, N the node's visit count before this descent and n the child's (both
        counting virtual losses as above), Q the child's mean playout outcome for the player
        choosing here. Priors play no part. Unvisited children come first, each once, in a
        random order drawn from the search's own generator (seeded, so trees are reproducible).
        Computed as c * sqrt(ln N) / sqrt(n), in this order: trees must stay bit-identical.
        """
        cdef int chooser = nd.turn
        cdef int ntot = nd.n + nd.vl - 1   # visits so far, without this descent's own
        cdef float u_scale = self.c_puct * sqrt(log(<float>(ntot if ntot > 1 else 1)))
        cdef int i, best = -1
        cdef float q, score, best_score = -1e30
        cdef Node* ch
        for i in range(nd.first_child, nd.first_child + nd.nchildren):
            ch = &tr.nodes[i]
            if ch.n + ch.vl == 0:
                # Every move once before any twice, in random order.
                # (float32: the random part must not vanish next to the base)
                score = 1e6 + <float>(rng_next(&self.rng) >> 44)
            else:
                q = (_value_for(ch.w, chooser) - ch.vl) / (ch.n + ch.vl)
                score = q + u_scale / sqrt(<float>(ch.n + ch.vl))
            if score > best_score:
                best_score = score
                best = i
        return best

    cdef void _backup(self, Tree* tr, int x, float v1) noexcept nogil:
        """Adds a value (player 1's view) to x and its ancestors, removing one virtual loss."""
        while x >= 0:
            tr.nodes[x].n += 1
            tr.nodes[x].vl -= 1
            tr.nodes[x].w += v1
            x = tr.nodes[x].parent

    cdef void _undo(self, Tree* tr, int x) noexcept nogil:
        while x >= 0:
            tr.nodes[x].vl -= 1
            x = tr.nodes[x].parent

    cdef int _expand(self, Tree* tr, int x, const short* moves, int nmoves,
                     const float* probs) except -1:
        cdef int first = self._alloc(tr, nmoves)
        cdef Node* nd = &tr.nodes[x]
        cdef int i
        cdef float total = 0
        for i in range(nmoves):
            total += probs[moves[i]] if probs != NULL else 1.0
        for i in range(nmoves):
            tr.nodes[first + i].parent = x
            tr.nodes[first + i].move = moves[i]
            if probs == NULL or total <= 0:
                tr.nodes[first + i].p = 1.0 / nmoves
            else:
                tr.nodes[first + i].p = probs[moves[i]] / total
        nd.first_child = first
        nd.nchildren = nmoves
        if x == 0:
            self._add_noise(tr)
        return 0

    cdef int _add_noise(self, Tree* tr) except -1:
        """Mixes Dirichlet noise into the root's priors (self-play exploration)."""
        if not tr.noise or self.dirichlet_alpha <= 0 or self.dirichlet_weight <= 0:
            return 0
        cdef Node* root = &tr.nodes[0]
        cdef int k = root.nchildren
        if k < 2:
            return 0
        cdef double[::1] noise = self.np_rng.dirichlet(np.full(k, self.dirichlet_alpha))
        cdef int i
        cdef float eps = self.dirichlet_weight
        for i in range(k):
            tr.nodes[root.first_child + i].p = (
                (1 - eps) * tr.nodes[root.first_child + i].p + eps * noise[i])
        return 0

    @staticmethod
    cdef float _terminal_value(const State* s) noexcept nogil:
        cdef int w = winner_of(s)
        return 0.0 if w == 0 else (1.0 if w == 1 else -1.0)

    def collect(self, float[:, :, :, ::1] planes, uint8_t[:, :, :, ::1] masks) -> int:
        """Selects leaves in every busy tree and writes their network inputs.

        Returns the number of leaves n written to planes[:n] / masks[:n] (the arrays need room
        for `batch_size` leaves; pass the bool mask array as `masks.view(np.uint8)`). Finished
        positions reached by the search are scored on the spot and need no network call.
        """
        if planes.shape[0] < self.batch_size or masks.shape[0] < self.batch_size:
            raise ValueError(f"buffers must hold batch_size={self.batch_size} leaves")
        if (planes.shape[1] != NPLANES or planes.shape[2] != NROWS or planes.shape[3] != NCOLS
                or masks.shape[1] != 2 or masks.shape[2] != NROWS or masks.shape[3] != NCOLS):
            raise ValueError("buffers must be (B, 11, 11, 10) float32 and (B, 2, 11, 10) uint8")
        if self.nslots:
            raise RuntimeError("collect called twice without apply")
        cdef int t, k, x, n = 0, nm, i, taken
        cdef Tree* tr
        cdef State s
        cdef int moves[NMOVES]
        with nogil:
            for t in range(self.num_trees):
                tr = &self.trees[t]
                taken = 0
                for k in range(self.leaves_per_tree):
                    if tr.todo - taken <= 0:
                        break
                    x = self._select(tr, &s, False)
                    if tr.nodes[x].terminal:
                        self._backup(tr, x, MCTS._terminal_value(&s))
                        tr.todo -= 1
                        self.terminal_hits += 1
                        continue
                    if tr.nodes[x].first_child >= 0:
                        # Evaluated before the statistics were reset: reuse its value.
                        self._backup(tr, x, tr.nodes[x].nnv)
                        tr.todo -= 1
                        self.cache_hits += 1
                        continue
                    if tr.nodes[x].pending:
                        # Another selection of this batch already waits for this leaf.
                        self._undo(tr, x)
                        break
                    tr.nodes[x].pending = 1
                    encode_state(&s, &planes[n, 0, 0, 0], &masks[n, 0, 0, 0])
                    nm = legal_policy_moves(&s, moves)
                    for i in range(nm):
                        self.slot_moves[n * NMOVES + i] = moves[i]
                    self.slot_nmoves[n] = nm
                    self.slot_tree[n] = t
                    self.slot_node[n] = x
                    n += 1
                    taken += 1
        self.nslots = n
        return n

    def apply(self, float[:, ::1] probs, float[::1] values) -> None:
        """Expands the leaves of the last `collect` with the network's output and backs up.

        probs: (n, 220) move probabilities (need not be normalised over the legal moves);
        values: (n,) in [-1, 1], +1 = the player to move at the leaf wins.
        """
        cdef int n = self.nslots
        if probs.shape[0] < n or values.shape[0] < n or probs.shape[1] != NMOVES:
            raise ValueError(f"expected probs ({n}, {NMOVES}) and values ({n},)")
        cdef int j, x
        cdef Tree* tr
        cdef float v
        self.nslots = 0
        for j in range(n):
            tr = &self.trees[self.slot_tree[j]]
            x = self.slot_node[j]
            self._expand(tr, x, &self.slot_moves[j * NMOVES], self.slot_nmoves[j], &probs[j, 0])
            tr.nodes[x].pending = 0
            v = values[j]
            tr.nodes[x].nnv = _value_for(v, tr.nodes[x].turn)
            self._backup(tr, x, tr.nodes[x].nnv)
            tr.todo -= 1

    def run_rollouts(self, int t, int simulations, double max_seconds=0.0) -> int:
        """UCT search with random playouts for tree t (c_puct is the UCT constant).

        Stops after `simulations` (or earlier once `max_seconds` > 0 have passed); returns the
        number of simulations run.
        """
        import time
        cdef Tree* tr = self._tree(t)
        self._check_no_batch()
        if tr.size == 0 or tr.root.over:
            raise ValueError(f"tree {t} has no position to search")
        cdef State s
        cdef int x, nm, done = 0, i, k, chunk
        cdef int moves[NMOVES]
        cdef short smoves[NMOVES]
        cdef double deadline = time.perf_counter() + max_seconds
        while done < simulations:
            chunk = min(256, simulations - done)
            for i in range(chunk):
                x = self._select(tr, &s, True)
                if not tr.nodes[x].terminal:
                    if tr.nodes[x].first_child < 0:
                        nm = legal_policy_moves(&s, moves)
                        for k in range(nm):
                            smoves[k] = moves[k]
                        self._expand(tr, x, smoves, nm, NULL)
                    playout_state(&s, &self.rng)
                self._backup(tr, x, MCTS._terminal_value(&s))
            done += chunk
            if max_seconds > 0 and time.perf_counter() >= deadline:
                break
        return done

    # -- results ----------------------------------------------------------------

    def visits(self, int t):
        """Visit counts of the root's children, as a (220,) int32 array by policy index."""
        return self._root_children(t, False).astype(np.int32)

    def priors(self, int t):
        """Priors of the root's children (after any noise), as a (220,) float32 array."""
        return self._root_children(t, True).astype(np.float32)

    cdef _root_children(self, int t, bint prior):
        cdef Tree* tr = self._tree(t)
        out = np.zeros(NMOVES, dtype=np.float64)
        cdef double[::1] o = out
        cdef int i
        if tr.size and tr.nodes[0].first_child >= 0:
            for i in range(tr.nodes[0].first_child, tr.nodes[0].first_child + tr.nodes[0].nchildren):
                o[tr.nodes[i].move] = tr.nodes[i].p if prior else tr.nodes[i].n
        return out

    def root_values(self, int t):
        """Mean backed-up value of each root move for the player to move at the root, as a
        (220,) float32 array by policy index (0 for a move never visited)."""
        cdef Tree* tr = self._tree(t)
        out = np.zeros(NMOVES, dtype=np.float32)
        cdef float[::1] o = out
        cdef int i
        cdef Node* ch
        if tr.size and tr.nodes[0].first_child >= 0:
            for i in range(tr.nodes[0].first_child,
                           tr.nodes[0].first_child + tr.nodes[0].nchildren):
                ch = &tr.nodes[i]
                if ch.n:
                    o[ch.move] = _value_for(ch.w, tr.root.turn) / ch.n
        return out

    def root_value(self, int t) -> float:
        """Mean backed-up value at the root, from the view of the player to move there."""
        cdef Tree* tr = self._tree(t)
        if tr.size == 0 or tr.nodes[0].n == 0:
            return 0.0
        return _value_for(tr.nodes[0].w, tr.root.turn) / tr.nodes[0].n

    def root_visits(self, int t) -> int:
        return self._rooted(t).nodes[0].n

    def tree_size(self, int t) -> int:
        return self._tree(t).size

    def tree_nodes(self, int t) -> dict:
        """The whole of tree t as arrays in node order (the root first), for tests and debugging.

        Keys: parent (-1 at the root), first_child (-1 until expanded), nchildren, move (policy
        index of the move that led here, -1 at the root), visits, value_sum (W, player 1's
        view), prior and turn (player to move, 0 where the search never went).
        """
        cdef Tree* tr = self._rooted(t)
        cdef int i, size = tr.size
        out = {k: np.zeros(size, dtype=np.int32)
               for k in ("parent", "first_child", "nchildren", "move", "visits", "turn")}
        out["value_sum"] = np.zeros(size, dtype=np.float32)
        out["prior"] = np.zeros(size, dtype=np.float32)
        cdef int[::1] parent = out["parent"], first_child = out["first_child"]
        cdef int[::1] nchildren = out["nchildren"], move = out["move"]
        cdef int[::1] visits = out["visits"], turn = out["turn"]
        cdef float[::1] value_sum = out["value_sum"], prior = out["prior"]
        for i in range(size):
            parent[i] = tr.nodes[i].parent
            first_child[i] = tr.nodes[i].first_child
            nchildren[i] = tr.nodes[i].nchildren
            move[i] = tr.nodes[i].move
            visits[i] = tr.nodes[i].n
            turn[i] = tr.nodes[i].turn
            value_sum[i] = tr.nodes[i].w
            prior[i] = tr.nodes[i].p
        return out

    def depth_stats(self, int t) -> dict:
        """Tree t's shape per depth (the root is depth 0), in one pass over its nodes and no
        per-node Python: `leaf` and `branch`, the numbers of nodes without and with children
        at each depth, and `visits`, per depth a dict visit count -> number of nodes with it
        (search/treestats.py; the Go player's MCTSStats). A child always comes after its
        parent in the node array (`_alloc` appends, `_reroot` copies breadth first), so a pass
        in order knows each node's depth when it reaches it. Visit counts below `dense` are
        counted in a C array; the few nodes with more visits go through a dict.
        """
        cdef Tree* tr = self._rooted(t)
        cdef int size = tr.size, i, d, v, levels = 1, cap = 32
        cdef int dense = 64, row = 2 + dense    # per depth: leaves, branches, visit bins
        cdef int* depth = <int*>malloc(size * sizeof(int))
        cdef long long* counts = <long long*>calloc(cap * row, sizeof(long long))
        cdef long long* grown
        try:
            if depth == NULL or counts == NULL:
                raise MemoryError()
            big = {}   # (depth, visits) -> nodes, for visit counts >= dense
            for i in range(size):
                d = depth[tr.nodes[i].parent] + 1 if i else 0
                depth[i] = d
                if d >= cap:
                    grown = <long long*>realloc(counts, 2 * cap * row * sizeof(long long))
                    if grown == NULL:
                        raise MemoryError()
                    memset(grown + cap * row, 0, cap * row * sizeof(long long))
                    counts, cap = grown, 2 * cap
                if d >= levels:
                    levels = d + 1
                counts[d * row + (1 if tr.nodes[i].first_child >= 0 else 0)] += 1
                v = tr.nodes[i].n
                if v < dense:
                    counts[d * row + 2 + v] += 1
                else:
                    big[d, v] = big.get((d, v), 0) + 1
            out = {"leaf": [counts[d * row] for d in range(levels)],
                   "branch": [counts[d * row + 1] for d in range(levels)],
                   "visits": [{v: counts[d * row + 2 + v] for v in range(dense)
                               if counts[d * row + 2 + v]} for d in range(levels)]}
            for (d, v), n in big.items():
                out["visits"][d][v] = n
            return out
        finally:
            free(depth)
            free(counts)

    def best_move(self, int t) -> int:
        """The most visited root move (policy index); ties go to the better mean value."""
        cdef Tree* tr = self._rooted(t)
        cdef Node* root = &tr.nodes[0]
        if root.first_child < 0:
            raise ValueError(f"tree {t} has not been searched")
        cdef int i, best = -1
        cdef float q, best_q = -1e30
        cdef int best_n = -1
        for i in range(root.first_child, root.first_child + root.nchildren):
            q = _value_for(tr.nodes[i].w, root.turn) / tr.nodes[i].n if tr.nodes[i].n else -2
            if tr.nodes[i].n > best_n or (tr.nodes[i].n == best_n and q > best_q):
                best, best_n, best_q = i, tr.nodes[i].n, q
        return tr.nodes[best].move

    cdef Tree* _rooted(self, int t) except NULL:
        cdef Tree* tr = self._tree(t)
        if tr.size == 0:
            raise ValueError(f"tree {t} has no root; call set_root first")
        return tr

    def root_board(self, int t) -> Board:
        cdef Tree* tr = self._rooted(t)
        cdef Board b = Board.__new__(Board)
        memcpy(&b.st, &tr.root, sizeof(State))
        return b
