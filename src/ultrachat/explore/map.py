"""Topic map: a 2D layout of dialogue embeddings, computed at index time on a sample.

Embedding: TF-IDF over the words of the opening exchange (first user turn and first
answer), reduced with a randomized truncated SVD and L2-normalised, i.e. latent semantic
analysis (numpy + scipy.sparse: scikit-learn would add ~10 s of import time).
Layout: k-means clusters of the embeddings become islands; the islands sit at
the 2D principal-component positions of their centroids (pushed apart until they stop
overlapping, radius growing with the cluster's size) and each dialogue sits inside its
island at its own 2D principal-component offset from the centroid. Like the Atlas map of
the seed, neighbours on the map talk about the same things; unlike t-SNE/UMAP it takes
seconds on 20k points on two cores.

Example::

    >>> xy = layout(embed(["how do tides work", "what causes tides", "bake bread"]))
    >>> xy.shape
    (3, 2)
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter, defaultdict
from typing import Any

import numpy as np

OPENING_CHARS = 2000
SEED = 0


_WORD = re.compile(r"[^\W\d_]{2,}")


def _tfidf(texts: list[str]) -> Any:
    """Sparse TF-IDF rows (sublinear tf, L2-normalised) over words in 2+ and at most half of the texts.

    Dropping words found in over half the texts stands in for a stop-word list and works
    for any language.
    """
    from scipy.sparse import csr_matrix

    docs = [Counter(w.casefold() for w in _WORD.findall(t)) for t in texts]
    df = Counter(w for d in docs for w in d)
    vocab = {w: i for i, w in enumerate(w for w, c in df.items() if 2 <= c <= max(2, len(texts) // 2))}
    idf = np.log((1 + len(texts)) / (1 + np.array([df[w] for w in vocab], dtype=float))) + 1
    indptr, indices, data = [0], [], []
    for d in docs:
        for w, c in d.items():
            if (j := vocab.get(w)) is not None:
                indices.append(j)
                data.append((1 + np.log(c)) * idf[j])
        indptr.append(len(indices))
    matrix = csr_matrix((np.array(data, dtype=np.float32), indices, indptr), shape=(len(texts), len(vocab)))
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1
    return csr_matrix(matrix.multiply(1 / norms[:, None]))


def embed(texts: list[str], dims: int = 48) -> np.ndarray:
    """LSA embeddings (rows L2-normalised): TF-IDF reduced by a randomized truncated SVD."""
    matrix = _tfidf(texts)
    k = min(dims, *matrix.shape)
    if k < 2:
        return np.zeros((len(texts), 2))
    rng = np.random.default_rng(SEED)
    # Randomized range finder with two power iterations (Halko et al. 2011).
    q = np.linalg.qr(matrix @ rng.normal(size=(matrix.shape[1], min(k + 10, matrix.shape[1]))))[0]
    for _ in range(2):
        q = np.linalg.qr(matrix @ np.linalg.qr(matrix.T @ q)[0])[0]
    u, s, _ = np.linalg.svd((matrix.T @ q).T, full_matrices=False)
    vectors = (q @ u[:, :k]) * s[:k]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def kmeans(x: np.ndarray, k: int, iterations: int = 25) -> np.ndarray:
    """Cluster labels by Lloyd's k-means with k-means++ seeding (deterministic)."""
    rng = np.random.default_rng(SEED)
    centres = [x[rng.integers(len(x))]]
    dist = np.full(len(x), np.inf)
    for _ in range(1, k):
        dist = np.minimum(dist, ((x - centres[-1]) ** 2).sum(axis=1))
        total = dist.sum()
        centres.append(x[rng.choice(len(x), p=dist / total)] if total > 0 else x[rng.integers(len(x))])
    c = np.stack(centres)
    labels = np.zeros(len(x), dtype=int)
    for _ in range(iterations):
        new = (-2 * x @ c.T + (c**2).sum(axis=1)).argmin(axis=1)
        if _ and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = labels == j
            if members.any():
                c[j] = x[members].mean(axis=0)
    return labels


def _pca2(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0)
    if len(x) < 2 or not np.any(centred):
        return np.zeros((len(x), 2))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = centred @ vt[:2].T
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def _separate(centres: np.ndarray, radii: np.ndarray, rounds: int = 300) -> np.ndarray:
    """Push overlapping circles apart (few dozen circles: a dense numpy loop is enough)."""
    pos = centres.copy()
    rng = np.random.default_rng(SEED)
    pos += rng.normal(scale=1e-3, size=pos.shape)  # identical centres need a direction to separate
    for _ in range(rounds):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.linalg.norm(delta, axis=2) + np.eye(len(pos))
        overlap = np.clip(radii[:, None] + radii[None, :] - dist, 0, None)
        np.fill_diagonal(overlap, 0)
        if not overlap.any():
            break
        pos += 0.5 * (delta / dist[..., None] * overlap[..., None]).sum(axis=1) / len(pos) ** 0.5
    return pos


def layout(vectors: np.ndarray) -> np.ndarray:
    """2D positions (roughly within [-1, 1]) for embedding rows."""
    n = len(vectors)
    if n < 3:
        return np.array([[i * 0.5, 0.0] for i in range(n)]).reshape(n, 2)
    labels = kmeans(vectors, int(np.clip(round((n / 8) ** 0.5), 2, 48)))
    present = np.unique(labels)
    centroids = np.stack([vectors[labels == c].mean(axis=0) for c in present])
    sizes = np.array([(labels == c).sum() for c in present], dtype=float)
    centres = _pca2(centroids)
    span = np.abs(centres).max() or 1.0
    radii = 0.6 * np.sqrt(sizes / n) * span
    centres = _separate(centres, radii)
    out = np.zeros((n, 2))
    for i, c in enumerate(present):
        members = labels == c
        local = _pca2(vectors[members])
        reach = np.percentile(np.linalg.norm(local, axis=1), 95) if members.sum() > 1 else 0.0
        out[members] = centres[i] + (local / reach * radii[i] if reach > 0 else 0)
    out -= out.mean(axis=0)
    return out / (np.abs(out).max() or 1.0)


def _openings(conn: sqlite3.Connection, rowids: list[int]) -> list[str]:
    """Opening exchange of each sampled dialogue, read from the JSONL files in offset order."""
    rows = conn.execute(f"SELECT d.rowid, f.path, d.offset, d.length FROM dialogues d JOIN files f ON f.id = d.file "
                        f"WHERE d.rowid IN ({','.join(map(str, rowids))})").fetchall()
    by_file: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for rowid, path, offset, length in rows:
        by_file[path].append((offset, length, rowid))
    text: dict[int, str] = {}
    for path, items in by_file.items():
        with open(path, "rb") as fh:
            for offset, length, rowid in sorted(items):
                fh.seek(offset)
                try:
                    data = json.loads(fh.read(length))["data"]
                except (ValueError, KeyError, TypeError):
                    data = []
                text[rowid] = "\n".join(data[:2])[:OPENING_CHARS]
    return [text.get(r, "") for r in rowids]


def compute_map(conn: sqlite3.Connection, max_points: int = 20000, progress: bool = True) -> int:
    """Sample up to ``max_points`` dialogues, lay them out and store them in the ``map`` table."""
    total = conn.execute("SELECT coalesce(max(rowid), 0) FROM dialogues").fetchone()[0]
    rng = np.random.default_rng(SEED)
    sample = np.arange(1, total + 1) if total <= max_points else np.sort(
        rng.choice(total, size=max_points, replace=False) + 1)
    rowids = [int(r) for r in sample]
    if progress:
        from ..core.progress import console

        console.print(f"computing the topic map of {len(rowids):,} dialogues…", highlight=False)
    from threadpoolctl import threadpool_limits

    # One BLAS thread: these matrices are small, and on a busy machine oversubscribed BLAS
    # threads made the SVD over 10x slower.
    with threadpool_limits(1):
        xy = layout(embed(_openings(conn, rowids))) if rowids else np.zeros((0, 2))
    with conn:
        conn.execute("DELETE FROM map")
        conn.executemany("INSERT INTO map(rowid, x, y) VALUES (?, ?, ?)",
                         ((r, float(x), float(y)) for r, (x, y) in zip(rowids, xy, strict=True)))
    return len(rowids)
