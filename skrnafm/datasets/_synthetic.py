"""A genome-wide semi-synthetic cohort whose true predictive distribution is known."""

import inspect
import logging
import numbers

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import expit, ndtr
from sklearn.utils import Bunch, check_random_state

from ._tcga import load_tcga_gene_stats

logger = logging.getLogger(__name__)

# Share of a slide's latent factor variance that differs between slides of
# one patient (the rest is shared by the patient).
WITHIN_PATIENT_SHARE = 0.3
# Average probability of the hidden subtype, and how steeply the tissue
# factors move it.
SUBTYPE_RATE = 0.35
SUBTYPE_SLOPE = 2.0


class SyntheticTruth:
    """True conditional distribution of each gene of each synthetic slide.

    Given a slide's latent tissue factors (which its features determine
    exactly), each gene follows a mixture of two normal distributions with
    the same spread: ``N(base_mean, noise_std**2)`` without the hidden
    subtype and ``N(base_mean + subtype_shift, noise_std**2)`` with it,
    the subtype having probability ``subtype_probability``. Genes with a
    zero ``subtype_shift`` are plain normal.

    Parameters
    ----------
    base_mean : ndarray of shape (n_slides, n_genes)
        Mean without the subtype.
    noise_std : ndarray of shape (n_slides, n_genes)
        Standard deviation of each mixture component.
    subtype_shift : ndarray of shape (n_genes,)
        Mean shift caused by the subtype.
    subtype_probability : ndarray of shape (n_slides,)
        Probability of the subtype given the slide's factors.
    """

    def __init__(self, base_mean, noise_std, subtype_shift, subtype_probability):
        self.base_mean = base_mean
        self.noise_std = noise_std
        self.subtype_shift = subtype_shift
        self.subtype_probability = subtype_probability

    @property
    def mean(self):
        """True conditional mean, ndarray of shape (n_slides, n_genes)."""
        p = self.subtype_probability[:, None]
        return (self.base_mean + p * self.subtype_shift).astype(np.float32)

    @property
    def std(self):
        """True conditional standard deviation, ndarray of shape (n_slides, n_genes)."""
        p = self.subtype_probability[:, None]
        variance = self.noise_std.astype(np.float64) ** 2 + p * (1 - p) * self.subtype_shift**2
        return np.sqrt(variance).astype(np.float32)

    def sample(self, n_samples=1, random_state=None):
        """Draw targets from the true conditional distribution.

        Parameters
        ----------
        n_samples : int, default=1
            Draws per slide.
        random_state : int, RandomState instance or None, default=None
            Seed of the draws.

        Returns
        -------
        samples : float32 ndarray of shape (n_samples, n_slides, n_genes)
            Independent draws; 4 bytes per value, so 100 draws of 300
            slides at 20,820 genes take 2.5 GB.
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        rng = check_random_state(random_state)
        n_slides, n_genes = self.base_mean.shape

        samples = np.empty((n_samples, n_slides, n_genes), dtype=np.float32)
        for i in range(n_samples):
            subtype = rng.random_sample(n_slides) < self.subtype_probability
            noise = rng.standard_normal((n_slides, n_genes)).astype(np.float32)
            samples[i] = self.base_mean + subtype[:, None] * self.subtype_shift + self.noise_std * noise
        return samples

    def cdf(self, values):
        """Evaluate the true conditional CDF at ``values``.

        Parameters
        ----------
        values : array-like of shape (..., n_slides, n_genes)
            Points to evaluate; leading dimensions broadcast.

        Returns
        -------
        cdf : ndarray of the shape of ``values``
            P(Y <= value) under the true distribution. A gene with zero
            spread is a point mass, with CDF 1 at and above its mean.
        """
        values = np.asarray(values, dtype=np.float64)
        p = self.subtype_probability[:, None]
        without = _normal_cdf(values, self.base_mean, self.noise_std)
        with_subtype = _normal_cdf(values, self.base_mean + self.subtype_shift, self.noise_std)
        return (1 - p) * without + p * with_subtype

    def interval_coverage(self, lower, upper):
        """Return the true probability that Y falls in ``[lower, upper]``.

        Parameters
        ----------
        lower, upper : array-like of shape (n_slides, n_genes)
            Interval bounds, for example a model's 5% and 95% quantiles.

        Returns
        -------
        coverage : ndarray of shape (n_slides, n_genes)
            Probability mass of the true distribution inside each interval.
        """
        lower = np.asarray(lower, dtype=np.float64)
        upper = np.asarray(upper, dtype=np.float64)
        # Nudge the lower bound so a point mass sitting on it counts as inside.
        below = self.cdf(np.nextafter(lower, -np.inf))
        return np.clip(self.cdf(upper) - below, 0.0, 1.0)

    def __repr__(self):
        n_slides, n_genes = self.base_mean.shape
        return f"SyntheticTruth(n_slides={n_slides}, n_genes={n_genes})"


def _normal_cdf(values, mean, std):
    mean = mean.astype(np.float64)
    std = std.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (values - mean) / std
    point_mass = np.broadcast_to(std == 0, scaled.shape)
    return np.where(point_mass, (values >= mean).astype(np.float64), ndtr(np.where(point_mass, 0.0, scaled)))


def _gene_set_membership(gene_sets, gene_names):
    """Return the gene x set membership matrix (CSR, 0/1) over ``gene_names``."""
    from skrnafm.pathways import load_gene_sets

    sets = load_gene_sets(gene_sets, gene_names)
    position = {name: i for i, name in enumerate(gene_names)}
    rows, cols = [], []
    for j, members in enumerate(sets.values()):
        indices = [position[g] for g in members if g in position]
        rows.extend(indices)
        cols.extend([j] * len(indices))
    if not rows:
        raise ValueError(
            f"gene_sets={gene_sets!r} shares no gene with the TCGA gene list; "
            "give gene sets over TCGA gene symbols."
        )
    membership = sparse.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(len(gene_names), len(sets))
    )
    # A gene listed twice in one set still counts once.
    membership.data[:] = 1.0
    return membership


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (
        high is not None and value > high
    ):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}.")
    return int(value)


def _check_fraction(name, value, high=1.0):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= high:
        raise ValueError(f"{name} must be a number from 0 to {high}, got {value!r}.")
    return float(value)


def make_synthetic_cohort(
    n_patients=100,
    *,
    slides_per_patient=(1, 3),
    n_genes=None,
    cohort="BRCA",
    n_clusters=8,
    embedding_dim=32,
    n_factors=6,
    gene_sets="go_molecular_function",
    bimodal_fraction=0.05,
    heteroscedasticity=0.5,
    feature_noise=1.0,
    data_home=None,
    random_state=None,
):
    """Generate a semi-synthetic slide cohort with known true expression distributions.

    Genes keep the real per-gene mean and standard deviation of a TCGA or
    CPTAC cohort, and genes that share gene sets (by default the bundled GO
    molecular-function sets) are correlated. Each slide has ``n_factors`` latent tissue factors; slides
    of one patient share most of them. The super-tile features are a
    linear image of the factors plus noise orthogonal to it, so the
    features determine the factors exactly and the returned truth is the
    true distribution of the targets given the features. The targets go
    beyond what a point regressor describes:

    * heteroscedastic noise: the noise scale of each gene grows or shrinks
      with one tissue factor;
    * bimodal genes: a hidden subtype, whose probability depends on the
      factors, shifts a fraction ``bimodal_fraction`` of the genes by
      about 1.3 to 1.8 standard deviations.

    In standardised units a gene's variance splits into a factor-driven
    part (0 to 90%), a subtype part (40 to 70% for bimodal genes, 0 for
    the others) and noise (at least 10%). Its marginal mean and standard
    deviation match the real statistics approximately, because the factor
    and subtype parts are slightly correlated. Values are not clipped at 0,
    so genes with a low mean can take negative values.

    Parameters
    ----------
    n_patients : int, default=100
        Number of patients.
    slides_per_patient : int or tuple of (int, int), default=(1, 3)
        Slides per patient: a fixed number, or the inclusive range of a
        uniform draw per patient.
    n_genes : int, default=None
        Number of genes, drawn at random from the 20,820-gene list and kept
        in list order. ``None`` uses all genes.
    cohort : str, default="BRCA"
        Source of the per-gene statistics; see :func:`load_tcga_gene_stats`.
    n_clusters : int, default=8
        Super-tiles per slide (K).
    embedding_dim : int, default=32
        Dimension of each super-tile embedding (D).
    n_factors : int, default=6
        Latent tissue factors per slide. Must be below ``n_clusters *
        embedding_dim``.
    gene_sets : str, path-like or mapping, default="go_molecular_function"
        Gene sets that drive the gene correlation, in any form
        :func:`skrnafm.pathways.load_gene_sets` reads. The default is the
        bundled GO molecular-function collection.
    bimodal_fraction : float, default=0.05
        Fraction of genes shifted by the hidden subtype.
    heteroscedasticity : float, default=0.5
        Maximum log-scale slope of a gene's noise standard deviation on
        its heteroscedasticity factor; each gene draws its slope uniformly
        from 0 to this value. 0 gives homoscedastic noise.
    feature_noise : float, default=1.0
        Standard deviation of the nuisance noise added to the features.
    data_home : str or path-like, default=None
        Data folder holding ``tcga/``; see
        :func:`get_data_home`.
    random_state : int, RandomState instance or None, default=None
        Seed. The same seed and arguments give the same cohort.

    Returns
    -------
    cohort : :class:`~sklearn.utils.Bunch`
        ``X``: float32 ndarray of shape (n_slides, n_clusters *
        embedding_dim), cluster-major super-tile features (column
        ``k * embedding_dim + d`` is cluster k, dimension d). ``Y``: float32
        DataFrame of shape (n_slides, n_genes), log2(FPKM-UQ + 1)-like
        targets, indexed by slide name, columns are gene symbols.
        ``groups``: ndarray of str of shape (n_slides,), the patient of
        each slide. ``gene_names``: ndarray of str. ``n_tokens``: the
        number of clusters. ``latent``: float ndarray of shape (n_slides,
        n_factors). ``subtype``: bool ndarray, the subtype each observed
        slide drew. ``truth``: :class:`SyntheticTruth` with ``mean``,
        ``std``, ``cdf`` and ``interval_coverage``. ``sample_truth``:
        ``truth.sample(n_samples, random_state)``. ``bimodal_genes``: bool
        ndarray of shape (n_genes,). ``cohort`` and ``DESCR``.

    Raises
    ------
    ValueError
        If an argument is out of range.
    FileNotFoundError
        If the TCGA statistics are not under ``data_home``.

    Examples
    --------
    >>> from skrnafm.datasets import make_synthetic_cohort
    >>> data = make_synthetic_cohort(20, n_genes=500, random_state=0)  # doctest: +SKIP
    >>> data.X.shape[1], data.Y.shape[1]  # doctest: +SKIP
    (256, 500)
    """
    n_patients = _check_int("n_patients", n_patients, 1)
    if isinstance(slides_per_patient, numbers.Integral) and not isinstance(slides_per_patient, bool):
        slides_per_patient = (slides_per_patient, slides_per_patient)
    if (
        not isinstance(slides_per_patient, (tuple, list))
        or len(slides_per_patient) != 2
        or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in slides_per_patient)
        or not 1 <= slides_per_patient[0] <= slides_per_patient[1]
    ):
        raise ValueError(
            "slides_per_patient must be a positive integer or a pair (low, high) "
            f"with 1 <= low <= high, got {slides_per_patient!r}."
        )
    n_clusters = _check_int("n_clusters", n_clusters, 1)
    embedding_dim = _check_int("embedding_dim", embedding_dim, 1)
    n_factors = _check_int("n_factors", n_factors, 1, n_clusters * embedding_dim - 1)
    bimodal_fraction = _check_fraction("bimodal_fraction", bimodal_fraction)
    heteroscedasticity = _check_fraction("heteroscedasticity", heteroscedasticity, high=2.0)
    if isinstance(feature_noise, bool) or not isinstance(feature_noise, numbers.Real) or feature_noise < 0:
        raise ValueError(f"feature_noise must be a non-negative number, got {feature_noise!r}.")

    stats = load_tcga_gene_stats(cohort, data_home=data_home)
    n_all = stats.gene_names.shape[0]
    if n_genes is not None:
        n_genes = _check_int("n_genes", n_genes, 1, n_all)
    membership = _gene_set_membership(gene_sets, list(stats.gene_names))
    rng = check_random_state(random_state)

    # Gene-level parameters are drawn for the whole gene list first, so a
    # subset keeps the parameters its genes have in the full cohort.
    gene_loadings = _gene_loadings(membership, n_factors, rng)
    bimodal = rng.random_sample(n_all) < bimodal_fraction
    subtype_share = np.where(bimodal, rng.uniform(0.4, 0.7, n_all), 0.0)
    signal_share = rng.beta(2.0, 2.0, n_all) * (0.9 - subtype_share)
    noise_share = 1.0 - signal_share - subtype_share
    het_slope = rng.uniform(0.0, heteroscedasticity, n_all)
    shift_sign = rng.choice([-1.0, 1.0], n_all)

    subtype_direction = _unit(rng.standard_normal(n_factors))
    het_direction = _unit(rng.standard_normal(n_factors))
    subtype_offset = np.log(SUBTYPE_RATE / (1 - SUBTYPE_RATE))
    subtype_rate = _mean_subtype_probability(subtype_offset)
    subtype_shift_std = shift_sign * np.sqrt(subtype_share / (subtype_rate * (1 - subtype_rate)))

    genes = np.arange(n_all) if n_genes is None else np.sort(rng.choice(n_all, n_genes, replace=False))

    # Patients and slides: factors are shared within a patient.
    counts = rng.randint(slides_per_patient[0], slides_per_patient[1] + 1, size=n_patients)
    patient_factors = rng.standard_normal((n_patients, n_factors)) * np.sqrt(1 - WITHIN_PATIENT_SHARE)
    patient_of_slide = np.repeat(np.arange(n_patients), counts)
    latent = patient_factors[patient_of_slide] + rng.standard_normal(
        (patient_of_slide.size, n_factors)
    ) * np.sqrt(WITHIN_PATIENT_SHARE)

    subtype_probability = expit(SUBTYPE_SLOPE * latent @ subtype_direction + subtype_offset)
    het_factor = latent @ het_direction

    X = _super_tile_features(latent, n_clusters, embedding_dim, feature_noise, rng)

    # Standardised mean without subtype, then noise scale; both per slide x gene.
    loadings = gene_loadings[genes]
    mean_std_units = (latent @ loadings.T) * np.sqrt(signal_share[genes]) - subtype_shift_std[genes] * subtype_rate
    slope = het_slope[genes]
    noise_std_units = np.sqrt(noise_share[genes]) * np.exp(het_factor[:, None] * slope - slope**2)

    gene_mean = stats.mean[genes].astype(np.float64)
    gene_std = stats.std[genes].astype(np.float64)
    truth = SyntheticTruth(
        base_mean=(gene_mean + gene_std * mean_std_units).astype(np.float32),
        noise_std=(gene_std * noise_std_units).astype(np.float32),
        subtype_shift=(gene_std * subtype_shift_std[genes]).astype(np.float32),
        subtype_probability=subtype_probability,
    )

    subtype = rng.random_sample(patient_of_slide.size) < subtype_probability
    noise = rng.standard_normal(truth.base_mean.shape).astype(np.float32)
    values = truth.base_mean + subtype[:, None] * truth.subtype_shift + truth.noise_std * noise

    slide_index = np.concatenate([np.arange(c) for c in counts])
    names = [f"P{p:04d}_S{s}" for p, s in zip(patient_of_slide, slide_index)]
    gene_names = stats.gene_names[genes]
    Y = pd.DataFrame(values, index=pd.Index(names, name="slide"), columns=gene_names)
    logger.info(
        "synthetic cohort: %d patients, %d slides, %d genes, %d bimodal",
        n_patients,
        len(names),
        len(genes),
        int(bimodal[genes].sum()),
    )

    return Bunch(
        X=X,
        Y=Y,
        groups=np.asarray([f"P{p:04d}" for p in patient_of_slide]),
        gene_names=gene_names,
        n_tokens=n_clusters,
        latent=latent,
        subtype=subtype,
        truth=truth,
        sample_truth=truth.sample,
        bimodal_genes=bimodal[genes],
        cohort=stats.cohort,
        # The docstring's description: every paragraph between the summary
        # line and the Parameters section, the bullet list included.
        DESCR="\n\n".join(
            inspect.cleandoc(make_synthetic_cohort.__doc__).split("\n\nParameters\n")[0]
            .split("\n\n")[1:]
        ),
    )


def _unit(vector):
    return vector / np.linalg.norm(vector)


def _mean_subtype_probability(offset):
    """Average the subtype probability over a standard normal factor score."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    return float(np.sum(weights * expit(SUBTYPE_SLOPE * nodes + offset)) / np.sqrt(2 * np.pi))


def _gene_loadings(membership, n_factors, rng):
    """Draw unit factor loadings per gene, similar for genes sharing gene sets.

    Each gene set gets a random direction in factor space. A gene's loading
    is the average direction of its sets plus a gene-specific part, with a
    random sign, normalised to length 1. Genes in no set have only the
    gene-specific part.
    """
    n_genes, n_sets = membership.shape
    set_directions = rng.standard_normal((n_sets, n_factors))
    sets_per_gene = np.asarray(membership.sum(axis=1)).ravel()
    shared = membership @ set_directions / np.sqrt(np.maximum(sets_per_gene, 1.0))[:, None]
    own = 0.5 * rng.standard_normal((n_genes, n_factors))
    loadings = shared + own
    loadings /= np.linalg.norm(loadings, axis=1, keepdims=True)
    return loadings * rng.choice([-1.0, 1.0], n_genes)[:, None]


def _super_tile_features(latent, n_clusters, embedding_dim, feature_noise, rng):
    """Map latent factors to cluster-major super-tile features.

    Each cluster has a fixed template embedding and its own linear map of
    the factors. The nuisance noise is projected onto the orthogonal
    complement of the maps' span, so the factors stay exactly recoverable
    from the features.
    """
    n_slides, n_factors = latent.shape
    width = n_clusters * embedding_dim
    templates = rng.standard_normal(width)
    mixing = rng.standard_normal((width, n_factors)) / np.sqrt(n_factors)
    basis, _ = np.linalg.qr(mixing)

    noise = rng.standard_normal((n_slides, width)) * feature_noise
    noise -= (noise @ basis) @ basis.T
    return (templates + latent @ mixing.T + noise).astype(np.float32)
