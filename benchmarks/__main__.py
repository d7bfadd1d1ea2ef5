"""``python -m benchmarks`` (``make bench``): every benchmark, results in build/bench/."""

from __future__ import annotations

from benchmarks import bridge, decoders


def main() -> None:
    print("== decoders")
    decoders.main()
    print("\n== bridge")
    bridge.main([])


if __name__ == "__main__":
    main()
