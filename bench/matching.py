"""Throughput of the matching engine at several queue sizes: searches that wait, and searches that match.

Run as `python bench/matching.py [--json] [--sizes 100,10000,100000] [--ops N] [--repeat R]`.

The waiting population is realistic but mutually incompatible, so the queue really holds N users: men
wanting women, from 60 countries of uneven popularity, about half of them with a country filter. "Searches"
are seekers that find nobody and join the queue (then leave again, untimed, to keep its size): mostly more
such men, plus women and "u" users whose country filter names countries no waiting man is from. "Matches"
are women (wanting men or anyone, some with a country filter) who each take one waiting man; the men are
put back, untimed, so the size stays N. The women come from a pool of returning sessions, so recent-partner
histories are real and consulted. The clock advances 10 microseconds per search.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vchat.matching import MatchingEngine, Seeker

_COUNTRY_CODES = (
    "US IN BR ID DE GB FR TR MX PH RU IT ES PL VN EG NG PK TH CA AR CO UA JP KR "
    "ZA NL SA MY RO BE SE CZ PT GR HU AT CH IL DK FI NO IE NZ CL PE MA DZ BD KE "
    "IR IQ UZ KZ AU SG AE TW LK"
)
COUNTRIES = tuple(_COUNTRY_CODES.split())  # by rough popularity
NOWHERE = ("XA", "XB", "XC", "XD")  # countries no waiting user is from
TICK = 1e-5


def pick_country(rng: random.Random) -> str:
    """A country, the first ones in the list much more often (roughly Zipf)."""
    return COUNTRIES[min(int(rng.paretovariate(1.0)) - 1, len(COUNTRIES) - 1)]


def pick_filter(rng: random.Random, with_filter: float) -> frozenset[str]:
    """An empty country filter, or (with probability `with_filter`) one to three countries."""
    if rng.random() >= with_filter:
        return frozenset()
    return frozenset(pick_country(rng) for _ in range(rng.randint(1, 3)))


def waiting_man(rng: random.Random, sid: str) -> Seeker:
    """A man wanting a woman: the waiting population, none compatible with another."""
    return Seeker(sid, "m", pick_country(rng), "f", pick_filter(rng, 0.5))


def lonely_seeker(rng: random.Random, sid: str) -> Seeker:
    """Someone who finds nobody in the queue and nobody among the other lonely seekers."""
    r = rng.random()
    if r < 0.5:
        return waiting_man(rng, sid)
    nowhere = frozenset(rng.sample(NOWHERE, rng.randint(1, 2)))
    if r < 0.8:
        return Seeker(sid, "f", pick_country(rng), "m", nowhere)
    return Seeker(sid, "u", pick_country(rng), "any", nowhere)


def matching_woman(rng: random.Random, sid: str) -> Seeker:
    """A woman who will find a man: most without a filter, some accepting a few popular countries."""
    want = "m" if rng.random() < 0.7 else "any"
    countries = frozenset(rng.sample(COUNTRIES[:8], rng.randint(2, 4))) if rng.random() < 0.2 else frozenset()
    return Seeker(sid, "f", pick_country(rng), want, countries)


def filled_engine(size: int, rng: random.Random) -> tuple[MatchingEngine, dict[str, Seeker], float]:
    """An engine with `size` waiting men, their requests by session id, and the clock after filling it."""
    engine = MatchingEngine()
    men = {f"m{i}": waiting_man(rng, f"m{i}") for i in range(size)}
    now = 0.0
    for seeker in men.values():
        now += TICK
        assert engine.search(seeker, now) is None
    assert len(engine) == size
    return engine, men, now


def bench_searches(size: int, ops: int, repeat: int, seed: int) -> float:
    """Best rate of searches that join the queue, with the queue at about `size`."""
    rng = random.Random(seed)
    engine, _, now = filled_engine(size, rng)
    batch = max(10, min(1000, size // 10))
    seekers = [lonely_seeker(rng, f"l{i}") for i in range(batch * 50)]
    best = 0.0
    perf = time.perf_counter
    search = engine.search
    cancel = engine.cancel
    for _ in range(repeat):
        elapsed = 0.0
        done = 0
        while done < ops:
            start = rng.randrange(0, len(seekers) - batch)
            chunk = seekers[start : start + batch]
            t0 = perf()
            for seeker in chunk:
                now += TICK
                if search(seeker, now) is not None:
                    raise AssertionError("a lonely seeker found someone")
            elapsed += perf() - t0
            for seeker in chunk:
                cancel(seeker.session_id)
            done += batch
        best = max(best, done / elapsed)
    assert len(engine) == size
    return best


def bench_matches(size: int, ops: int, repeat: int, seed: int) -> float:
    """Best rate of searches that take a waiting user, refilling the queue to keep it at `size`."""
    rng = random.Random(seed)
    engine, men, now = filled_engine(size, rng)
    batch = max(10, min(1000, size // 10))
    women = [matching_woman(rng, f"w{i}") for i in range(5000)]
    best = 0.0
    perf = time.perf_counter
    search = engine.search
    cancel = engine.cancel
    for _ in range(repeat):
        elapsed = 0.0
        matched = 0
        done = 0
        while done < ops:
            start = rng.randrange(0, len(women) - batch)
            chunk = women[start : start + batch]
            taken = []
            t0 = perf()
            for seeker in chunk:
                now += TICK
                pair = search(seeker, now)
                if pair is None:
                    cancel(seeker.session_id)  # rare: no man for her filter right now
                else:
                    taken.append(pair.waiting)
            elapsed += perf() - t0
            matched += len(taken)
            done += batch
            for sid in taken:
                now += TICK
                if search(men[sid], now) is not None:
                    raise AssertionError("a returning man found someone")
        best = max(best, matched / elapsed)
    assert len(engine) == size
    return best


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table, or JSON with --json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--sizes", default="100,10000,100000", help="comma-separated queue sizes")
    parser.add_argument("--ops", type=int, default=200_000, help="searches per repetition")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions; the best one is reported")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        results.append(
            {
                "queue_size": size,
                "searches_per_s": round(bench_searches(size, args.ops, args.repeat, args.seed)),
                "matches_per_s": round(bench_matches(size, args.ops, args.repeat, args.seed)),
            }
        )
        gc.collect()
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "results": results}, indent=2))
    else:
        print(f"{'queue size':>10}  {'searches/s':>12}  {'matches/s':>12}")
        for row in results:
            print(f"{row['queue_size']:>10,}  {row['searches_per_s']:>12,}  {row['matches_per_s']:>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
