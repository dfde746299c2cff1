"""Read gene sets from GMT and JSON files, dicts and bundled collections."""

import gzip
import json
import logging
import warnings
from collections.abc import Mapping
from importlib import resources
from numbers import Integral
from pathlib import Path

import numpy as np

from ..exceptions import GeneSetWarning

logger = logging.getLogger(__name__)

# Bundled collection name -> file under skrnafm/pathways/data/. The GO
# molecular-function file is built by ``skrnafm.pathways._make_bundled``.
BUNDLED_COLLECTIONS = {
    "go_molecular_function": "go_molecular_function.json.gz",
}

# Keys of index-based GO files that list genes without a term. They are not
# gene sets; the genes they list fall into the background group.
DEFAULT_EXCLUDE = ("UNMAPPED", "UNCLASSIFIED")


def list_bundled_collections():
    """Return the names of the gene-set collections shipped with skrnafm."""
    return sorted(BUNDLED_COLLECTIONS)


def load_gene_sets(source, gene_names=None, *, exclude=DEFAULT_EXCLUDE):
    """Load gene sets as a mapping from set name to gene symbols.

    Parameters
    ----------
    source : str, path-like or mapping
        One of

        * the name of a bundled collection (see
          :func:`list_bundled_collections`), e.g. ``"go_molecular_function"``;
        * a path to a GMT file (``.gmt``: one set per line, tab-separated
          name, description, then gene symbols);
        * a path to a JSON file (``.json`` or ``.json.gz``) holding an object
          from set name to a list of gene symbols or of integer indices;
        * a mapping from set name to a list of gene symbols or indices.
    gene_names : sequence of str, default=None
        The gene list that integer indices refer to. Required when a set is
        given as indices, ignored otherwise.
    exclude : sequence of str, default=("UNMAPPED", "UNCLASSIFIED")
        Set names to leave out. The default drops the entries of index-based
        GO files that list genes without any term.

    Returns
    -------
    gene_sets : dict of str to list of str
        Set name -> gene symbols, in file order, duplicates within a set
        removed.

    Raises
    ------
    ValueError
        If a GMT file repeats a set name or has a line without a
        description column, if indices are given without ``gene_names`` or
        fall outside it, or if ``source`` is neither a known collection nor an
        existing file.

    Warns
    -----
    GeneSetWarning
        When sets are empty; they are dropped.

    Examples
    --------
    >>> from skrnafm.pathways import load_gene_sets
    >>> sets = load_gene_sets({"kinases": ["CDK1", "CDK2"], "mixed": ["CDK1", 3]},
    ...                       gene_names=["A", "B", "C", "TP53"])
    >>> sets["mixed"]
    ['CDK1', 'TP53']
    """
    if isinstance(source, Mapping):
        raw_sets = dict(source)
        origin = "the gene-set mapping"
    else:
        raw_sets, origin = _read_source(source)

    excluded = set(exclude or ())
    gene_sets = {}
    empty = []
    for name, genes in raw_sets.items():
        if name in excluded:
            continue
        symbols = _to_symbols(name, genes, gene_names, origin)
        if not symbols:
            empty.append(name)
            continue
        gene_sets[str(name)] = symbols

    if empty:
        warnings.warn(
            f"{len(empty)} empty gene set(s) in {origin} were dropped: "
            f"{_preview(empty)}",
            GeneSetWarning,
            stacklevel=2,
        )
    logger.debug("loaded %d gene sets from %s", len(gene_sets), origin)
    return gene_sets


def _read_source(source):
    if isinstance(source, str) and source in BUNDLED_COLLECTIONS:
        data_file = resources.files("skrnafm.pathways") / "data" / BUNDLED_COLLECTIONS[source]
        with data_file.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as handle:
            return json.load(handle), f"the bundled collection {source!r}"

    path = Path(source)
    if not path.is_file():
        raise ValueError(
            f"gene-set source {source!r} is neither a bundled collection "
            f"({', '.join(list_bundled_collections())}) nor an existing file; "
            "pass a GMT or JSON path, a dict, or a collection name"
        )
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gmt"]:
        return _read_gmt(path), str(path)
    if suffixes[-1:] == [".json"] or suffixes[-2:] == [".json", ".gz"]:
        return _read_json(path), str(path)
    raise ValueError(
        f"cannot tell the format of gene-set file {str(path)!r}: expected a "
        "name ending in .gmt, .json or .json.gz"
    )


def _read_gmt(path):
    """Read a GMT file; a repeated set name raises because merging would guess.

    A UTF-8 byte-order mark, as some spreadsheet programs write, is skipped.
    """
    gene_sets = {}
    first_line = {}
    with open(path, encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise ValueError(
                    f"line {line_number} of GMT file {str(path)!r} has no tab-separated "
                    f"description column: {line[:80]!r}; each line must be "
                    "'name<TAB>description<TAB>gene<TAB>gene...'"
                )
            name = fields[0].strip()
            if name in gene_sets:
                raise ValueError(
                    f"gene set {name!r} appears twice in GMT file {str(path)!r} "
                    f"(lines {first_line[name]} and {line_number}); rename or merge "
                    "the duplicates"
                )
            first_line[name] = line_number
            gene_sets[name] = [gene.strip() for gene in fields[2:] if gene.strip()]
    return gene_sets


def _read_json(path):
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(
            f"gene-set JSON file {str(path)!r} must hold an object from set name "
            f"to a list of genes, got a {type(data).__name__}"
        )
    return data


def _to_symbols(name, genes, gene_names, origin):
    if isinstance(genes, (str, bytes)) or not hasattr(genes, "__iter__"):
        raise ValueError(
            f"gene set {name!r} in {origin} must be a list of gene symbols or "
            f"indices, got {genes!r}"
        )

    symbols = []
    for gene in genes:
        if isinstance(gene, (Integral, np.integer)) and not isinstance(gene, bool):
            symbols.append(_index_to_symbol(name, int(gene), gene_names, origin))
        elif isinstance(gene, str):
            symbols.append(gene)
        else:
            raise ValueError(
                f"gene set {name!r} in {origin} contains {gene!r}; members must "
                "be gene symbols (str) or integer indices"
            )
    return list(dict.fromkeys(symbols))


def _index_to_symbol(name, index, gene_names, origin):
    if gene_names is None:
        raise ValueError(
            f"gene set {name!r} in {origin} lists integer gene indices; pass "
            "gene_names=, the gene list those indices refer to"
        )
    if not 0 <= index < len(gene_names):
        raise ValueError(
            f"gene set {name!r} in {origin} has index {index}, outside the "
            f"{len(gene_names)} gene_names given"
        )
    return str(gene_names[index])


def _preview(names, limit=5):
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
