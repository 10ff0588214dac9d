"""``python -m bench.encoders``: what each wire format costs per text delta, encoder alone (no sockets).

Every stream's hot path is one log entry in, one encoded event out
(``StreamEncoder.encode(seq, [kind], [payload])``); this times that call for ssegate's native events, OpenAI chat
chunks, Responses events and the AI SDK's UI message stream, best of five runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from ssegate.core.entries import DELTA, START
from ssegate.http.aisdk.encoder import UIMessageStreamEncoder
from ssegate.http.encoders import NativeEncoder, OpenAIChunkEncoder
from ssegate.http.response import StreamEncoder
from ssegate.http.responses.encoder import ResponsesEncoder, ResponseState

SID = "x" * 22
ENCODERS: dict[str, Callable[[], StreamEncoder]] = {
    "native": lambda: NativeEncoder(SID),
    "openai chat chunks": lambda: OpenAIChunkEncoder(SID, "m", 1),
    "responses": lambda: ResponsesEncoder(ResponseState(SID)),
    "ai sdk ui stream": lambda: UIMessageStreamEncoder("msg-" + SID),
}


def per_delta_us(make: Callable[[], StreamEncoder], n: int) -> float:
    encoder = make()
    encoder.encode(1, [START], [{"stream_id": SID, "model": "m", "echo": {"api": "responses", "created_at": 0}}])
    kinds, payloads = [DELTA], [" token"]
    start = time.perf_counter()
    for seq in range(2, n + 2):
        encoder.encode(seq, kinds, payloads)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200_000, help="deltas per run")
    args = parser.parse_args()
    for name, make in ENCODERS.items():
        best = min(per_delta_us(make, args.n) for _ in range(5))
        print(f"{name:20s} {best:6.2f} µs per text delta")


if __name__ == "__main__":
    main()
