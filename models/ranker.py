"""A learned ranker over co-occurrence candidates: features, the torch MLP, fine-tuning, the guard.

The co-occurrence model proposes candidates in its own order (`models.cooccurrence`); the ranker
re-orders them with an MLP over per-(user, candidate) features. Training and serving call the
same `featurise_lists`, so what the model learns on is what it is served (no training/serving
skew).

Training data are *groups*: the candidates the user would have been served just before one of
their positive events, with the item they then chose. The loss is listwise (softmax cross-entropy
of the chosen item within its group), and the quality measure is the chosen item's nDCG@10
within its group — for the co-occurrence order (the baseline) and for the model's order.

>>> import numpy as np
>>> groups = toy_groups(n_groups=300, seed=1)
>>> train, holdout = groups.split(0.25)
>>> model = RankerMLP()
>>> model.fit_scaler(train)
>>> before = evaluate(model, holdout)["loss"]
>>> _ = fine_tune(model, train, epochs=30, seed=1)
>>> evaluate(model, holdout)["loss"] < before
True
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from models.cooccurrence import (
    SOURCES,
    ItemCooccurrence,
    RankedLists,
    Recommendation,
    UserHistory,
    round12,
)
from models.factors import ItemFactors, factor_scores

FEATURES: tuple[str, ...] = (
    "item_score",  # co-occurrence part of the candidate score, / the user's best candidate's
    "user_score",  # similar-user part, likewise
    "rank",  # 1 / log2(2 + position in the co-occurrence order)
    "trending",  # 1 when the candidate only back-fills the list from the trending items
    "popularity",  # log of the item's decayed popularity / the most popular item's
    "like_age",  # mean age of the item's likes, in half-lives before the user's latest event
    "sentiment",  # mean P(positive) of the item's reviews (0.5 without reviews)
    "reviews",  # log(1 + number of scored reviews of the item)
    "because_recency",  # recency weight of the user's item that explains the candidate best
    "last_similarity",  # similarity to the user's latest liked item
    "recent_similarity",  # mean similarity to the user's ``RECENT`` latest liked items
    "user_activity",  # log(1 + items in the user's history)
    "genre_match",  # cosine of the candidate's genres and the user's affinity-weighted genres
    "factor_score",  # latent-factor preference, / the list's largest (`models.factors`)
)
COLUMN = {name: column for column, name in enumerate(FEATURES)}
FACTOR = COLUMN["factor_score"]
FEATURE_VERSION = "2"
K = 10  # nDCG@K within a group
RECENT = 10
Device = Literal["auto", "cpu", "cuda"]


# --- features -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UserContext:
    """What featurisation needs of a user: their liked items newest first (with affinity), the
    size of their history, the time of their latest event and their genre profile."""

    recent: tuple[tuple[str, float], ...]
    n_items: int
    now_ts: float
    genres: Mapping[str, float]  # genre -> weight, unit norm (empty when no genre is known)

    @classmethod
    def of(cls, history: UserHistory, catalogue: Mapping[str, Sequence[str]], *,
           recent_items: int) -> UserContext:
        now = max((v[1] for v in history.items.values()), default=0.0)
        return cls.from_recent(history.recent(recent_items), len(history.items), now, catalogue)

    @classmethod
    def from_recent(cls, recent: Sequence[tuple[str, float]], n_items: int, now_ts: float,
                    catalogue: Mapping[str, Sequence[str]]) -> UserContext:
        """From the user's liked items newest first (as `UserHistory.recent` gives them), the
        size of their history and the time of their latest event."""
        profile: dict[str, float] = {}
        for item_id, affinity in recent:
            genres = catalogue.get(item_id, ())
            for genre in genres:
                profile[genre] = profile.get(genre, 0.0) + affinity / len(genres)
        norm = math.sqrt(sum(v * v for v in profile.values()))
        return cls(tuple(recent), n_items, now_ts,
                   {g: v / norm for g, v in sorted(profile.items())} if norm > 0 else {})


@dataclass(frozen=True, slots=True)
class CandidateLists:
    """Candidate lists as flat columns, what `featurise_lists` reads: list ``g`` is rows
    ``ptr[g]:ptr[g + 1]``, each a candidate (id, interned index or -1), its co-occurrence and
    similar-user score parts, whether it only back-fills (trending) and the item that explains
    it best (None: none)."""

    ptr: np.ndarray
    item_ids: list[str]
    index: np.ndarray
    item_score: np.ndarray
    user_score: np.ndarray
    trending: np.ndarray
    because: list[str | None]

    @classmethod
    def of(cls, lists: Sequence[Sequence[Recommendation]], items: ItemCooccurrence
           ) -> CandidateLists:
        rows = [c for candidates in lists for c in candidates]
        ptr = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum([len(candidates) for candidates in lists], out=ptr[1:])
        ids = [c.item_id for c in rows]
        return cls(ptr, ids, items.indices(ids),
                   np.array([c.item_score for c in rows], dtype=np.float64),
                   np.array([c.user_score for c in rows], dtype=np.float64),
                   np.array([c.source == "trending" for c in rows], dtype=np.bool_),
                   [c.because[0] if c.because else None for c in rows])

    @classmethod
    def ranked(cls, lists: RankedLists, items: ItemCooccurrence) -> CandidateLists:
        """The listed lists of a `RankedLists` (``items``' interning), no object per row."""
        if not lists.listed.all():
            lists = lists.select(lists.listed)
        first = (lists.because[:, 0] if lists.because.shape[1] else
                 np.full(len(lists.item), -1, dtype=np.int64))
        because = [name if k >= 0 else None for name, k in zip(
            items.names(np.maximum(first, 0)), first.tolist(), strict=True)]
        return cls(lists.ptr, items.names(lists.item), lists.item, lists.item_part,
                   lists.user_part, lists.source == SOURCES.index("trending"), because)


def featurise_lists(lists: CandidateLists, users: Sequence[UserContext],
                    items: ItemCooccurrence, catalogue: Mapping[str, Sequence[str]], *,
                    recency_half_life: float, half_life_s: float, decay_epoch: float,
                    factors: ItemFactors | None = None) -> np.ndarray:
    """The features of candidate lists (columns as `FEATURES`), list ``g`` for ``users[g]``,
    in one pass: one float32 matrix whose rows ``lists.ptr[g]:lists.ptr[g + 1]`` are list
    ``g``'s — the same values whether the list is featurised with others or alone.
    ``factor_score`` is 0 without ``factors`` (the trainer fills it in:
    `Groups.with_factor_scores`).

    A pure function of its arguments. Values are rounded to 12 significant digits first, so that
    statistics summed in another order (another worker, a replay) give the same features.
    """
    ptr = lists.ptr
    sizes = np.diff(ptr)
    n = int(ptr[-1])
    out = np.zeros((n, len(FEATURES)))
    if n == 0:
        return out.astype(np.float32)

    def put(name: str, values: object) -> None:
        out[:, COLUMN[name]] = values

    group = np.repeat(np.arange(len(sizes)), sizes)  # each row's list
    starts = ptr[:-1][sizes > 0]
    for name, scores in (("item_score", lists.item_score), ("user_score", lists.user_score)):
        best = np.zeros(len(sizes))
        best[sizes > 0] = np.maximum.reduceat(scores, starts)
        best = best[group]
        with np.errstate(divide="ignore", invalid="ignore"):
            put(name, np.where(best > 0, scores / best, 0.0))
    put("rank", 1.0 / np.log2(2.0 + (np.arange(n) - ptr[group])))
    put("trending", lists.trending)
    popularity, mass, n_reviews, positive = round12(items.item_stats_at(lists.index)).T
    top = round12(np.array([items.max_popularity]))[0]
    now_exponent = (np.array([u.now_ts for u in users])[group] - decay_epoch) / half_life_s
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log(popularity / top) if top > 0 else np.zeros(n)
        put("popularity", np.clip(np.where(popularity > 0, ratio, -20.0), -20.0, 0.0))
        age = now_exponent - np.log2(popularity / mass)
        put("like_age", np.clip(np.where((popularity > 0) & (mass > 0), age, 20.0), -2.0, 20.0))
        put("sentiment", np.where(n_reviews > 0, positive / n_reviews, 0.5))
    put("reviews", np.log1p(np.maximum(n_reviews, 0.0)))
    because, recency, genre_match = lists.because, [], []
    for k, user in enumerate(users):
        position = {item_id: rank for rank, (item_id, _) in enumerate(user.recent)}
        a, b = int(ptr[k]), int(ptr[k + 1])
        recency += [0.5 ** (position[why] / recency_half_life)
                    if why is not None and why in position else 0.0 for why in because[a:b]]
        genre_match += ([
            sum(user.genres.get(genre, 0.0) for genre in catalogue.get(i, ())) / math.sqrt(
                len(catalogue[i])) if catalogue.get(i) else 0.0 for i in lists.item_ids[a:b]]
            if user.genres else [0.0] * (b - a))
    put("because_recency", recency)
    last, mean = items.similarity_to_recent(
        [[item_id for item_id, _ in user.recent[:RECENT]] for user in users], ptr,
        lists.item_ids)
    put("last_similarity", last)
    put("recent_similarity", mean)
    put("user_activity", np.array([math.log1p(u.n_items) for u in users])[group])
    put("genre_match", genre_match)
    if factors is not None:
        put("factor_score", factor_scores(factors, ptr, lists.item_ids, [
            [item_id for item_id, _ in user.recent] for user in users]))
    return round12(out).astype(np.float32)


# --- training data ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Groups:
    """Padded training groups: ``x`` [G, C, F] features, ``mask`` [G, C] real candidates,
    ``positive`` [G] the position of the chosen item, ``ts`` [G] the event times."""

    x: np.ndarray
    mask: np.ndarray
    positive: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return len(self.positive)

    @classmethod
    def of(cls, examples: Sequence[tuple[np.ndarray, int, float]]) -> Groups:
        """From (features [c, F], position of the chosen item, event ts) triples."""
        width = max((len(f) for f, _, _ in examples), default=1)
        columns = examples[0][0].shape[1] if examples else len(FEATURES)
        x = np.zeros((len(examples), width, columns), dtype=np.float32)
        mask = np.zeros((len(examples), width), dtype=bool)
        for g, (features, _, _) in enumerate(examples):
            x[g, : len(features)] = features
            mask[g, : len(features)] = True
        positive = np.array([p for _, p, _ in examples], dtype=np.int64)
        ts = np.array([t for _, _, t in examples], dtype=np.float64)
        return cls(x, mask, positive, ts)

    def split(self, holdout: float) -> tuple[Groups, Groups]:
        """The oldest ``1 - holdout`` share for training, the most recent for evaluation; groups
        of one time are never cut apart (the cut moves earlier, unless all are of one time)."""
        fit, held = self.split_index(holdout)
        return self.take(fit), self.take(held)

    def split_index(self, holdout: float) -> tuple[np.ndarray, np.ndarray]:
        """The indices of `split`'s two parts."""
        order = np.argsort(self.ts, kind="stable")
        cut = len(order) - max(1, int(round(len(order) * holdout)))
        tie = cut
        while 0 < tie < len(order) and self.ts[order[tie - 1]] == self.ts[order[tie]]:
            tie -= 1
        cut = tie or cut
        return order[:cut], order[cut:]

    @classmethod
    def concat(cls, parts: Sequence[Groups]) -> Groups:
        """Groups of one padded width, one after another."""
        return cls(np.concatenate([p.x for p in parts]), np.concatenate([p.mask for p in parts]),
                   np.concatenate([p.positive for p in parts]),
                   np.concatenate([p.ts for p in parts]))

    def take(self, index: np.ndarray) -> Groups:
        """The groups at ``index``, in that order."""
        return Groups(self.x[index], self.mask[index], self.positive[index], self.ts[index])

    def with_factor_scores(self, factors: ItemFactors | None,
                           candidates: Sequence[Sequence[str]], liked: Sequence[Sequence[str]]
                           ) -> Groups:
        """These groups with ``factor_score`` computed from ``factors`` as `featurise_lists`
        computes it: group ``g``'s candidates are the items ``candidates[g]``, its user liked
        ``liked[g]``."""
        sizes = self.mask.sum(axis=1)
        ptr = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=ptr[1:])
        ids = [item for group in candidates for item in group]
        if len(ids) != ptr[-1]:
            raise ValueError(f"{len(ids)} candidate ids for {ptr[-1]} candidates")
        x = self.x.copy()
        x[self.mask, FACTOR] = round12(factor_scores(factors, ptr, ids, liked))
        return Groups(x, self.mask, self.positive, self.ts)

    def to_npz(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, x=self.x, mask=self.mask, positive=self.positive, ts=self.ts)
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> Groups:
        with np.load(io.BytesIO(data), allow_pickle=False) as a:
            return cls(a["x"], a["mask"], a["positive"], a["ts"])


def toy_groups(*, n_groups: int, width: int = 20, seed: int = 0) -> Groups:
    """A learnable toy set: the chosen item is the one with the highest hidden score, a fixed
    mix of the features that the co-occurrence order (position) does not follow."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_groups, width, len(FEATURES))).astype(np.float32)
    x[:, :, COLUMN["rank"]] = 1.0 / np.log2(2.0 + np.arange(width))
    hidden = (1.5 * x[:, :, COLUMN["popularity"]] - x[:, :, COLUMN["sentiment"]]
              + 0.5 * x[:, :, COLUMN["genre_match"]])
    positive = hidden.argmax(axis=1)
    return Groups(x, np.ones((n_groups, width), dtype=bool), positive.astype(np.int64),
                  np.arange(n_groups, dtype=np.float64))


# --- the model ----------------------------------------------------------------------------------
RANK = COLUMN["rank"]


class RankerMLP(nn.Module):
    """Scores (user, candidate) feature vectors: standardise, then Linear-ReLU layers to a logit,
    plus a learned multiple of the ``rank`` feature.

    The last layer starts at zero, so a new model ranks exactly as the co-occurrence order does
    (the ``rank`` term is monotone in it) and training moves it away only where the data say so.
    The standardisation is part of the model (buffers), and so are the item factors that
    ``factor_score`` is computed from (`factors`: fitted by the trainer, None before), so an
    artefact is self-contained.
    ``columns``: `FEATURES`, or more where a benchmark appends features of its own after them.
    """

    def __init__(self, hidden: Sequence[int] = (32, 16), *, columns: int = len(FEATURES)
                 ) -> None:
        super().__init__()
        self.hidden = tuple(int(h) for h in hidden)
        self.register_buffer("mean", torch.zeros(columns))
        self.register_buffer("scale", torch.ones(columns))
        layers: list[nn.Module] = []
        width = columns
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        last = nn.Linear(width, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)
        self.prior = nn.Parameter(torch.tensor(10.0))  # weight of the co-occurrence order
        self.factors: ItemFactors | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.scale).squeeze(-1) + self.prior * x[..., RANK]

    def fit_scaler(self, groups: Groups) -> None:
        """Set the standardisation from the real candidates of ``groups``."""
        rows = groups.x[groups.mask]
        if len(rows):
            self.mean.copy_(torch.from_numpy(rows.mean(axis=0)))
            self.scale.copy_(torch.from_numpy(np.maximum(rows.std(axis=0), 1e-3)))

    @torch.no_grad()
    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores of a feature matrix [n, F] on the CPU, rounded to 6 decimals (ties are then
        broken by the co-occurrence order, whatever the batch size did to the last bits)."""
        if len(features) == 0:
            return np.zeros(0)
        out = self(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        return np.round(out.double().numpy(), 6)


def resolve_device(device: Device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA device")
    return torch.device(device)


def _listwise_loss(logits: torch.Tensor, mask: torch.Tensor, positive: torch.Tensor
                   ) -> torch.Tensor:
    logits = logits.masked_fill(~mask, -1e9)
    return nn.functional.cross_entropy(logits, positive)


def _pointwise_loss(logits: torch.Tensor, mask: torch.Tensor, positive: torch.Tensor
                    ) -> torch.Tensor:
    """Mean squared error of each real candidate's score against 1 (chosen) or 0: the seed's
    pointwise objective, kept as an ablation."""
    target = nn.functional.one_hot(positive, logits.shape[1]).to(logits.dtype)
    return ((logits - target) ** 2)[mask].mean()


Loss = Literal["listwise", "pointwise"]
LOSSES = {"listwise": _listwise_loss, "pointwise": _pointwise_loss}


@dataclass(frozen=True, slots=True)
class FitReport:
    epochs: int
    examples: int  # groups seen, counting repeats over epochs
    seconds: float
    train_loss: float
    device: str

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else float("inf")


def fine_tune(model: RankerMLP, groups: Groups, *, epochs: int = 5, lr: float = 1e-3,
              batch_size: int = 64, device: Device = "auto", seed: int = 0,
              loss: Loss = "listwise") -> FitReport:
    """Continue training ``model`` (in place) on ``groups`` with Adam and the listwise loss
    (``loss="pointwise"``: MSE, the ablation). The model ends on the CPU, where the workers
    serve it."""
    objective = LOSSES[loss]
    target = resolve_device(device)
    generator = torch.Generator().manual_seed(seed)
    model.to(target).train()
    x = torch.from_numpy(groups.x).to(target)
    mask = torch.from_numpy(groups.mask).to(target)
    positive = torch.from_numpy(groups.positive).to(target)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    started = time.perf_counter()
    last = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(groups), generator=generator).to(target)
        total, batches = torch.zeros((), device=target), 0
        for start in range(0, len(groups), batch_size):
            idx = order[start:start + batch_size]
            value = objective(model(x[idx]), mask[idx], positive[idx])
            optimiser.zero_grad()
            value.backward()
            optimiser.step()
            total += value.detach()
            batches += 1
        last = float(total / max(batches, 1))  # one device sync per epoch
    if target.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    model.to("cpu").eval()
    return FitReport(epochs, epochs * len(groups), seconds, last, target.type)


@torch.no_grad()
def evaluate(model: RankerMLP | None, groups: Groups) -> dict[str, float]:
    """nDCG@10, Recall@10 and the listwise loss of the chosen items within their groups, for
    ``model`` or, with None, for the co-occurrence order."""
    if len(groups) == 0:
        return {"ndcg@10": 0.0, "recall@10": 0.0, "loss": float("nan"), "groups": 0}
    mask = torch.from_numpy(groups.mask)
    positive = torch.from_numpy(groups.positive)
    if model is None:
        width = groups.x.shape[1]
        logits = -torch.arange(width, dtype=torch.float32).expand(len(groups), width).clone()
    else:
        model.eval()
        logits = model(torch.from_numpy(groups.x)).float()
    logits = logits.masked_fill(~mask, float("-inf"))
    chosen = logits.gather(1, positive[:, None])
    # the chosen item's rank: candidates scored higher, and ties placed before it (pessimistic)
    rank = ((logits > chosen) | ((logits == chosen) & (torch.arange(logits.shape[1]) <
                                                       positive[:, None]))).sum(dim=1)
    hit = rank < K
    ndcg = torch.where(hit, 1.0 / torch.log2(rank.double() + 2.0), torch.zeros(()))
    loss = nn.functional.cross_entropy(logits.masked_fill(~mask, -1e9), positive)
    return {"ndcg@10": float(ndcg.mean()), "recall@10": float(hit.double().mean()),
            "loss": float(loss), "groups": len(groups)}


def not_worse(candidate: Mapping[str, float], current: Mapping[str, float]) -> bool:
    """The publishing guard: the candidate's held-out nDCG@10 is at least the current one's."""
    return candidate["ndcg@10"] >= current["ndcg@10"]


def rerank(model: RankerMLP, candidates: Sequence[Recommendation], features: np.ndarray,
           n: int) -> list[Recommendation]:
    """The top ``n`` candidates by the model's score (ties: co-occurrence order), each carrying
    the model's score."""
    scores = model.score(features)
    order = sorted(range(len(candidates)), key=lambda k: (-scores[k], k))[:n]
    return [candidates[k]._replace(score=float(scores[k])) for k in order]


# --- artefacts ----------------------------------------------------------------------------------
FACTORS_TENSOR = "item_factors"  # the artefact's item vectors; their ids: metadata "factor_items"
MAX_FACTORS = 256


class ArtefactError(ValueError):
    """A ranker artefact that cannot be served: corrupt, too large or incompatible."""


def to_artefact(model: RankerMLP, *, version: int, metrics: Mapping[str, object]) -> bytes:
    """The model as safetensors bytes, with what a loader must check in its metadata."""
    metadata = {"format": "tastemaker-ranker", "version": str(version),
                "features": ",".join(FEATURES), "feature_version": FEATURE_VERSION,
                "hidden": ",".join(map(str, model.hidden)), "metrics": json.dumps(metrics)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.factors is not None:
        tensors[FACTORS_TENSOR] = torch.from_numpy(np.ascontiguousarray(model.factors.vectors))
        metadata["factor_items"] = json.dumps(list(model.factors.ids))
    return save_safetensors(tensors, metadata=metadata)


def from_artefact(data: bytes, *, max_bytes: int) -> tuple[RankerMLP, dict[str, str]]:
    """Load an artefact made by `to_artefact`; raise `ArtefactError` naming what is wrong.
    safetensors holds plain tensors: nothing is unpickled."""
    if len(data) > max_bytes:
        raise ArtefactError(f"artefact is {len(data)} bytes, over the {max_bytes} byte limit")
    try:
        metadata = _safetensors_metadata(data)
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ArtefactError(f"not a readable safetensors artefact: {exc}") from None
    if metadata.get("format") != "tastemaker-ranker":
        raise ArtefactError(f"not a tastemaker ranker (format={metadata.get('format')!r})")
    if metadata.get("features") != ",".join(FEATURES) or (
            metadata.get("feature_version") != FEATURE_VERSION):
        raise ArtefactError("incompatible features: artefact has "
                            f"{metadata.get('features')!r} v{metadata.get('feature_version')}, "
                            f"this worker computes {','.join(FEATURES)!r} v{FEATURE_VERSION}")
    try:
        hidden = tuple(int(h) for h in metadata["hidden"].split(","))
        if not hidden or any(h < 1 or h > 4096 for h in hidden):
            raise ValueError(hidden)
    except (KeyError, ValueError):
        raise ArtefactError(f"bad hidden sizes {metadata.get('hidden')!r}") from None
    model = RankerMLP(hidden)
    model.factors = _factors(tensors.pop(FACTORS_TENSOR, None), metadata.get("factor_items"))
    expected = model.state_dict()
    if set(tensors) != set(expected):
        raise ArtefactError(f"tensors {sorted(tensors)} do not match the model's "
                            f"{sorted(expected)}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            raise ArtefactError(f"tensor {name}: {tuple(tensor.shape)} {tensor.dtype}, expected "
                                f"{tuple(expected[name].shape)} {expected[name].dtype}")
        if not torch.isfinite(tensor).all():
            raise ArtefactError(f"tensor {name} has NaN or infinite values")
    model.load_state_dict(tensors)
    model.eval()
    return model, metadata


def _factors(vectors: torch.Tensor | None, ids: str | None) -> ItemFactors | None:
    """An artefact's item factors, checked: None when it has none."""
    if vectors is None and ids is None:
        return None
    try:
        names = json.loads(ids or "null")
        if not isinstance(names, list) or not all(isinstance(i, str) for i in names):
            raise ValueError("factor_items is not a list of item ids")
        if vectors is None or vectors.dtype != torch.float32 or vectors.ndim != 2 or not (
                1 <= vectors.shape[1] <= MAX_FACTORS):
            raise ValueError(f"{FACTORS_TENSOR} must be float32 [items, 1..{MAX_FACTORS}]")
        if not torch.isfinite(vectors).all():
            raise ValueError(f"{FACTORS_TENSOR} has NaN or infinite values")
        return ItemFactors(tuple(names), vectors.numpy())
    except (ValueError, json.JSONDecodeError) as exc:
        raise ArtefactError(f"bad item factors: {exc}") from None


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise ValueError("header length beyond the end of the data")
    header = json.loads(data[8:8 + header_len])
    return dict(header.get("__metadata__") or {})
