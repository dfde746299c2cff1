"""Tests for skrnafm.pathways: reading gene sets and matching them to targets."""

import gzip
import json
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

from skrnafm.exceptions import GeneSetWarning
from skrnafm.pathways import (
    GeneSetIndex,
    list_bundled_collections,
    load_gene_sets,
    resolve_gene_sets,
)


@pytest.fixture(scope="module")
def tcga_genes(tcga_dir):
    return pd.read_csv(tcga_dir / "gene_list.csv")["gene"].tolist()


def _write_gmt(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- load_gene_sets -------------------------------------------------------


def test_bundled_collection_listed():
    assert "go_molecular_function" in list_bundled_collections()


def test_bundled_go_matches_shared_indices(go_mf_json, tcga_genes):
    bundled = load_gene_sets("go_molecular_function")
    from_indices = load_gene_sets(go_mf_json, gene_names=tcga_genes)

    assert len(bundled) == 380
    assert bundled == from_indices


def test_bundled_go_leaves_out_background_keys():
    bundled = load_gene_sets("go_molecular_function")

    assert "UNMAPPED" not in bundled
    assert "UNCLASSIFIED" not in bundled


def test_bundled_go_set_sizes():
    sizes = [len(genes) for genes in load_gene_sets("go_molecular_function").values()]

    assert min(sizes) == 2
    assert max(sizes) == 16674


def test_load_gmt_reads_sets(tmp_path):
    path = _write_gmt(
        tmp_path / "sets.gmt",
        ["kinase\thttp://x\tCDK1\tCDK2\t", "", "p53\tna\tTP53\tMDM2\tTP53"],
    )

    sets = load_gene_sets(path)

    assert sets == {"kinase": ["CDK1", "CDK2"], "p53": ["TP53", "MDM2"]}


def test_load_gmt_skips_byte_order_mark(tmp_path):
    path = tmp_path / "bom.gmt"
    path.write_bytes("\ufeffa\td\tX\tY\n".encode("utf-8"))

    assert load_gene_sets(path) == {"a": ["X", "Y"]}


def test_load_gmt_duplicate_name_raises(tmp_path):
    path = _write_gmt(tmp_path / "dup.gmt", ["a\td\tX", "b\td\tY", "a\td\tZ"])

    with pytest.raises(ValueError, match=r"'a' appears twice .*lines 1 and 3"):
        load_gene_sets(path)


def test_load_gmt_empty_set_warns_and_drops(tmp_path):
    path = _write_gmt(tmp_path / "empty.gmt", ["a\td\tX", "hollow\tdescription only"])

    with pytest.warns(GeneSetWarning, match="1 empty gene set.*'hollow'"):
        sets = load_gene_sets(path)

    assert list(sets) == ["a"]


def test_load_gmt_missing_description_raises(tmp_path):
    path = _write_gmt(tmp_path / "bad.gmt", ["a\td\tX", "lonely"])

    with pytest.raises(ValueError, match="line 2 .*no tab-separated description"):
        load_gene_sets(path)


def test_load_json_symbols_and_gz(tmp_path):
    sets = {"a": ["X", "Y"], "b": ["Z"]}
    plain = tmp_path / "sets.json"
    plain.write_text(json.dumps(sets))
    packed = tmp_path / "sets.json.gz"
    with gzip.open(packed, "wt") as handle:
        json.dump(sets, handle)

    assert load_gene_sets(plain) == sets
    assert load_gene_sets(packed) == sets


def test_load_indices_need_gene_names():
    with pytest.raises(ValueError, match="pass gene_names="):
        load_gene_sets({"a": [0, 1]})


def test_load_index_out_of_range_raises():
    with pytest.raises(ValueError, match="index 5, outside the 2 gene_names"):
        load_gene_sets({"a": [0, 5]}, gene_names=["X", "Y"])


def test_load_unknown_source_raises(tmp_path):
    with pytest.raises(ValueError, match="neither a bundled collection"):
        load_gene_sets("go_nonexistent")


def test_load_unknown_suffix_raises(tmp_path):
    path = tmp_path / "sets.txt"
    path.write_text("a\tb\tc\n")

    with pytest.raises(ValueError, match=r"\.gmt, \.json or \.json\.gz"):
        load_gene_sets(path)


# --- resolve_gene_sets ----------------------------------------------------


def test_resolve_go_on_tcga_list(tcga_genes):
    with pytest.warns(GeneSetWarning, match="are in no gene set"):
        index = resolve_gene_sets("go_molecular_function", tcga_genes, len(tcga_genes))

    assert index.n_sets == 380
    assert index.unmatched["n_unmatched_symbols"] == 0
    assert index.background.size == index.unmatched["n_background_genes"]
    covered = np.unique(np.concatenate(index.members))
    assert covered.size + index.background.size == len(tcga_genes)


def test_resolve_background_is_genes_in_no_set():
    with pytest.warns(GeneSetWarning, match="2 of 4 target genes"):
        index = resolve_gene_sets({"s": ["B", "A"]}, ["A", "B", "C", "D"], 4)

    np.testing.assert_array_equal(index.members[0], [0, 1])
    np.testing.assert_array_equal(index.background, [2, 3])


def test_resolve_case_mismatch_not_folded():
    names = ["TP53", "CDK1", "MDM2"]

    with pytest.warns(GeneSetWarning, match="pass case_sensitive=False"):
        index = resolve_gene_sets({"s": ["tp53", "CDK1"]}, names, 3)

    np.testing.assert_array_equal(index.members[0], [1])
    assert index.unmatched["n_case_only_matches"] == 1


def test_resolve_case_insensitive_opt_in():
    names = ["TP53", "CDK1", "MDM2"]

    with pytest.warns(GeneSetWarning):
        index = resolve_gene_sets({"s": ["tp53", "CDK1"]}, names, 3, case_sensitive=False)

    np.testing.assert_array_equal(index.members[0], [0, 1])
    assert index.unmatched["n_unmatched_symbols"] == 0


def test_resolve_size_filter():
    names = list("ABCDEF")
    sets = {"one": ["A"], "two": ["A", "B"], "four": ["A", "B", "C", "D"]}

    with pytest.warns(GeneSetWarning):
        index = resolve_gene_sets(sets, names, 6, min_size=2, max_size=3)

    assert index.set_names == ["two"]
    assert index.unmatched["dropped_sets"] == ["one", "four"]


def test_resolve_nothing_matched_warns():
    with pytest.warns(GeneSetWarning, match="no gene set .* matched") as record:
        index = resolve_gene_sets({"s": ["X"]}, ["A", "B"], 2)

    # RNAFlowRegressor raises on an index without sets, so the warning must
    # not promise a background-group fallback.
    assert "background" not in str(record[0].message)

    assert index.n_sets == 0
    np.testing.assert_array_equal(index.background, [0, 1])


def test_resolve_positional_indices_without_names():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index = resolve_gene_sets({"s": [2, 0, 2], "t": [1]}, None, 3)

    np.testing.assert_array_equal(index.members[0], [0, 2])
    assert index.background.size == 0


def test_resolve_symbols_without_names_raises():
    with pytest.raises(ValueError, match="no gene_names"):
        resolve_gene_sets({"s": ["A"]}, None, 3)


def test_resolve_gene_names_length_mismatch_raises():
    with pytest.raises(ValueError, match="gene_names has 2 entries .* 3 genes"):
        resolve_gene_sets({"s": ["A"]}, ["A", "B"], 3)


def test_resolve_index_passthrough_checks_n_genes():
    index = resolve_gene_sets({"s": [0, 1]}, None, 2)

    assert resolve_gene_sets(index, None, 2) is index
    with pytest.raises(ValueError, match="covers 2 genes .* have 5"):
        resolve_gene_sets(index, None, 5)


def test_resolve_learned_needs_y():
    with pytest.raises(ValueError, match="Y is required"):
        resolve_gene_sets(None, None, 10)


def test_resolve_learned_covers_every_gene():
    Y = np.random.default_rng(0).normal(size=(30, 50))

    index = resolve_gene_sets(None, None, 50, Y, random_state=0)

    assert index.n_sets == 7
    assert index.background.size == 0
    np.testing.assert_array_equal(index.set_counts, np.ones(50))


def test_resolve_learned_is_deterministic():
    Y = np.random.default_rng(1).normal(size=(20, 40))

    first = resolve_gene_sets(None, None, 40, Y, random_state=3)
    second = resolve_gene_sets(None, None, 40, Y, random_state=3)

    for a, b in zip(first.members, second.members):
        np.testing.assert_array_equal(a, b)


def test_resolve_learned_groups_correlated_genes():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(40, 2))
    Y = np.hstack([base[:, [0]] + 0.01 * rng.normal(size=(40, 5)),
                   base[:, [1]] + 0.01 * rng.normal(size=(40, 5))])

    index = resolve_gene_sets(None, None, 10, Y, random_state=0, n_learned_sets=2)

    assert [m.tolist() for m in index.members] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


@pytest.mark.parametrize("n_samples", [1, 5])
def test_resolve_learned_single_gene(n_samples):
    Y = np.arange(n_samples, dtype=float).reshape(-1, 1)

    index = resolve_gene_sets(None, ["ONLY"], 1, Y)

    assert index.n_sets == 1
    np.testing.assert_array_equal(index.members[0], [0])


def test_resolve_learned_constant_targets_one_set():
    index = resolve_gene_sets(None, None, 6, np.ones((4, 6)), n_learned_sets=3)

    assert index.n_sets == 1


def test_resolve_invalid_min_size_raises():
    with pytest.raises(ValueError, match="min_size must be an integer >= 1, got 0"):
        resolve_gene_sets({"s": [0]}, None, 2, min_size=0)


# --- GeneSetIndex -----------------------------------------------------------


def test_index_matrices():
    index = GeneSetIndex(
        ["a", "b", "c"],
        [np.array([0, 1]), np.array([1, 2]), np.array([3])],
        np.array([4]),
        5,
    )

    membership = index.membership_matrix().toarray()
    overlap = index.overlap_matrix()

    assert membership.shape == (3, 5)
    np.testing.assert_array_equal(membership.sum(axis=0), [1, 2, 1, 1, 0])
    np.testing.assert_array_equal(overlap, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(index.set_counts, [1, 2, 1, 1, 0])


def test_index_rejects_out_of_range_member():
    with pytest.raises(ValueError, match="'a' has indices outside"):
        GeneSetIndex(["a"], [np.array([0, 9])], np.array([], dtype=np.int64), 3)


def test_index_pickles():
    index = GeneSetIndex(["s"], [np.array([0, 2])], np.array([1]), 3)

    restored = pickle.loads(pickle.dumps(index))

    assert restored.set_names == ["s"]
    np.testing.assert_array_equal(restored.background, [1])
