"""PatchCore's three steps on feature maps: locally aware patch features, a greedy coreset, nearest-neighbour distances.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection" (CVPR 2022), as anomalib
implements it (``PatchcoreModel``, ``KCenterGreedy``), written here on torch because anomalib's
model is tied to timm backbones and Lightning, which an offline station cannot use. Two
departures, both for a 2-core CPU, both reported in the model card:

- Features are reduced to at most ``MAX_FEATURE_DIM`` channels by averaging neighbouring channels
  (the original's adaptive average pooling); scoring time grows with the dimension.
- The coreset is chosen in two stages: a greedy k-center pass over each batch of images keeps a
  pool of ``POOL_FACTOR`` times the bank size, and a second greedy pass picks the bank from the pool.
  A single greedy pass over every patch of a 1,000-image set costs bank x patches x dims
  (about 10^13 operations at 256 px), hours on two cores; per batch it is linear in the set.

Nearest-neighbour search is exact, by matrix products (see :class:`NearestSearch` for why not faiss).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MAX_FEATURE_DIM = 384
PROJECTION_DIM = 32  # the greedy search measures distances in a random projection (as anomalib does)
POOL_FACTOR = 4
QUERY_CHUNK = 2048  # queries per matrix product: 2,048 x 10,000 distances = 80 MB


def patch_features(maps: list[torch.Tensor], feature_dim: int = MAX_FEATURE_DIM) -> torch.Tensor:
    """[(N, C1, h, w), (N, C2, h/2, w/2)] -> (N, h, w, D): each patch with its 3x3 neighbourhood, layers joined."""
    size = maps[0].shape[-2:]
    pooled = [F.avg_pool2d(m, kernel_size=3, stride=1, padding=1) for m in maps]
    joined = torch.cat([pooled[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                                      for m in pooled[1:]], dim=1)
    n, channels, h, w = joined.shape
    flat = joined.permute(0, 2, 3, 1).reshape(-1, channels)
    if channels > feature_dim:
        flat = F.adaptive_avg_pool1d(flat.unsqueeze(1), feature_dim).squeeze(1)
    return flat.reshape(n, h, w, -1).contiguous()


def greedy_coreset(features: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``count`` rows chosen by greedy k-center (each pick: the row farthest from those picked).

    Distances are measured in a random projection to PROJECTION_DIM dimensions and updated with
    one matrix-vector product per pick (|x - c|^2 = |x|^2 - 2 x.c + |c|^2): each pick then reads
    the pool once, which is what bounds the time on a CPU.
    """
    total = features.shape[0]
    if count >= total:
        return torch.arange(total)
    generator = torch.Generator().manual_seed(seed)
    if features.shape[1] > PROJECTION_DIM:
        projection = torch.randn(features.shape[1], PROJECTION_DIM, generator=generator) / math.sqrt(PROJECTION_DIM)
        features = features @ projection
    features = features.contiguous()
    norms = torch.sum(features * features, dim=1)
    picked = torch.empty(count, dtype=torch.long)
    picked[0] = int(torch.randint(total, (1,), generator=generator))
    threads = torch.get_num_threads()
    # Thousands of small products: waking the thread pool for each costs more than it saves, and on a
    # busy 2-core machine its spinning workers slowed the loop several times over (measured).
    torch.set_num_threads(1)
    try:
        nearest = norms - 2.0 * torch.mv(features, features[picked[0]]) + norms[picked[0]]
        for i in range(1, count):
            picked[i] = torch.argmax(nearest)
            distance = norms - 2.0 * torch.mv(features, features[picked[i]]) + norms[picked[i]]
            torch.minimum(nearest, distance, out=nearest)
    finally:
        torch.set_num_threads(threads)
    return picked


class NearestSearch:
    """Distance from each query patch to its nearest patch in the memory bank (exact).

    One matrix product per chunk (|q - b|^2 = |q|^2 - 2 q.b + |b|^2), torch's BLAS. faiss-cpu's exact
    ``IndexFlatL2`` was measured slower on this path (1,024 queries x 10,000 x 256: 325 ms against
    176 ms, one thread, same busy 2-core machine) and its HNSW index lost exactness (5% of the
    nearest distances wrong at M=32) for no gain at this bank size, so there is no faiss dependency.
    """

    def __init__(self, bank: np.ndarray):
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self._bank_t = torch.from_numpy(self.bank)
        self._bank_norms = torch.sum(self._bank_t * self._bank_t, dim=1)

    @torch.inference_mode()
    def distances(self, queries: np.ndarray) -> np.ndarray:
        """(M, D) float32 -> (M,) Euclidean distance to the nearest bank row."""
        query_t = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        nearest = []
        for start in range(0, len(query_t), QUERY_CHUNK):
            chunk = query_t[start:start + QUERY_CHUNK]
            squared = torch.sum(chunk * chunk, dim=1, keepdim=True) - 2.0 * chunk @ self._bank_t.T + self._bank_norms
            nearest.append(torch.clamp(squared.min(dim=1).values, min=0.0).sqrt())
        return torch.cat(nearest).numpy() if nearest else np.zeros(0, np.float32)
