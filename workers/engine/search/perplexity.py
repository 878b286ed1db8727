"""Causal LMs in a goal's search: the search rows as one token stream, and the original's perplexity on it."""

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from workers.engine.evaluation.perplexity import PerplexityProbe, TokenStream, strided_perplexity, token_stream
from workers.engine.evaluation.runners import Runner
from workers.engine.search.plan import PerplexityTokens


@dataclass(frozen=True)
class SearchPerplexity:
    """Causal LMs: the search rows as one token stream, and the original's perplexity on it."""

    stream: TokenStream
    window: int
    original: float
    evaluation_tokens: int  # what the job's own perplexity passes score per model, for the estimates

    @classmethod
    def measure(cls, runner: Runner, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                job_probe: PerplexityProbe, max_tokens: int) -> "SearchPerplexity":
        stream = token_stream(tokenizer, texts, "search", max_tokens)
        original = strided_perplexity(runner, stream, job_probe.window).perplexity
        return cls(stream, job_probe.window, original, sum(len(item.ids) for item in job_probe.streams.values()))

    def tokens(self) -> PerplexityTokens:
        return PerplexityTokens(search=len(self.stream.ids), evaluation=self.evaluation_tokens)
