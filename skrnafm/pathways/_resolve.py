"""Match gene sets to the target genes of a model, or learn them from targets."""

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.utils import check_random_state
from sklearn.utils.extmath import randomized_svd
from sklearn.utils.validation import check_array

from ..exceptions import GeneSetWarning
from ._load import DEFAULT_EXCLUDE, _read_source, load_gene_sets

logger = logging.getLogger(__name__)

# Upper bound on the number of gene sets learned from targets when the caller
# gives none: about sqrt(n_genes) sets keeps sets of ~sqrt(n_genes) genes, and
# the cap keeps the token count of a 20,000-gene panel near the 380 GO sets.
MAX_LEARNED_SETS = 128

# Number of principal components of the gene profiles that k-means clusters.
MAX_PROFILE_COMPONENTS = 32


@dataclass(frozen=True, eq=False)
class GeneSetIndex:
    """Gene sets resolved to column indices of a target matrix.

    Attributes
    ----------
    set_names : list of str
        Name of each kept set, in the order of ``members``.
    members : list of ndarray of int64
        For each set, the sorted indices of its genes among the targets. Sets
        may overlap.
    background : ndarray of int64
        Sorted indices of the target genes that are in no kept set.
    n_genes : int
        Number of target genes (columns of ``Y``).
    unmatched : dict
        Matching statistics: ``n_background_genes``, ``n_set_symbols``
        (distinct genes named by the sets), ``n_unmatched_symbols`` (of those,
        genes not among the targets), ``n_case_only_matches`` (unmatched
        symbols that equal a target name when case is ignored),
        ``n_dropped_sets`` and ``dropped_sets`` (sets outside the size limits
        after matching).
    source : str
        Where the sets came from, for messages and reports.
    """

    set_names: list
    members: list
    background: np.ndarray
    n_genes: int
    unmatched: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        if len(self.set_names) != len(self.members):
            raise ValueError(
                f"GeneSetIndex has {len(self.set_names)} set_names but "
                f"{len(self.members)} members arrays; they must match"
            )
        for name, genes in zip(self.set_names, self.members):
            if genes.size and (genes.min() < 0 or genes.max() >= self.n_genes):
                raise ValueError(
                    f"gene set {name!r} has indices outside [0, {self.n_genes})"
                )

    @property
    def n_sets(self):
        """Number of kept gene sets (the background group not counted)."""
        return len(self.members)

    @property
    def set_sizes(self):
        """Number of genes in each set, int64 array of shape (n_sets,)."""
        return np.array([genes.size for genes in self.members], dtype=np.int64)

    @property
    def set_counts(self):
        """Number of sets that contain each gene, int64 array of shape (n_genes,)."""
        counts = np.zeros(self.n_genes, dtype=np.int64)
        for genes in self.members:
            counts[genes] += 1
        return counts

    def membership_matrix(self):
        """Return the sparse (n_sets, n_genes) matrix with 1 where a set has a gene."""
        rows = np.repeat(np.arange(self.n_sets), self.set_sizes)
        cols = np.concatenate(self.members) if self.members else np.empty(0, np.int64)
        data = np.ones(cols.size, dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(self.n_sets, self.n_genes))

    def overlap_matrix(self):
        """Return a bool (n_sets, n_sets) array, True where two sets share a gene."""
        membership = self.membership_matrix()
        shared = (membership @ membership.T).toarray()
        return shared > 0


def resolve_gene_sets(
    pathways,
    gene_names,
    n_genes,
    Y=None,
    min_size=1,
    random_state=None,
    *,
    max_size=None,
    case_sensitive=True,
    n_learned_sets=None,
    exclude=DEFAULT_EXCLUDE,
):
    """Map gene sets onto the target genes, or learn sets from the targets.

    Parameters
    ----------
    pathways : None, str, path-like, mapping or GeneSetIndex
        The gene sets. A bundled collection name, a GMT/JSON path or a
        mapping is read with :func:`load_gene_sets` and matched to
        ``gene_names`` by symbol. Without ``gene_names``, sets must list
        integer indices, which then refer to the target columns. ``None``
        learns sets from ``Y``: k-means on the standardized expression
        profile of each gene, so genes that vary together across samples
        share a set. A GeneSetIndex is checked against ``n_genes`` and
        returned unchanged.
    gene_names : sequence of str or None
        Name of each target gene (column of ``Y``), length ``n_genes``.
    n_genes : int
        Number of target genes.
    Y : array-like of shape (n_samples, n_genes), default=None
        Training targets. Required when ``pathways`` is None.
    min_size : int, default=1
        Sets with fewer matched genes are dropped.
    random_state : int, RandomState instance or None, default=None
        Seed of the k-means when ``pathways`` is None.
    max_size : int, default=None
        Sets with more matched genes are dropped. None keeps all.
    case_sensitive : bool, default=True
        Match symbols exactly. ``False`` matches them ignoring case, which is
        off by default because symbols of different species differ by case
        (human ``TP53``, mouse ``Trp53``).
    n_learned_sets : int, default=None
        Number of sets learned when ``pathways`` is None. None uses
        ``round(sqrt(n_genes))``, at most 128. Never more than the number of
        distinct gene profiles.
    exclude : sequence of str, default=("UNMAPPED", "UNCLASSIFIED")
        Set names that are not gene sets, passed to :func:`load_gene_sets`.

    Returns
    -------
    index : GeneSetIndex

    Warns
    -----
    GeneSetWarning
        When target genes are in no set (they form the background group),
        with their count, and a hint when case-insensitive matching would
        match more genes.

    Examples
    --------
    >>> from skrnafm.pathways import resolve_gene_sets
    >>> index = resolve_gene_sets({"cell cycle": ["CDK1", "CCNB1"]},
    ...                           ["CDK1", "CCNB1", "TP53"], 3)
    >>> index.members[0], index.background
    (array([0, 1]), array([2]))
    """
    n_genes = _check_n_genes(n_genes)
    gene_names = _check_gene_names(gene_names, n_genes)
    _check_size_limits(min_size, max_size)

    if isinstance(pathways, GeneSetIndex):
        if pathways.n_genes != n_genes:
            raise ValueError(
                f"the GeneSetIndex given as pathways covers {pathways.n_genes} genes "
                f"but the targets have {n_genes}; resolve the sets again for these targets"
            )
        return pathways
    if pathways is None:
        return _learn_gene_sets(Y, n_genes, n_learned_sets, random_state)
    if not isinstance(pathways, (str, PathLike, Mapping)):
        raise ValueError(
            "pathways must be None, a bundled collection name, a GMT/JSON path, "
            f"a dict or a GeneSetIndex, got {type(pathways).__name__}: {pathways!r}"
        )

    if gene_names is None:
        raw_sets, origin = _raw_sets(pathways, exclude)
        index = _index_by_position(raw_sets, n_genes, origin, min_size, max_size)
    else:
        gene_sets = load_gene_sets(pathways, gene_names=gene_names, exclude=exclude)
        origin = "the gene-set mapping" if isinstance(pathways, Mapping) else str(pathways)
        index = _index_by_symbol(
            gene_sets, gene_names, origin, min_size, max_size, case_sensitive
        )

    _warn_about_background(index)
    return index


def _check_n_genes(n_genes):
    if isinstance(n_genes, bool) or not isinstance(n_genes, (int, np.integer)) or n_genes < 1:
        raise ValueError(f"n_genes must be a positive integer, got {n_genes!r}")
    return int(n_genes)


def _check_gene_names(gene_names, n_genes):
    if gene_names is None:
        return None
    names = [str(name) for name in gene_names]
    if len(names) != n_genes:
        raise ValueError(
            f"gene_names has {len(names)} entries but the targets have {n_genes} "
            "genes; pass one name per target column"
        )
    return names


def _check_size_limits(min_size, max_size):
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ValueError(f"min_size must be an integer >= 1, got {min_size!r}")
    if max_size is not None and (
        isinstance(max_size, bool)
        or not isinstance(max_size, (int, np.integer))
        or max_size < min_size
    ):
        raise ValueError(
            f"max_size must be None or an integer >= min_size={min_size}, got {max_size!r}"
        )


def _raw_sets(pathways, exclude):
    if isinstance(pathways, Mapping):
        raw_sets, origin = dict(pathways), "the gene-set mapping"
    else:
        raw_sets, origin = _read_source(pathways)
    excluded = set(exclude or ())
    return {name: genes for name, genes in raw_sets.items() if name not in excluded}, origin


def _index_by_position(raw_sets, n_genes, origin, min_size, max_size):
    members = {}
    for name, genes in raw_sets.items():
        values = list(genes)
        if any(isinstance(g, str) for g in values):
            raise ValueError(
                f"gene set {name!r} in {origin} lists gene symbols, but no gene_names "
                "were given to match them; pass the target gene names"
            )
        indices = np.unique(np.asarray(values, dtype=np.int64))
        if indices.size and (indices[0] < 0 or indices[-1] >= n_genes):
            raise ValueError(
                f"gene set {name!r} in {origin} has indices outside the {n_genes} "
                "target genes"
            )
        members[str(name)] = indices

    stats = {"n_set_symbols": 0, "n_unmatched_symbols": 0, "n_case_only_matches": 0}
    return _build_index(members, n_genes, str(origin), min_size, max_size, stats)


def _index_by_symbol(gene_sets, gene_names, origin, min_size, max_size, case_sensitive):
    def key(symbol):
        return symbol if case_sensitive else symbol.casefold()

    positions = {}
    for i, name in enumerate(gene_names):
        positions.setdefault(key(name), []).append(i)
    folded_names = {name.casefold() for name in gene_names}

    members = {}
    set_symbols = set()
    for set_name, symbols in gene_sets.items():
        set_symbols.update(symbols)
        hits = [i for symbol in symbols for i in positions.get(key(symbol), ())]
        members[set_name] = np.unique(np.asarray(hits, dtype=np.int64))

    unmatched_symbols = [s for s in set_symbols if key(s) not in positions]
    case_only = sum(1 for s in unmatched_symbols if s.casefold() in folded_names)
    stats = {
        "n_set_symbols": len(set_symbols),
        "n_unmatched_symbols": len(unmatched_symbols),
        "n_case_only_matches": case_only,
    }
    if unmatched_symbols:
        logger.info(
            "%d of %d genes named by the gene sets of %s are not among the targets",
            len(unmatched_symbols),
            len(set_symbols),
            origin,
        )
    return _build_index(members, len(gene_names), origin, min_size, max_size, stats)


def _build_index(members, n_genes, origin, min_size, max_size, stats):
    kept_names, kept_members, dropped = [], [], []
    for name, genes in members.items():
        too_large = max_size is not None and genes.size > max_size
        if genes.size < min_size or too_large:
            dropped.append(name)
            continue
        kept_names.append(name)
        kept_members.append(genes)

    in_some_set = np.zeros(n_genes, dtype=bool)
    for genes in kept_members:
        in_some_set[genes] = True
    background = np.flatnonzero(~in_some_set).astype(np.int64)

    if dropped:
        logger.info(
            "%d gene sets of %s were dropped for having fewer than %d or more than %s "
            "matched genes",
            len(dropped),
            origin,
            min_size,
            max_size,
        )
    unmatched = {
        "n_background_genes": int(background.size),
        **stats,
        "n_dropped_sets": len(dropped),
        "dropped_sets": dropped,
    }
    return GeneSetIndex(kept_names, kept_members, background, n_genes, unmatched, origin)


def _warn_about_background(index):
    if index.n_sets == 0:
        warnings.warn(
            f"no gene set of {index.source} matched the target genes within the size "
            "limits; check that the gene names and the sets use the same identifiers "
            "(symbols) and case",
            GeneSetWarning,
            stacklevel=3,
        )
        return
    if index.background.size == 0:
        return

    message = (
        f"{index.background.size} of {index.n_genes} target genes are in no gene set "
        f"of {index.source}; they form the background group"
    )
    case_only = index.unmatched.get("n_case_only_matches", 0)
    if case_only:
        message += (
            f". {case_only} gene-set symbols match a target name only when case is "
            "ignored: pass case_sensitive=False to match them"
        )
    warnings.warn(message, GeneSetWarning, stacklevel=3)


def _learn_gene_sets(Y, n_genes, n_learned_sets, random_state):
    if Y is None:
        raise ValueError(
            "pathways=None learns gene sets from the training targets, so Y is "
            "required; pass Y or a gene-set collection"
        )
    Y = check_array(Y, ensure_2d=False, dtype=np.float64, input_name="Y")
    if Y.ndim == 1:
        Y = Y.reshape(-1, 1)
    if Y.shape[1] != n_genes:
        raise ValueError(
            f"Y has {Y.shape[1]} gene columns but n_genes={n_genes}; they must match"
        )
    if n_learned_sets is None:
        n_sets = min(max(1, round(math.sqrt(n_genes))), MAX_LEARNED_SETS)
    elif isinstance(n_learned_sets, bool) or not isinstance(
        n_learned_sets, (int, np.integer)
    ) or n_learned_sets < 1:
        raise ValueError(f"n_learned_sets must be None or an integer >= 1, got {n_learned_sets!r}")
    else:
        n_sets = min(int(n_learned_sets), n_genes)

    # Rows are genes, columns samples; standardizing each gene makes the
    # Euclidean distance between two genes a monotone function of their
    # Pearson correlation. Constant genes become all-zero profiles.
    std = Y.std(axis=0)
    std[std == 0] = 1.0
    profiles = ((Y - Y.mean(axis=0)) / std).T
    n_distinct = np.unique(profiles.round(8), axis=0).shape[0]
    n_sets = min(n_sets, n_distinct)

    rng = check_random_state(random_state)
    if n_sets == 1:
        labels = np.zeros(n_genes, dtype=np.int64)
    else:
        # With many samples, cluster on the leading principal components of
        # the profiles: distances barely change and k-means runs several
        # times faster on genome-wide panels.
        if profiles.shape[1] > MAX_PROFILE_COMPONENTS:
            u, s, _ = randomized_svd(profiles, MAX_PROFILE_COMPONENTS, random_state=rng)
            profiles = u * s
        kmeans = KMeans(n_clusters=n_sets, n_init=1, random_state=rng)
        labels = kmeans.fit_predict(profiles.astype(np.float32))

    # Order sets by their first gene so the result does not depend on label numbering.
    groups = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    groups.sort(key=lambda genes: genes[0])
    names = [f"learned_{k}" for k in range(len(groups))]
    unmatched = {
        "n_background_genes": 0,
        "n_set_symbols": 0,
        "n_unmatched_symbols": 0,
        "n_case_only_matches": 0,
        "n_dropped_sets": 0,
        "dropped_sets": [],
    }
    logger.info("learned %d gene sets from targets of %d genes", len(groups), n_genes)
    return GeneSetIndex(
        names,
        [genes.astype(np.int64) for genes in groups],
        np.empty(0, dtype=np.int64),
        n_genes,
        unmatched,
        "sets learned from training targets",
    )
