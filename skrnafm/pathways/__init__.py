"""Gene sets: read GMT/JSON files and bundled collections, match them to targets.

The bundled ``"go_molecular_function"`` collection contains 380 Gene Ontology
molecular-function terms (2 to 16,674 genes each, overlapping) as gene
symbols of the 20,820-gene TCGA list. Genes without a term are not in it;
they join the background group when the sets are resolved.
"""

from ._load import list_bundled_collections, load_gene_sets
from ._resolve import GeneSetIndex, resolve_gene_sets

__all__ = [
    "GeneSetIndex",
    "list_bundled_collections",
    "load_gene_sets",
    "resolve_gene_sets",
]
