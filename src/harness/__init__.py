"""harness: replay multi-turn chat datasets against LLM providers and compare the replies.

    from harness import load_dataset, replay, compare, providers
    ds = load_dataset("datasets/demo.jsonl")
    results = replay(ds, providers.resolve(["local-smollm2", "local-gemma3"]))
    compare.side_by_side(results)
"""

from . import compare, providers, results
from .cassettes import Cassette, CassetteError, MissingRecording, read_cassette
from .datasets import Dataset, DatasetError, Turn, from_records, load_dataset
from .messages import Conversation, Message, Reply, Usage
from .providers import PRESETS, Provider, ProviderConfigError, load_providers_file
from .replay import RetryPolicy, replay, replay_async
from .results import TurnResult

__all__ = [
    "PRESETS",
    "Cassette",
    "CassetteError",
    "Conversation",
    "Dataset",
    "DatasetError",
    "Message",
    "MissingRecording",
    "Provider",
    "ProviderConfigError",
    "Reply",
    "RetryPolicy",
    "Turn",
    "TurnResult",
    "Usage",
    "compare",
    "from_records",
    "load_dataset",
    "load_providers_file",
    "providers",
    "read_cassette",
    "replay",
    "replay_async",
    "results",
]
