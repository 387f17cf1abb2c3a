"""Print the engine's scan rate (messages per CPU second, one process) over a corpus for the
source tree this script is run in (cwd): scripts/bench --baseline runs it in two trees."""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.getcwd())

from filters.engine import Engine
from gateway.archives.read import iter_messages


def main() -> None:
    corpus, repeat = sys.argv[1], int(sys.argv[2])
    raws = [item.raw for item in iter_messages([corpus])]
    engine = Engine.from_path(None)
    engine.scan(raws[0])
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for raw in raws:
            engine.scan(raw).to_dict()
        best = min(best, time.process_time() - start)
    print(f"{len(raws) / best:.3f}")


if __name__ == "__main__":
    main()
