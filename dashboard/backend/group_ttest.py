"""scanpy's one-vs-rest Welch t-test (``rank_genes_groups(method="t-test")`` after
``normalize_total(1e4)`` + ``log1p``), from per-group sums given a chunk of cells at a time.

The model card's DE metric (:mod:`dashboard.backend.metrics`) ranks features per cell type on
the raw counts and on a posterior sample. scanpy copies its input, normalises the copy, and
for every group copies the rest of the cells (``X[~mask]``): at 72k cells x 4,000 genes that
is gigabytes. Here each chunk is normalised on its own and added to float64 sums of x and x²
per group, so memory is one chunk plus ``groups x features`` sums, and the posterior sample
never has to be kept. The statistics are scanpy's (same formulas, Welch's test, NaN scores
set to 0 and NaN p-values to 1, Benjamini-Hochberg, ``log2`` fold changes of ``expm1``
means, order by score); they equal its tables to float rounding
(``tests/dashboard/test_group_ttest.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

TARGET_SUM = 1e4  # normalize_total's target: counts per 10,000
RANK_COLUMNS = ("names", "scores", "logfoldchanges", "pvals", "pvals_adj")


def log_normalized(chunk: np.ndarray | sp.spmatrix) -> np.ndarray | sp.csr_matrix:
    """``log1p`` of counts scaled to :data:`TARGET_SUM` per cell, in float32 like scanpy
    (cells with no counts stay zero)."""
    if sp.issparse(chunk):
        x = sp.csr_matrix(chunk, dtype=np.float32, copy=True)
        x.data *= np.repeat(_row_scale(x.sum(axis=1)), np.diff(x.indptr))
        np.log1p(x.data, out=x.data)
        return x
    x = np.array(chunk, dtype=np.float32)
    x *= _row_scale(x.sum(axis=1, dtype=np.float32))[:, None]
    return np.log1p(x, out=x)


def _row_scale(totals: np.ndarray) -> np.ndarray:
    """Per cell ``1 / (total / TARGET_SUM)`` in float32, as scanpy scales rows (0 for a
    cell with no counts)."""
    per = np.asarray(totals, dtype=np.float32).ravel() / np.float32(TARGET_SUM)
    return np.divide(np.float32(1), per, out=np.zeros_like(per), where=per > 0)


class GroupTTest:
    """Per-group sums of log-normalised expression, added a chunk of cells at a time, and
    the t-test tables of each group against all other cells.

    ``labels`` (one per cell, in the order the chunks come) name each cell's group;
    ``groups`` are those ranked (as scanpy's ``groups=``: each against every other cell,
    whatever its label).
    """

    def __init__(
        self, labels: Sequence[str] | np.ndarray, groups: Sequence[str], names: Sequence[str]
    ) -> None:
        self.labels = np.asarray(labels).astype(str)
        self.groups = [str(g) for g in groups]
        self.names = pd.Index([str(n) for n in names])
        codes = pd.Categorical(self.labels, categories=self.groups).codes
        self.codes = codes.astype(np.int64)  # -1: a cell in no ranked group
        n_groups, n_features = len(self.groups), len(self.names)
        self.sums = np.zeros((n_groups, n_features))
        self.squares = np.zeros((n_groups, n_features))
        self.total_sums = np.zeros(n_features)
        self.total_squares = np.zeros(n_features)
        self.counts = np.bincount(codes[codes >= 0], minlength=n_groups).astype(np.int64)
        self.filled = 0

    def add(self, chunk: np.ndarray | sp.spmatrix) -> None:
        """The next cells' counts (cells x features, dense or sparse)."""
        rows = chunk.shape[0]
        stop = self.filled + rows
        if stop > len(self.labels):
            msg = f"more than the {len(self.labels)} cells labelled"
            raise ValueError(msg)
        if chunk.shape[1] != len(self.names):
            msg = f"expected {len(self.names)} features, got {chunk.shape[1]}"
            raise ValueError(msg)
        x = log_normalized(chunk)
        codes = self.codes[self.filled : stop]
        keep = np.flatnonzero(codes >= 0)
        member = sp.csr_matrix(
            (np.ones(len(keep)), (codes[keep], keep)), shape=(len(self.groups), rows)
        )
        if sp.issparse(x):
            x64 = sp.csr_matrix(x, dtype=np.float64)
            sq = x64.multiply(x64).tocsr()
            self.sums += np.asarray((member @ x64).todense())
            self.squares += np.asarray((member @ sq).todense())
            self.total_sums += np.asarray(x64.sum(axis=0)).ravel()
            self.total_squares += np.asarray(sq.sum(axis=0)).ravel()
        else:
            x64 = x.astype(np.float64)
            sq = np.square(x64)
            self.sums += member @ x64
            self.squares += member @ sq
            self.total_sums += x64.sum(axis=0)
            self.total_squares += sq.sum(axis=0)
        self.filled = stop

    def table(self, group: str) -> pd.DataFrame:
        """scanpy's ``rank_genes_groups_df`` of ``group`` vs the rest: columns
        :data:`RANK_COLUMNS`, rows by score, highest first."""
        from scipy import stats
        from statsmodels.stats.multitest import multipletests

        if self.filled != len(self.labels):
            msg = f"{self.filled} of {len(self.labels)} cells given"
            raise ValueError(msg)
        g = self.groups.index(str(group))
        n_group = int(self.counts[g])
        n_rest = len(self.labels) - n_group
        mean_g, var_g = _mean_var(self.sums[g], self.squares[g], n_group)
        mean_r, var_r = _mean_var(
            self.total_sums - self.sums[g], self.total_squares - self.squares[g], n_rest
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            scores, pvals = stats.ttest_ind_from_stats(
                mean1=mean_g,
                std1=np.sqrt(var_g),
                nobs1=n_group,
                mean2=mean_r,
                std2=np.sqrt(var_r),
                nobs2=n_rest,
                equal_var=False,
            )
        scores = np.asarray(scores, dtype=np.float64)
        pvals = np.asarray(pvals, dtype=np.float64)
        scores[np.isnan(scores)] = 0
        pvals[np.isnan(pvals)] = 1
        _, pvals_adj, _, _ = multipletests(pvals, alpha=0.05, method="fdr_bh")
        fold = (np.expm1(mean_g) + 1e-9) / (np.expm1(mean_r) + 1e-9)
        n = len(scores)
        order = np.argpartition(scores, -n)[-n:]
        order = order[np.argsort(scores[order])[::-1]]  # scanpy's _select_top_n
        with np.errstate(divide="ignore", invalid="ignore"):
            lfc = np.log2(fold[order])
        return pd.DataFrame(
            {
                "names": self.names[order].to_numpy(dtype=object),
                "scores": scores[order].astype(np.float32),
                "logfoldchanges": lfc.astype(np.float32),
                "pvals": pvals[order],
                "pvals_adj": pvals_adj[order],
            }
        )


def _mean_var(sums: np.ndarray, squares: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased variance from sums of x and x² over ``n`` cells (scanpy's
    ``E[x²] - E[x]²`` times ``n / (n - 1)``)."""
    mean = sums / n
    var = (squares / n - mean**2) * (n / (n - 1)) if n > 1 else np.full_like(mean, np.nan)
    return mean, var
