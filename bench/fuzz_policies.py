"""Fuzz the policy loader with 10,000 generated documents (mutated examples, mutated structures, noise)
and print what happened: documents, valid ones, problems found, exceptions (must be 0), seconds.

    .venv/bin/python bench/fuzz_policies.py [--count 10000] [--seed 1]

Exit status 1 if any input raised or broke the loader's promises (the input is printed)."""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.loader import load_policy_text
from tests.support.policy_docs import check_result, generated_document


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    documents = valid = problems = exceptions = 0
    kinds: Counter[str] = Counter()
    slowest = (0.0, "")
    loading = 0.0
    started = time.perf_counter()
    for _ in range(args.count):
        text = generated_document(rng)
        documents += 1
        t0 = time.perf_counter()
        try:
            result = load_policy_text(text, "fuzz.yaml")
            elapsed = time.perf_counter() - t0
            check_result(text, "fuzz.yaml", result)
        except Exception:  # noqa: BLE001 - counting them is the point
            exceptions += 1
            print("EXCEPTION on input:\n" + text + "\n" + traceback.format_exc(), file=sys.stderr)
            continue
        loading += elapsed
        slowest = max(slowest, (elapsed, text[:60]))
        valid += len(result.policies)
        problems += len(result.problems)
        for problem in result.problems:
            kinds[problem.message.split(":")[0].split("'")[0][:40]] += 1
    seconds = time.perf_counter() - started
    print(f"documents:   {documents}")
    print(f"valid:       {valid} policies")
    print(f"problems:    {problems} ({problems / max(documents, 1):.1f} per document)")
    print(f"exceptions:  {exceptions}")
    print(f"seconds:     {seconds:.1f} total, {loading:.1f} in the loader "
          f"({1000 * loading / max(documents, 1):.1f} ms per document, slowest {1000 * slowest[0]:.0f} ms)")
    print("most frequent problems:")
    for kind, n in kinds.most_common(12):
        print(f"  {n:6d}  {kind}")
    return 1 if exceptions else 0


if __name__ == "__main__":
    sys.exit(main())
