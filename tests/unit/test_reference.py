"""The in-process reference the integration tests and benchmarks compare workers with."""

from __future__ import annotations

import io
import json

import numpy as np

from models.cooccurrence import ItemCooccurrence
from streams.settings import load_settings
from streams.tools.reference import StreamReplica


def _events() -> list[tuple[str, dict]]:
    """Plays, ratings and reviews (rated and not) of a few users, some delivered twice."""
    out = []
    for k in range(600):
        user, item, ts = f"u{k % 13}", f"i{(k * 7) % 40}", 1e9 + k
        if k % 4 == 0:
            out.append(("review", {"user_id": user, "item_id": item, "ts": ts,
                                   "text": "loved it" if k % 3 else "dull and too long",
                                   **({"rating": 1 + k % 5} if k % 8 == 0 else {})}))
        elif k % 4 == 1:
            out.append(("rating", {"user_id": user, "item_id": item, "ts": ts,
                                   "rating": 1 + k % 5}))
        else:
            out.append(("play", {"user_id": user, "item_id": item, "ts": ts,
                                 "event_id": f"e{k}"}))
    return out + out[100:150]  # redelivered: learned once


def test_learning_many_equals_learning_one_by_one() -> None:
    settings = load_settings()
    one, many = StreamReplica(settings), StreamReplica(settings)
    for kind, value in _events():
        one.learn(kind, value)
    many.learn_many(_events(), chunk=64)
    assert _arrays(one.model.items) == _arrays(many.model.items)
    for user in sorted(one.model.histories):
        assert one.model.recommend(user, 10, fresh=True) == many.model.recommend(
            user, 10, fresh=True)


def _arrays(items: ItemCooccurrence) -> dict[str, object]:
    """The statistics' snapshot arrays, exactly; the similar-user index as the mapping it is
    (a batch adds its users in another order)."""
    with np.load(io.BytesIO(items.to_bytes()), allow_pickle=False) as arrays:
        out: dict[str, object] = {k: arrays[k].tobytes() for k in arrays.files}
        out["user_index"] = json.loads(arrays["user_index"].tobytes())
    return out
