"""Build the bundled ``go_molecular_function`` collection from its source files.

The source is a JSON object from GO molecular-function term name to a list
of indices into a gene list (a CSV with a ``gene`` column of symbols, such
as the 20,820-gene TCGA list). The bundled file stores gene SYMBOLS, so it
can be matched against any target panel. The ``UNMAPPED`` and
``UNCLASSIFIED`` entries are genes without a term: they are left out, and
such genes end up in the background group when the sets are resolved.

Run it once when the source changes::

    python -m skrnafm.pathways._make_bundled GENE_LIST_CSV INDICES_JSON \
        skrnafm/pathways/data/go_molecular_function.json.gz

The output is byte-for-byte reproducible (gzip header time set to 0).
"""

import argparse
import csv
import gzip
import json
from pathlib import Path

# Entries of the source JSON that list genes without a term, not gene sets.
NON_SET_KEYS = ("UNMAPPED", "UNCLASSIFIED")


def convert_indices_to_symbols(gene_list_csv, indices_json):
    """Return the term -> gene-symbol mapping of an index-based gene-set file."""
    with open(gene_list_csv, newline="", encoding="utf-8") as handle:
        genes = [row["gene"] for row in csv.DictReader(handle)]
    with open(indices_json, encoding="utf-8") as handle:
        index_sets = json.load(handle)

    symbol_sets = {}
    for name, indices in index_sets.items():
        if name in NON_SET_KEYS:
            continue
        bad = [i for i in indices if not 0 <= i < len(genes)]
        if bad:
            raise ValueError(
                f"gene set {name!r} in {indices_json} has indices outside the "
                f"{len(genes)}-gene list {gene_list_csv}: {bad[:5]!r}"
            )
        symbol_sets[name] = [genes[i] for i in indices]
    return symbol_sets


def write_bundled(symbol_sets, out_path):
    """Write the mapping as gzip-compressed JSON with a fixed gzip header time."""
    payload = json.dumps(symbol_sets, separators=(",", ":")).encode("utf-8")
    with open(out_path, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9
    ) as handle:
        handle.write(payload)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gene_list_csv", type=Path, help="CSV with a 'gene' column")
    parser.add_argument("indices_json", type=Path, help="JSON: term -> gene indices")
    parser.add_argument("out", type=Path, help="output .json.gz path")
    args = parser.parse_args(argv)

    symbol_sets = convert_indices_to_symbols(args.gene_list_csv, args.indices_json)
    write_bundled(symbol_sets, args.out)
    print(f"wrote {len(symbol_sets)} gene sets to {args.out}")


if __name__ == "__main__":
    main()
