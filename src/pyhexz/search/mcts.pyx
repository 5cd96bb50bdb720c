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

Options of neural search from KataGo ("Accelerating Self-Play Learning in Go", Wu 2019) and
Gumbel MuZero (Danihelka et al. 2022); each is off by default, and with all of them off the
trees are those of plain PUCT, bit for bit (tests/test_mcts_golden.py):

- `fpu_reduction`, `fpu_reduction_root`: first play urgency reduction. An unvisited child is
  valued at its parent's Q minus reduction * sqrt(the summed priors of the visited children),
  so that a node explores less widely the more of its prior mass it has already looked at.
- `forced_playouts` (k, KataGo's 2): at the root, a child with prior P, once visited, gets
  at least sqrt(k * P * total visits) visits; `policy_target` takes those forced visits out
  again wherever PUCT would not have spent them, and prunes children left with one visit.
- `eval_cache`: the network's outputs per position (evalcache.pyx), keyed by the engine's
  position hash, kept for the tree's game. A new leaf whose position was evaluated before, by
  another move order or in an earlier move's search, is expanded from the cache with no
  network call (`transposition_hits`).
- `solver_moves`, `solver_budget`: a new leaf with at most `solver_moves` legal moves left
  (both players' together) is handed to the exact endgame solver (solver.pyx) with a budget of
  `solver_budget` positions; if it proves the outcome, the leaf gets that exact value, is
  never expanded, and every later visit backs the same value up (`solves`).
- `gumbel_k`: Gumbel MuZero's root instead of PUCT and Dirichlet noise (`_gumbel_child`): k
  moves sampled without replacement by Gumbel-top-k on the prior logits, the simulations
  shared out among them by sequential halving, the final survivor played (`gumbel_move`) and
  the improved policy softmax(logits + sigma(completed Q)) learned (`policy_target`). Below
  the root, selection stays PUCT: the paper's policy-improvement guarantee is the root's, PUCT
  below keeps the virtual losses that batching needs and FPU, and mctx's deterministic
  interior rule would cost a softmax per node and descent.
"""

import numpy as np

cimport numpy as cnp
from libc.float cimport FLT_MIN
from libc.math cimport exp, log, sqrt
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

from pyhexz.game.board cimport (
    NMOVES, NPLANES, NROWS, NCOLS, Board, Rng, State, apply_policy_move, encode_state,
    legal_policy_moves, playout_state, position_hash, rng_next, winner_of,
)
from pyhexz.search.evalcache cimport (
    EvalCache, cache_clear, cache_find, cache_free, cache_init, cache_put,
)
from pyhexz.search.solver cimport (
    TABLE_BITS, UNSOLVED, SolverTable, moves_left, solve_state, table_free, table_init,
)

cnp.import_array()

cdef int PLANE_SIZE = NPLANES * NROWS * NCOLS
cdef int MASK_SIZE = 2 * NROWS * NCOLS
# The most leaves one batch may hold: slot arrays are indexed by leaf * NMOVES + move in C ints.
cdef int MAX_BATCH = 2147483647 // NMOVES
# mctx's constants of qtransform_completed_by_mix_value: sigma(q) = (MAXVISIT_INIT + max visits)
# * VALUE_SCALE * q, with q rescaled to [0, 1] over the root's moves.
cdef float GUMBEL_MAXVISIT_INIT = 50.0
cdef float GUMBEL_VALUE_SCALE = 0.1

cdef enum:
    SOLVED = 2      # Node.terminal of a leaf the endgame solver proved (1: the game is over)


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
    signed char terminal  # 1 the game is over here, SOLVED its exact value is nnv
    signed char pending # selected as a leaf in the current batch


cdef struct Tree:
    Node* nodes
    int size
    int cap
    State root
    int todo            # simulations still to run
    bint noise          # the root's priors get Dirichlet noise (set_root and play say)
    EvalCache cache     # eval_cache > 0: the network's outputs by position, for this game
    # gumbel_k > 0: per root child its Gumbel noise (drawn when the root is expanded), and the
    # sequential halving schedule of this move's search (see _considered_visits).
    float* gumbel
    int budget          # simulations started since the root was set
    int* schedule
    int schedule_n      # the simulations the schedule covers (its length)
    int schedule_m      # the moves it considers


cdef inline float _value_for(float w1, int player) noexcept nogil:
    return w1 if player == 1 else -w1


cdef void _normalize(const short* moves, int nmoves, const float* probs,
                     float* out) noexcept nogil:
    """The network's probabilities of the legal moves, normalised over them (uniform if they
    sum to nothing)."""
    cdef int i
    cdef float total = 0
    for i in range(nmoves):
        total += probs[moves[i]]
    for i in range(nmoves):
        if total <= 0:
            out[i] = 1.0 / nmoves
        else:
            out[i] = probs[moves[i]] / total


cdef inline float _logit(float p) noexcept nogil:
    """The log of a prior, as the logit Gumbel's rules add to (softmax-equivalent to the
    network's own logits: they differ by a constant)."""
    return log(p if p > FLT_MIN else FLT_MIN)


cdef void _considered_visits(int m, int n, int* out) noexcept nogil:
    """mctx's get_sequence_of_considered_visits(m, n): for each of n simulations, the visit
    count that every move still considered has before it. Sequential halving over m moves
    in ceil(log2 m) rounds: each round gives every considered move the same number of visits,
    about n / (ceil(log2 m) * considered) (at least 1), then halves the considered moves
    (down to 2)."""
    cdef int visits[NMOVES]
    cdef int i, j, extra, considered = m, log2max = 0, k = 0
    if m <= 1:
        for i in range(n):
            out[i] = i
        return
    while (1 << log2max) < m:
        log2max += 1
    for i in range(m):
        visits[i] = 0
    while k < n:
        extra = n // (log2max * considered)
        if extra < 1:
            extra = 1
        for j in range(extra):
            for i in range(considered):
                if k < n:
                    out[k] = visits[i]
                    k += 1
            for i in range(considered):
                visits[i] += 1
        considered = considered // 2 if considered // 2 > 2 else 2


def considered_visits(int m, int n) -> list:
    """The schedule of sequential halving (`_considered_visits`), for tests."""
    if not 1 <= m <= NMOVES or n < 0:
        raise ValueError(f"need 1 <= m <= {NMOVES} and n >= 0, got m={m}, n={n}")
    cdef int* out = <int*>malloc((n + 1) * sizeof(int))
    if out == NULL:
        raise MemoryError()
    try:
        _considered_visits(m, n, out)
        return [out[i] for i in range(n)]
    finally:
        free(out)


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
    cdef readonly long long cache_hits          # leaves evaluated in an earlier search (play)
    cdef readonly float fpu_reduction
    cdef readonly float fpu_reduction_root
    cdef readonly float forced_playouts
    cdef readonly int eval_cache
    cdef readonly int solver_moves
    cdef readonly long long solver_budget
    cdef readonly int gumbel_k
    cdef readonly long long transposition_hits  # leaves expanded from the evaluation cache
    cdef readonly long long solves              # leaves the endgame solver proved
    cdef readonly long long solver_failures     # ... and those it gave up on (budget)
    cdef readonly long long solver_nodes        # positions the solver made, in all
    cdef SolverTable solver_table
    # Per leaf of the current batch with the cache on: its position hash and move counter.
    cdef uint64_t* slot_hash
    cdef int* slot_ply

    def __cinit__(self, int num_trees, float c_puct=1.5, float dirichlet_alpha=0.0,
                  float dirichlet_weight=0.25, int leaves_per_tree=1, seed=None, *,
                  float fpu_reduction=0.0, float fpu_reduction_root=0.0,
                  float forced_playouts=0.0, int eval_cache=0, int solver_moves=0,
                  long long solver_budget=5000, int gumbel_k=0):
        # Every pointer is NULL before anything can fail, so that __dealloc__ (which Cython
        # runs even when __cinit__ raises) frees only what was really allocated.
        self.trees = NULL
        self.num_trees = 0
        self.slot_tree = NULL
        self.slot_node = NULL
        self.slot_nmoves = NULL
        self.slot_moves = NULL
        self.slot_hash = NULL
        self.slot_ply = NULL
        self.solver_table.entries = NULL
        self.nslots = 0
        if num_trees < 1 or leaves_per_tree < 1:
            raise ValueError("num_trees and leaves_per_tree must be at least 1")
        if num_trees > MAX_BATCH // leaves_per_tree:
            # Slot indices (leaf * NMOVES + move) are C ints; refuse what would overflow them.
            raise ValueError(f"num_trees * leaves_per_tree must be at most {MAX_BATCH}, got "
                             f"{num_trees} * {leaves_per_tree}")
        if c_puct <= 0 or dirichlet_alpha < 0 or not 0 <= dirichlet_weight <= 1:
            raise ValueError("need c_puct > 0, dirichlet_alpha >= 0, 0 <= dirichlet_weight <= 1")
        if (fpu_reduction < 0 or fpu_reduction_root < 0 or forced_playouts < 0 or eval_cache < 0
                or solver_moves < 0 or solver_budget < 1 or gumbel_k < 0):
            raise ValueError("need fpu_reduction, fpu_reduction_root, forced_playouts, "
                             "eval_cache, solver_moves, gumbel_k >= 0 and solver_budget >= 1")
        if gumbel_k > 0 and forced_playouts > 0:
            raise ValueError("forced playouts belong to the PUCT root; the Gumbel root "
                             "(gumbel_k > 0) has its own allocation: choose one")
        self.leaves_per_tree = leaves_per_tree
        self.fpu_reduction = fpu_reduction
        self.fpu_reduction_root = fpu_reduction_root
        self.forced_playouts = forced_playouts
        self.eval_cache = eval_cache
        self.solver_moves = solver_moves
        self.solver_budget = solver_budget
        self.gumbel_k = gumbel_k
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
        cdef int t
        if eval_cache > 0:
            self.slot_hash = <uint64_t*>malloc(b * sizeof(uint64_t))
            self.slot_ply = <int*>malloc(b * sizeof(int))
            if self.slot_hash == NULL or self.slot_ply == NULL:
                raise MemoryError(f"cannot allocate a batch of {b} leaves")
            for t in range(num_trees):
                cache_init(&self.trees[t].cache, eval_cache)
        if gumbel_k > 0:
            for t in range(num_trees):
                self.trees[t].gumbel = <float*>malloc(NMOVES * sizeof(float))
                if self.trees[t].gumbel == NULL:
                    raise MemoryError(f"cannot allocate {num_trees} search trees")
        if solver_moves > 0:
            table_init(&self.solver_table, TABLE_BITS)

    def __dealloc__(self):
        cdef int t
        if self.trees != NULL:
            for t in range(self.num_trees):
                free(self.trees[t].nodes)
                cache_free(&self.trees[t].cache)
                free(self.trees[t].gumbel)
                free(self.trees[t].schedule)
            free(self.trees)
            self.trees = NULL
        free(self.slot_tree)     # free(NULL) does nothing
        free(self.slot_node)
        free(self.slot_nmoves)
        free(self.slot_moves)
        free(self.slot_hash)
        free(self.slot_ply)
        table_free(&self.solver_table)

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

    def set_root(self, int t, Board board, bint noise=True, bint keep_cache=False) -> None:
        """Starts a fresh tree for tree t at the given position. `noise`: its root's priors get
        Dirichlet noise (if the forest has any); self-play's cheap searches have none.
        `keep_cache`: the evaluation cache keeps what earlier searches stored (a searcher that
        is handed the positions of its games one by one, as the CPU player is, so that what
        its last search evaluated below this position is not evaluated again); by default it
        starts empty, as for a new game. Either way a hit is the same position (its hash and
        its legal moves), so only a new network makes kept entries wrong (`clear_caches`)."""
        cdef Tree* tr = self._tree(t)
        self._check_no_batch()
        tr.noise = noise
        memcpy(&tr.root, &board.st, sizeof(State))
        tr.size = 0
        tr.todo = 0
        tr.budget = 0
        if tr.cache.keys != NULL and not keep_cache:
            cache_clear(&tr.cache)
        self._alloc(tr, 1)
        tr.nodes[0].turn = tr.root.turn
        tr.nodes[0].terminal = tr.root.over

    def clear_caches(self) -> None:
        """Empties every tree's evaluation cache: after the network changed, its entries
        are another network's outputs."""
        cdef int t
        for t in range(self.num_trees):
            if self.trees[t].cache.keys != NULL:
                cache_clear(&self.trees[t].cache)

    def play(self, int t, int move, bint keep_stats=False, bint noise=True) -> None:
        """Advances tree t's root by a move (policy index), reusing the subtree below it.

        The subtree keeps its cached network outputs; its visit counts and values are reset
        unless `keep_stats`. The evaluation cache, which serves the whole game, is kept; the new
        root gets fresh root noise (Dirichlet's, unless `noise` is false, or Gumbel's and a new
        schedule).
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
            self._root_expanded(tr)
        tr.todo = 0
        tr.budget = 0

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
        # The Gumbel root shares out all simulations since the root was set (its schedule).
        tr.budget += simulations

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
            if rollouts:
                x = self._uct_child(tr, nd)
            elif x == 0:
                x = self._root_child(tr, nd)
            else:
                x = self._puct_child(tr, nd, self.fpu_reduction)
            apply_policy_move(s, tr.nodes[x].move)
            nd = &tr.nodes[x]
            if nd.turn == 0:
                nd.turn = s.turn
                nd.terminal = s.over

    cdef int _puct_child(self, Tree* tr, Node* nd, float fpu) noexcept nogil:
        """AlphaZero's PUCT rule: the child a maximising

            Q(s,a) + c_puct * P(s,a) * sqrt(N(s)) / (1 + N(s,a))

        N(s) is the node's visit count before this descent (other descents' virtual losses
        count as visits), N(s,a) the child's visits plus its virtual losses, P(s,a) its prior
        and Q(s,a) its mean value for the player choosing here, with each virtual loss counted
        as a loss (-1). An unvisited child has Q(s,a) = Q(s) - fpu * sqrt(sum of P(s,b) over
        the visited children b), the node's own mean value less the first play urgency
        reduction (KataGo, Leela Zero; fpu 0: AlphaZero's "parent" rule). Ties go to the first
        child. `nd` is expanded and visited.
        """
        cdef int chooser = nd.turn
        cdef int ntot = nd.n + nd.vl - 1   # visits so far, without this descent's own
        cdef float q_parent = _value_for(nd.w, chooser) / nd.n if nd.n > 0 else 0
        cdef float u_scale = self.c_puct * sqrt(<float>(ntot if ntot > 1 else 1))
        cdef int i, best = -1
        cdef float q, score, best_score = -1e30
        cdef float q_first = q_parent
        cdef float visited_prior = 0
        cdef Node* ch
        if fpu > 0:
            for i in range(nd.first_child, nd.first_child + nd.nchildren):
                if tr.nodes[i].n + tr.nodes[i].vl > 0:
                    visited_prior += tr.nodes[i].p
            q_first = q_parent - fpu * sqrt(visited_prior)
        for i in range(nd.first_child, nd.first_child + nd.nchildren):
            ch = &tr.nodes[i]
            if ch.n + ch.vl == 0:
                score = q_first + u_scale * ch.p
            else:
                q = (_value_for(ch.w, chooser) - ch.vl) / (ch.n + ch.vl)
                score = q + u_scale * ch.p / (1 + ch.n + ch.vl)
            if score > best_score:
                best_score = score
                best = i
        return best

    cdef int _root_child(self, Tree* tr, Node* nd) noexcept nogil:
        """The root's rule: Gumbel's sequential halving (gumbel_k > 0), else PUCT with the
        root's FPU reduction, after any forced playouts."""
        cdef int x
        if self.gumbel_k > 0:
            x = self._gumbel_child(tr, nd)
            if x >= 0:
                return x
        elif self.forced_playouts > 0:
            x = self._forced_child(tr, nd)
            if x >= 0:
                return x
        return self._puct_child(tr, nd, self.fpu_reduction_root)

    cdef int _forced_child(self, Tree* tr, Node* nd) noexcept nogil:
        """KataGo's forced playouts: the first root child that has been visited but has fewer
        visits (pending ones included) than n_forced = sqrt(k * P * total visits of the root's
        children), or -1. A child gets its first visit from PUCT, as in KataGo (Wu 2019: "each
        child c of the root that has received any playouts")."""
        cdef int i, total = 0
        cdef Node* ch
        for i in range(nd.first_child, nd.first_child + nd.nchildren):
            total += tr.nodes[i].n + tr.nodes[i].vl
        cdef float kt = self.forced_playouts * total
        for i in range(nd.first_child, nd.first_child + nd.nchildren):
            ch = &tr.nodes[i]
            if ch.n > 0 and ch.n + ch.vl < sqrt(kt * ch.p):
                return i
        return -1

    cdef int _gumbel_child(self, Tree* tr, Node* nd) noexcept nogil:
        """Gumbel MuZero's root rule (mctx: gumbel_muzero_root_action_selection). The schedule
        of sequential halving says, for simulation i (the visits of the root's children so
        far, pending ones included), how many visits each move still considered has; among
        the children with exactly that many, the one maximising g + logit + sigma(completed Q)
        is chosen. So the first simulations visit the k moves of highest g + logit (Gumbel-top-k
        sampling without replacement), and each round of halving keeps the better half by
        g + logit + sigma. -1 where the schedule has no answer (more simulations than it was
        made for, as when `play` kept statistics): PUCT decides then."""
        cdef int k = nd.nchildren
        cdef int m = self.gumbel_k if self.gumbel_k < k else k
        cdef int c, sim = 0, best = -1, target
        cdef float score, best_score = -1e30
        cdef float sigma[NMOVES]
        cdef Node* ch
        if tr.schedule_n != tr.budget or tr.schedule_m != m:
            if self._make_schedule(tr, m) < 0:
                return -1
        for c in range(k):
            sim += tr.nodes[nd.first_child + c].n + tr.nodes[nd.first_child + c].vl
        if sim >= tr.schedule_n:
            return -1
        target = tr.schedule[sim]
        self._sigma_q(tr, sigma)
        for c in range(k):
            ch = &tr.nodes[nd.first_child + c]
            if ch.n + ch.vl != target:
                continue
            score = tr.gumbel[c] + _logit(ch.p) + sigma[c]
            if score > best_score:
                best_score = score
                best = nd.first_child + c
        return best

    cdef int _make_schedule(self, Tree* tr, int m) noexcept nogil:
        cdef int* grown = <int*>realloc(tr.schedule, (tr.budget + 1) * sizeof(int))
        if grown == NULL:
            return -1
        tr.schedule = grown
        _considered_visits(m, tr.budget, tr.schedule)
        tr.schedule_n = tr.budget
        tr.schedule_m = m
        return 0

    cdef void _sigma_q(self, Tree* tr, float* out) noexcept nogil:
        """sigma(completed Q) per root child, as mctx's qtransform_completed_by_mix_value: Q (the
        mean value for the player to move at the root) where a child was visited, else the
        mixed value (the network's value at the root, mixed with the prior-weighted Q of the
        visited children by their visits); rescaled to [0, 1] by the least and greatest of
        these and the mixed value (mctx's min and max run over every action, and an illegal
        one, of which Flagz always has some, carries the mixed value); times
        (50 + the most visits of a child) * 0.1."""
        cdef Node* root = &tr.nodes[0]
        cdef int chooser = root.turn
        cdef int c, visits = 0, most = 0
        cdef float q, p, prior_sum = 0, weighted = 0, mixed, lo, hi, scale
        cdef Node* ch
        for c in range(root.nchildren):
            ch = &tr.nodes[root.first_child + c]
            if ch.n > 0:
                q = _value_for(ch.w, chooser) / ch.n
                p = ch.p if ch.p > FLT_MIN else FLT_MIN
                prior_sum += p
                weighted += p * q
                visits += ch.n
                if ch.n > most:
                    most = ch.n
        mixed = _value_for(root.nnv, chooser)
        if visits > 0:
            mixed = (mixed + visits * (weighted / prior_sum)) / (visits + 1)
        lo = mixed
        hi = mixed
        for c in range(root.nchildren):
            ch = &tr.nodes[root.first_child + c]
            out[c] = _value_for(ch.w, chooser) / ch.n if ch.n > 0 else mixed
            lo = out[c] if out[c] < lo else lo
            hi = out[c] if out[c] > hi else hi
        scale = (GUMBEL_MAXVISIT_INIT + most) * GUMBEL_VALUE_SCALE / (
            hi - lo if hi - lo > 1e-8 else 1e-8)
        for c in range(root.nchildren):
            out[c] = (out[c] - lo) * scale

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
                     const float* priors) except -1:
        """Gives leaf x its children: the moves with their priors (normalised over them, as
        `_normalize` makes them; NULL: uniform)."""
        cdef int first = self._alloc(tr, nmoves)
        cdef Node* nd = &tr.nodes[x]
        cdef int i
        for i in range(nmoves):
            tr.nodes[first + i].parent = x
            tr.nodes[first + i].move = moves[i]
            if priors == NULL:
                tr.nodes[first + i].p = 1.0 / nmoves
            else:
                tr.nodes[first + i].p = priors[i]
        nd.first_child = first
        nd.nchildren = nmoves
        if x == 0:
            self._root_expanded(tr)
        return 0

    cdef int _root_expanded(self, Tree* tr) except -1:
        """Root noise, once the root has children: Gumbel's (gumbel_k > 0), else Dirichlet's."""
        cdef int c, k = tr.nodes[0].nchildren
        cdef double[::1] g
        if self.gumbel_k > 0:
            g = self.np_rng.gumbel(size=k)
            for c in range(k):
                tr.gumbel[c] = g[c]
            return 0
        return self._add_noise(tr)

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

    cdef bint _expand_cached(self, Tree* tr, int x, const State* s, int n) except -1 nogil:
        """Expands leaf x (at position s) from its evaluation cache entry and backs the cached
        value up; False if there is none. Slot n's move array serves as scratch."""
        cdef uint64_t key = position_hash(s)
        cdef int e = cache_find(&tr.cache, key)
        cdef int i, nm
        cdef int moves[NMOVES]
        cdef short* smoves = &self.slot_moves[n * NMOVES]
        if self.slot_hash != NULL:
            self.slot_hash[n] = key
            self.slot_ply[n] = s.move
        if e < 0:
            return False
        nm = legal_policy_moves(s, moves)
        if nm != tr.cache.nmoves[e]:
            return False   # a hash collision: another position; let the network see this one
        for i in range(nm):
            smoves[i] = moves[i]
        with gil:
            self._expand(tr, x, smoves, nm, &tr.cache.pool[tr.cache.start[e]])
        tr.nodes[x].nnv = _value_for(tr.cache.value[e], tr.nodes[x].turn)
        self._backup(tr, x, tr.nodes[x].nnv)
        return True

    cdef bint _solve_leaf(self, Tree* tr, int x, const State* s) noexcept nogil:
        """Tries the endgame solver on leaf x (at position s); if it proves the outcome, x
        becomes SOLVED with that exact value and it is backed up."""
        cdef int v = solve_state(s, self.solver_budget, &self.solver_table, &self.solver_nodes)
        if v == UNSOLVED:
            self.solver_failures += 1
            return False
        self.solves += 1
        tr.nodes[x].terminal = SOLVED
        tr.nodes[x].nnv = _value_for(<float>v, tr.nodes[x].turn)
        self._backup(tr, x, tr.nodes[x].nnv)
        return True

    @staticmethod
    cdef float _terminal_value(const State* s) noexcept nogil:
        cdef int w = winner_of(s)
        return 0.0 if w == 0 else (1.0 if w == 1 else -1.0)

    def collect(self, float[:, :, :, ::1] planes, uint8_t[:, :, :, ::1] masks) -> int:
        """Selects leaves in every busy tree and writes their network inputs.

        Returns the number of leaves n written to planes[:n] / masks[:n] (the arrays need room
        for `batch_size` leaves; pass the bool mask array as `masks.view(np.uint8)`). Finished
        positions reached by the search are scored on the spot and need no network call, and
        so are, where enabled, positions in the evaluation cache and positions the endgame
        solver proves.
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
                    if tr.nodes[x].terminal == SOLVED:
                        self._backup(tr, x, tr.nodes[x].nnv)
                        tr.todo -= 1
                        self.terminal_hits += 1
                        continue
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
                    if self.eval_cache > 0 and self._expand_cached(tr, x, &s, n):
                        tr.todo -= 1
                        self.transposition_hits += 1
                        continue
                    if (self.solver_moves > 0 and x != 0
                            and moves_left(&s) <= self.solver_moves
                            and self._solve_leaf(tr, x, &s)):
                        tr.todo -= 1
                        continue
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
        cdef float priors[NMOVES]
        self.nslots = 0
        for j in range(n):
            tr = &self.trees[self.slot_tree[j]]
            x = self.slot_node[j]
            _normalize(&self.slot_moves[j * NMOVES], self.slot_nmoves[j], &probs[j, 0], priors)
            if self.eval_cache > 0:
                cache_put(&tr.cache, self.slot_hash[j], self.slot_ply[j], values[j], priors,
                          self.slot_nmoves[j], tr.root.move)
            self._expand(tr, x, &self.slot_moves[j * NMOVES], self.slot_nmoves[j], priors)
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

    def cache_entries(self, int t) -> int:
        """Positions in tree t's evaluation cache (0 without one)."""
        return self._tree(t).cache.n

    def tree_nodes(self, int t) -> dict:
        """The whole of tree t as arrays in node order (the root first), for tests and debugging.

        Keys: parent (-1 at the root), first_child (-1 until expanded), nchildren, move (policy
        index of the move that led here, -1 at the root), visits, value_sum (W, player 1's
        view), prior, turn (player to move, 0 where the search never went) and terminal (1 the
        game is over there, 2 the endgame solver proved its value, 0 neither).
        """
        cdef Tree* tr = self._rooted(t)
        cdef int i, size = tr.size
        out = {k: np.zeros(size, dtype=np.int32)
               for k in ("parent", "first_child", "nchildren", "move", "visits", "turn",
                         "terminal")}
        out["value_sum"] = np.zeros(size, dtype=np.float32)
        out["prior"] = np.zeros(size, dtype=np.float32)
        cdef int[::1] parent = out["parent"], first_child = out["first_child"]
        cdef int[::1] nchildren = out["nchildren"], move = out["move"]
        cdef int[::1] visits = out["visits"], turn = out["turn"], terminal = out["terminal"]
        cdef float[::1] value_sum = out["value_sum"], prior = out["prior"]
        for i in range(size):
            parent[i] = tr.nodes[i].parent
            first_child[i] = tr.nodes[i].first_child
            nchildren[i] = tr.nodes[i].nchildren
            move[i] = tr.nodes[i].move
            visits[i] = tr.nodes[i].n
            turn[i] = tr.nodes[i].turn
            terminal[i] = tr.nodes[i].terminal
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
        cdef Tree* tr = self._searched(t)
        return tr.nodes[self._best_child(tr)].move

    cdef int _best_child(self, Tree* tr) noexcept nogil:
        cdef Node* root = &tr.nodes[0]
        cdef int i, best = -1
        cdef float q, best_q = -1e30
        cdef int best_n = -1
        for i in range(root.first_child, root.first_child + root.nchildren):
            q = _value_for(tr.nodes[i].w, root.turn) / tr.nodes[i].n if tr.nodes[i].n else -2
            if tr.nodes[i].n > best_n or (tr.nodes[i].n == best_n and q > best_q):
                best, best_n, best_q = i, tr.nodes[i].n, q
        return best

    cdef Tree* _searched(self, int t) except NULL:
        cdef Tree* tr = self._rooted(t)
        if tr.nodes[0].first_child < 0:
            raise ValueError(f"tree {t} has not been searched")
        return tr

    def gumbel_move(self, int t) -> int:
        """The move the Gumbel root chose (policy index): among the most visited root moves,
        the one maximising g + logit + sigma(completed Q), the survivor of sequential halving
        (mctx gumbel_muzero_policy's action). Self-play plays it; it needs gumbel_k > 0."""
        if self.gumbel_k <= 0:
            raise ValueError("gumbel_move needs the Gumbel root (gumbel_k > 0)")
        cdef Tree* tr = self._searched(t)
        cdef Node* root = &tr.nodes[0]
        cdef float sigma[NMOVES]
        cdef int c, most = 0, best = 0
        cdef float score, best_score = -1e30
        cdef Node* ch
        self._sigma_q(tr, sigma)
        for c in range(root.nchildren):
            most = max(most, tr.nodes[root.first_child + c].n)
        for c in range(root.nchildren):
            ch = &tr.nodes[root.first_child + c]
            score = tr.gumbel[c] + _logit(ch.p) + sigma[c]
            if ch.n == most and score > best_score:
                best_score = score
                best = c
        return tr.nodes[root.first_child + best].move

    def policy_target(self, int t):
        """What self-play records as the policy to learn at tree t's root, a (220,) float32
        array by policy index (the trainer normalises it):

        - with the Gumbel root, the improved policy softmax(logit + sigma(completed Q)) over
          the legal moves (Danihelka et al. 2022);
        - with forced playouts, the visits with the forced ones taken out again (KataGo's
          policy target pruning, Wu 2019 section 3.1): every child c but the most visited,
          c*, loses up to n_forced(c) = sqrt(k * P(c) * N) visits, but no more than leaves
          PUCT(c) <= PUCT(c*), the visit count PUCT would have spent on it anyway; a child
          left with one visit or less is pruned to 0. The move is still chosen from the raw
          visits;
        - else the visits themselves.
        """
        cdef Tree* tr = self._rooted(t)
        if tr.nodes[0].first_child < 0:
            return np.zeros(NMOVES, dtype=np.float32)
        if self.gumbel_k > 0:
            return self._improved_policy(tr)
        if self.forced_playouts > 0:
            return self._pruned_visits(tr)
        return self.visits(t).astype(np.float32)

    cdef _improved_policy(self, Tree* tr):
        cdef Node* root = &tr.nodes[0]
        cdef float sigma[NMOVES]
        cdef double z[NMOVES]
        cdef double top = -1e300, total = 0
        cdef int c
        out = np.zeros(NMOVES, dtype=np.float32)
        cdef float[::1] o = out
        self._sigma_q(tr, sigma)
        for c in range(root.nchildren):
            z[c] = _logit(tr.nodes[root.first_child + c].p) + sigma[c]
            top = max(top, z[c])
        for c in range(root.nchildren):
            z[c] = exp(z[c] - top)
            total += z[c]
        for c in range(root.nchildren):
            o[tr.nodes[root.first_child + c].move] = <float>(z[c] / total)
        return out

    cdef _pruned_visits(self, Tree* tr):
        cdef Node* root = &tr.nodes[0]
        cdef int chooser = root.turn
        cdef int i, best = self._best_child(tr), total = 0
        cdef float u_scale = self.c_puct * sqrt(<float>(root.n if root.n > 1 else 1))
        cdef float q, gap, kept, at_least
        cdef float puct_best
        cdef Node* ch
        out = np.zeros(NMOVES, dtype=np.float32)
        cdef float[::1] o = out
        for i in range(root.first_child, root.first_child + root.nchildren):
            total += tr.nodes[i].n
        ch = &tr.nodes[best]
        puct_best = (_value_for(ch.w, chooser) / ch.n if ch.n > 0 else 0) + (
            u_scale * ch.p / (1 + ch.n))
        for i in range(root.first_child, root.first_child + root.nchildren):
            ch = &tr.nodes[i]
            if i == best or ch.n == 0:
                o[ch.move] = ch.n
                continue
            q = _value_for(ch.w, chooser) / ch.n
            gap = puct_best - q
            # PUCT(c) with n visits is q + u_scale * P / (1 + n): at or below PUCT(c*) from
            # n = u_scale * P / gap - 1 on.
            at_least = u_scale * ch.p / gap - 1 if gap > 0 else ch.n
            kept = max(ch.n - sqrt(self.forced_playouts * ch.p * total), at_least)
            kept = min(kept, <float>ch.n)
            o[ch.move] = kept if kept > 1 else 0
        return out

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
