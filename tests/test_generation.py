"""Generator backends, prompt packing, citations and abstention."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from chat_server import ChatServer, running
from ragtune.errors import InputError, RagtuneError
from ragtune.generation import ABSTAIN_MESSAGE, Answerer, load_generator, pack_prompt, packaged_smollm2
from ragtune.generation.citations import StreamingCitationFilter, clean_citations, cited_span
from ragtune.generation.http import OpenAICompatibleGenerator
from ragtune.generation.base import Message
from ragtune.models import inference_precision
from ragtune.retrieval import Retriever
from ragtune.store import StoreReader, index_sources, open_store
from ragtune.types import Hit


class WordGenerator:
    """A fake backend: one token per whitespace-separated word; answers with a scripted text."""

    def __init__(self, reply: str = "", context_window: int = 2000) -> None:
        self.name = "words"
        self.context_window = context_window
        self.reply = reply
        self.seen: list[Sequence[Message]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        return sum(self.count_tokens(m["content"]) + 2 for m in messages)

    def stream(self, messages: Sequence[Message], max_new_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        self.seen.append(messages)
        for word in self.reply.split(" "):
            yield word + " "

    def generate_batch(self, conversations, max_new_tokens, temperature=0.0):  # type: ignore[no-untyped-def]
        return [self.reply for _ in conversations]


def hit(number: int, words: int, title: str = "") -> Hit:
    text = " ".join(f"w{number}x{i}" for i in range(words))
    return Hit(f"d{number}#0", f"d{number}", 1.0 / number, text, title, f"src/{number}.txt")


def test_packing_keeps_the_instruction_and_cuts_the_last_passage() -> None:
    generator = WordGenerator(context_window=200)
    packed = pack_prompt("what is it?", [hit(1, 40), hit(2, 40), hit(3, 400)], generator, max_new_tokens=50)
    assert packed.prompt_tokens <= 150 == packed.budget
    assert [p.number for p in packed.passages][:2] == [1, 2]
    assert packed.passages[-1].truncated and packed.passages[-1].text.endswith("…")
    assert "never outside knowledge" in packed.messages[0]["content"]
    assert packed.messages[1]["content"].rstrip().endswith("Question: what is it?")


def test_packing_refuses_a_question_that_leaves_no_room() -> None:
    with pytest.raises(InputError, match="shorten the question"):
        pack_prompt("word " * 150, [hit(1, 10)], WordGenerator(context_window=200), max_new_tokens=50)


def test_invalid_citations_are_removed_and_counted() -> None:
    cleaned = clean_citations("Pumps spin [1]. Seals wear [2, 7]. Valves [9] close.", passage_count=2)
    assert cleaned.text == "Pumps spin [1]. Seals wear [2]. Valves close."
    assert cleaned.cited == [1, 2] and cleaned.invalid == 2


def test_streaming_filter_matches_the_batch_cleaner_across_piece_boundaries() -> None:
    text = "Pumps spin [1]. Seals wear [2, 7] and [12] valves [3]."
    citation_filter = StreamingCitationFilter(passage_count=3)
    streamed = "".join(citation_filter.feed(text[i : i + 3]) for i in range(0, len(text), 3)) + citation_filter.flush()
    assert streamed == "Pumps spin [1]. Seals wear [2] and  valves [3]."
    assert citation_filter.invalid == 2


def test_cited_span_points_at_the_supporting_sentence() -> None:
    passage = "Gate valves are fully open or closed. Replace the mechanical seal every two years. Bearings hum."
    start, end = cited_span("You should replace the seal every two years [1].", 1, passage)  # type: ignore[misc]
    assert passage[start:end].strip() == "Replace the mechanical seal every two years."


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreReader]:
    from conftest import write_docs

    root = tmp_path_factory.mktemp("answer")
    index_sources(root / "store", [write_docs(root / "docs")], model="minilm", show_progress=False)
    with open_store(root / "store") as opened:
        yield opened


@pytest.mark.integration
def test_answer_cites_given_passages_and_strips_others(store: StoreReader) -> None:
    generator = WordGenerator(reply="Cavitation damages the impeller [1] at low inlet pressure [8].")
    answer = Answerer(Retriever(store), generator, k=3).ask("What damages a pump impeller?")
    assert not answer.abstained
    assert answer.text == "Cavitation damages the impeller [1] at low inlet pressure."
    assert answer.invalid_citations == 1
    assert [c.number for c in answer.citations] == [1]
    assert answer.citations[0].doc_id == answer.passages[0].hit.doc_id
    assert "Passages:" in generator.seen[0][1]["content"]


@pytest.mark.integration
def test_abstains_on_irrelevant_retrieval_without_calling_the_generator(store: StoreReader) -> None:
    generator = WordGenerator(reply="Made up [1].")
    answer = Answerer(Retriever(store), generator, min_relevance=0.5).ask("Who won the 1998 chess olympiad?")
    assert answer.abstained and answer.text == ABSTAIN_MESSAGE and "below --min-relevance" in str(answer.abstain_reason)
    assert generator.seen == []


@pytest.mark.integration
def test_abstains_when_the_model_says_it_cannot_answer(store: StoreReader) -> None:
    generator = WordGenerator(reply="The passages do not contain information about that.")
    answer = Answerer(Retriever(store), generator, min_relevance=0).ask("How do I maintain a centrifugal pump?")
    assert answer.abstained and answer.abstain_reason == "the generator said it cannot answer"


@pytest.mark.integration
def test_streams_end_to_end_with_the_local_smollm2(tmp_path: Path) -> None:
    from conftest import write_docs

    write_docs(tmp_path / "docs", {"pumps.txt": "Cavitation damages the impeller of a centrifugal pump."})
    index_sources(tmp_path / "store", [tmp_path / "docs"], model="minilm", show_progress=False)
    import gguf

    library = (gguf.GGUFReader, gguf.get_tensor_name_map)
    generator = load_generator("smollm2")  # converted with the file parsed once: the library is as it was after
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == library
    with open_store(tmp_path / "store") as opened:
        stream = Answerer(Retriever(opened), generator, k=1, max_new_tokens=24, min_relevance=0).stream(
            "What damages the impeller?"
        )
        assert [p.hit.text for p in stream.passages] == ["Cavitation damages the impeller of a centrifugal pump."]
        pieces = list(stream)
    assert len(pieces) > 1 and stream.answer is not None
    assert stream.answer.timings["completion_tokens"] > 0 and stream.answer.timings["first_token_s"] > 0
    assert stream.answer.abstained or stream.answer.text
    # the first load kept a transformers copy of the GGUF file; the next load reads it and generates the same
    from ragtune.generation.local import dequantized_copy_path

    copy = dequantized_copy_path(packaged_smollm2())
    assert (copy / "config.json").is_file() and not list(copy.parent.glob("*.partial-*"))
    again = load_generator("smollm2")
    assert again.loaded_from == copy and generator.loaded_from == packaged_smollm2()  # type: ignore[attr-defined]
    conversation = [[{"role": "user", "content": "What damages the impeller of a pump?"}]]
    assert again.generate_batch(conversation, 16) == generator.generate_batch(conversation, 16)
    assert again.context_window == generator.context_window and again.name == generator.name
    halved = load_generator("smollm2", precision="bf16")  # what `pairs --method llm` loads where the CPU has bf16
    assert next(halved.model.parameters()).dtype == torch.bfloat16  # type: ignore[attr-defined]
    assert halved.generate_batch(conversation, 16)[0]
    auto = load_generator("smollm2", precision="auto")  # bf16 where this device has it, as encoding chooses
    bf16_here = inference_precision(device=auto.device) == "bf16"  # type: ignore[attr-defined]
    expected = torch.bfloat16 if bf16_here else torch.float32
    assert next(auto.model.parameters()).dtype == expected  # type: ignore[attr-defined]
    with pytest.raises(RagtuneError, match="precision 'fp16' is not one of"):
        load_generator("smollm2", precision="fp16")


def test_a_model_that_is_not_a_causal_lm_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(RagtuneError, match="not a causal language model"):
        load_generator(str(tiny_model_dir))


def test_a_missing_generator_is_named(tmp_path: Path) -> None:
    with pytest.raises(RagtuneError, match="is not 'smollm2', a model directory"):
        load_generator(str(tmp_path / "nowhere"))


def test_llama_cpp_missing_says_how_to_install() -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        with pytest.raises(RagtuneError, match=r"pip install 'ragtune\[llamacpp\]'"):
            load_generator("llama-cpp:/tmp/x.gguf")
    else:
        pytest.skip("llama-cpp-python is installed here")


def echo(body: dict) -> str:
    return "You asked: " + body["messages"][-1]["content"]


def test_http_backend_streams_and_lists_its_model() -> None:
    with running(ChatServer(echo)) as server:
        generator = load_generator(server.url)
        assert generator.name.endswith("(test-model)")
        pieces = list(generator.stream([{"role": "user", "content": "pump seals"}], max_new_tokens=20))
    assert len(pieces) == 4 and "".join(pieces) == "You asked: pump seals"
    assert server.requests[0]["stream"] is True and server.requests[0]["model"] == "test-model"


@pytest.mark.parametrize("status", [429, 500])
def test_http_backend_retries_transient_errors(status: int) -> None:
    with running(ChatServer(echo, failures=[status, status])) as server:
        generator = OpenAICompatibleGenerator(server.url, model="m", backoff=0.01)
        assert generator.generate_batch([[{"role": "user", "content": "hi"}]], 10) == ["You asked: hi"]
        assert "".join(generator.stream([{"role": "user", "content": "yo"}], 10)) == "You asked: yo"
    assert len(server.requests) == 4


def test_http_backend_gives_up_with_a_clear_error() -> None:
    with running(ChatServer(echo, failures=[503] * 5)) as server:
        generator = OpenAICompatibleGenerator(server.url, model="m", retries=2, backoff=0.01)
        with pytest.raises(RagtuneError, match="HTTP 503.*after 3 attempts"):
            generator.complete([{"role": "user", "content": "hi"}], 10)


def test_http_backend_times_out() -> None:
    with running(ChatServer(echo, failures=["slow", "slow"])) as server:
        generator = OpenAICompatibleGenerator(server.url, model="m", timeout=0.3, retries=1, backoff=0.01)
        with pytest.raises(RagtuneError, match="no answer within 0.3 s"):
            generator.complete([{"role": "user", "content": "hi"}], 10)


def test_http_backend_unreachable_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RagtuneError, match="cannot connect"):
        OpenAICompatibleGenerator(f"http://127.0.0.1:{port}/v1", retries=1, backoff=0.01)


@pytest.mark.integration
def test_answer_streams_through_the_http_backend(store: StoreReader) -> None:
    with running(ChatServer(lambda body: "Replace the mechanical seal every two years [1] [4].")) as server:
        generator = load_generator(server.url, context_window=2048)
        stream = Answerer(Retriever(store), generator, k=2, min_relevance=0).stream("How often to replace the seal?")
        text = "".join(stream)
    assert text.strip() == "Replace the mechanical seal every two years [1] ."
    assert stream.answer is not None and stream.answer.invalid_citations == 1
    assert stream.answer.citations[0].span is not None


@pytest.mark.integration
def test_ask_cli_json_and_errors(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from conftest import write_docs
    from ragtune.cli import app

    write_docs(tmp_path / "docs")
    index_sources(tmp_path / "store", [tmp_path / "docs"], model="minilm", show_progress=False)
    runner = CliRunner()
    with running(ChatServer(lambda body: "Replace the seal every two years [1].")) as server:
        result = runner.invoke(app, ["ask", "How often is the seal replaced?", "--store", str(tmp_path / "store"),
                                     "--generator", server.url, "--json", "--k", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["answer"] == "Replace the seal every two years [1]." and len(answer["hits"]) == 2
    assert answer["citations"][0]["passage_id"] == answer["hits"][0]["id"]
    evidence = runner.invoke(app, ["ask", "How often is the seal replaced?", "--store", str(tmp_path / "store"),
                                   "--json", "--max-sentences", "1"])  # fmt: skip
    assert evidence.exit_code == 0, evidence.output  # the bundled generator is the default: evidence, nothing loaded
    quoted = json.loads(evidence.stdout)
    assert quoted["answer"].startswith("Replace the mechanical seal every two years") and len(quoted["citations"]) == 1
    assert quoted["citations"][0]["span_text"] in quoted["answer"] and "generation_s" not in quoted["timings"]
    missing = runner.invoke(app, ["ask", "q", "--store", str(tmp_path / "store"), "--generator", str(tmp_path / "no")])
    assert missing.exit_code == 2 and "is not 'smollm2', a model directory" in missing.stderr


def test_sentence_spans_slice_back_to_each_sentence() -> None:
    from ragtune.corpus.sentences import sentence_spans, sentences

    text = "  Dose was 2.5 mg (p < 0.05). Effects, e.g. nausea, were rare!\nA second line follows.  "
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == ["Dose was 2.5 mg (p < 0.05).", "Effects, e.g. nausea, were rare!",
                                             "A second line follows."]  # fmt: skip
    assert sentences("One line\nwrapped. Next.") == ["One line wrapped.", "Next."]
    assert sentences("too low.\n\n## Maintenance\n\nReplace it") == ["too low.", "## Maintenance", "Replace it"]


@pytest.mark.integration
def test_evidence_answer_quotes_and_cites_retrieved_sentences_only(store: StoreReader) -> None:
    answerer = Answerer(Retriever(store), None, k=3, answer="extractive", max_sentences=2)
    answer = answerer.ask("What damages the impeller of a pump?")
    assert not answer.abstained and 1 <= len(answer.citations) <= 2
    texts = {p.number: p.hit.text for p in answer.passages}
    for citation in answer.citations:
        start, end = citation.span
        quoted = texts[citation.number][start:end]
        assert f"{' '.join(quoted.split())} [{citation.number}]" in answer.text  # the exact sentence, then its [n]
        assert citation.passage_id == answer.passages[citation.number - 1].hit.id
    assert "Cavitation damages the impeller" in answer.text
    assert answer.to_json()["citations"][0]["span_text"]
    assert "evidence_s" in answer.timings


@pytest.mark.integration
def test_evidence_answer_abstains_when_no_sentence_clears_the_floor(store: StoreReader) -> None:
    answerer = Answerer(Retriever(store), None, min_relevance=0, answer="extractive", min_sentence_score=0.99)
    answer = answerer.ask("How do I maintain a centrifugal pump?")
    assert answer.abstained and answer.citations == [] and "no sentence" in str(answer.abstain_reason)
    with pytest.raises(InputError, match="needs a generator"):
        Answerer(Retriever(store), None, answer="generate")


def test_evidence_drops_near_duplicates_headings_and_keeps_reading_order() -> None:
    from ragtune.generation.evidence import select_evidence

    class Embedder:  # one direction per sentence; the query points between the first two
        table = {"Alpha is the first.": [1.0, 0.0, 0.0], "Alpha is the first again.": [1.0, 0.0, 0.0],
                 "Beta is the second.": [0.6, 0.8, 0.0], "Gamma is the third.": [0.0, 0.0, 1.0]}  # fmt: skip

        def encode(self, texts):  # type: ignore[no-untyped-def]
            return np.array([self.table[t] for t in texts], dtype=np.float32)  # a heading here: KeyError

        def encode_query(self, text):  # type: ignore[no-untyped-def]
            return np.array([0.9, 0.436, 0.0], dtype=np.float32)

    first = Hit(id="p1", doc_id="d1", text="# The first heading\n\nBeta is the second. Alpha is the first.", score=1.0,
                title="", source="a")  # fmt: skip
    second = Hit(id="p2", doc_id="d2", text="Alpha is the first again. Gamma is the third.", score=0.5, title="",
                 source="b")  # fmt: skip
    chosen = select_evidence("q", [first, second], Embedder(), max_sentences=3, min_score=0.3)  # type: ignore[arg-type]
    # the duplicate and Gamma (below the floor) are out; shown by passage, then in reading order
    assert [(e.number, e.text) for e in chosen] == [(1, "Beta is the second."), (1, "Alpha is the first.")]


@pytest.mark.integration
def test_each_generated_sentence_is_checked_against_the_passages_it_cites(store: StoreReader) -> None:
    reply = ("Cavitation damages the impeller when the inlet pressure drops [1]. "
             "The moon orbits the earth every month [1].")  # fmt: skip
    answer = Answerer(Retriever(store), WordGenerator(reply=reply), k=3, min_relevance=0).ask(
        "What damages a pump impeller?")
    assert [answer.text[a:b] for a, b in (s.span for s in answer.support)] == [
        "Cavitation damages the impeller when the inlet pressure drops [1].",
        "The moon orbits the earth every month [1]."]  # fmt: skip
    first, second = answer.support
    assert first.supported and not second.supported and first.score > second.score
    assert first.passage == 1 and first.cited == (1,)
    passage = answer.passages[0].hit.text
    assert passage[first.evidence_span[0] : first.evidence_span[1]].startswith("Cavitation damages the impeller")
    data = answer.to_json()
    assert [s["supported"] for s in data["sentences"]] == [True, False] and data["supported_share"] == 0.5


@pytest.mark.integration
def test_an_answer_with_no_supported_sentence_falls_back_to_the_evidence(store: StoreReader) -> None:
    generator = WordGenerator(reply="Bananas are yellow and rich in potassium [1].")
    answer = Answerer(Retriever(store), generator, k=3, min_relevance=0).ask("What damages a pump impeller?")
    assert answer.note and "showing the passages' evidence instead" in answer.note
    assert answer.replaced is not None and answer.replaced.text.startswith("Bananas")
    assert not answer.replaced.support[0].supported
    assert "Cavitation damages the impeller" in answer.text and answer.citations  # quoted, cited evidence
    assert answer.to_json()["replaced"]["answer"].startswith("Bananas")


@pytest.mark.integration
def test_both_shows_the_evidence_under_the_generated_answer(store: StoreReader) -> None:
    generator = WordGenerator(reply="Cavitation damages the impeller when the inlet pressure drops [1].")
    answer = Answerer(Retriever(store), generator, k=3, min_relevance=0, answer="both").ask(
        "What damages a pump impeller?")
    assert answer.text.startswith("Cavitation damages the impeller when the inlet pressure drops")
    assert answer.evidence is not None and "[1]" in answer.evidence.text and answer.evidence.citations
    assert answer.to_json()["evidence"]["answer"] == answer.evidence.text
    with pytest.raises(InputError, match="needs a generator"):
        Answerer(Retriever(store), None, answer="both")


def test_answer_sentences_keep_their_citation_markers() -> None:
    from ragtune.generation.support import answer_sentence_spans

    text = "Seals wear out [1]. Bake bread. [3] Tomatoes need sun [4][2]. A 0.5 mm gap, e.g. the seal's, is fine."
    assert [text[a:b] for a, b in answer_sentence_spans(text)] == [
        "Seals wear out [1].", "Bake bread. [3]", "Tomatoes need sun [4][2].", "A 0.5 mm gap, e.g. the seal's, is fine."]  # fmt: skip


class PassageGenerator(WordGenerator):
    """Replies from the one passage it is shown: a verdict, then that passage's first sentence with a citation number
    of its own making; says it cannot answer when the passage mentions `refuse_on`."""

    def __init__(self, refuse_on: str = "") -> None:
        super().__init__()
        self.refuse_on = refuse_on
        self.streams_closed_early = 0

    def reply_to(self, messages: Sequence[Message]) -> str:
        self.seen.append(messages)
        shown = messages[1]["content"].split("\n\nQuestion:")[0]
        passage = shown.split("\n")[-1]
        if self.refuse_on and self.refuse_on in shown:
            return "The passage does not contain the answer."
        return f"Yes. {passage.split('. ')[0].rstrip('.')} [7]. Then more words."

    def stream(self, messages: Sequence[Message], max_new_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        words = self.reply_to(messages).split(" ")
        read = 0
        try:
            for word in words:
                read += 1
                yield word + " "
        finally:
            self.streams_closed_early += read < len(words)

    def generate_batch(self, conversations, max_new_tokens, temperature=0.0):  # type: ignore[no-untyped-def]
        return [self.reply_to(c) for c in conversations]


def test_per_passage_sentence_is_cut_and_cited_by_construction() -> None:
    from ragtune.generation.per_passage import cited_sentence

    assert cited_sentence("Yes. The seal wears out [2]. More.", 1) == "Yes, the seal wears out [1]."
    assert cited_sentence("No. DNA repair fails. More.", 2) == "No, DNA repair fails [2]."
    assert cited_sentence("Seals wear out after two years of use. More.", 3) == "Seals wear out after two years of use [3]."
    assert cited_sentence("The passage does not mention seals.", 1) is None
    assert cited_sentence("  ", 1) is None
    from ragtune.generation import default_prompting

    assert default_prompting(None) == default_prompting("SmolLM2") == "per-passage"  # the bundled 135M model
    assert default_prompting("http://localhost:8000/v1") == "together"


def test_generation_can_stop_once_the_kept_sentence_is_written() -> None:
    from ragtune.generation.per_passage import cited_sentence, kept_sentence_is_written

    replies = [
        "Yes. The seal wears out [2]. More words follow here.",
        "Seals wear out after two years of use. Then more.",
        "No, it does not.   Because the pump runs dry. And so on.",
        "The value is 3.5 mg per day for adults. Next comes more.",
        "Yes, no; no; no; no; no",
        "The passage does not mention seals. But it does mention pumps.",
    ]
    for reply in replies:
        words = reply.split(" ")
        prefixes = [" ".join(words[:n]) + " " for n in range(1, len(words) + 1)]
        stops = [prefix for prefix in prefixes if kept_sentence_is_written(prefix)]
        for prefix in stops:  # whatever comes after cannot change the kept sentence
            assert cited_sentence(prefix, 1) == cited_sentence(reply, 1), (prefix, reply)
        if reply.count(". ") > (1 if reply.startswith(("Yes.", "No.")) else 0):
            assert stops and len(stops[0].split()) < len(words)  # and it stops before the reply ends
    assert not kept_sentence_is_written("Yes. The seal wears out")  # a bare verdict waits for its reason


@pytest.mark.integration
def test_per_passage_answers_cite_the_passage_each_sentence_was_written_from(store: StoreReader) -> None:
    generator = PassageGenerator()
    answerer = Answerer(Retriever(store), generator, k=5, min_relevance=0, max_sentences=2, prompting="per-passage")
    stream = answerer.stream("What damages a pump impeller?")
    streamed = "".join(stream)
    answer = stream.answer
    assert answer is not None and not answer.abstained
    assert len(generator.seen) == 2 and all(m[1]["content"].count("\n[") == 1 for m in generator.seen)  # one each
    assert [p.number for p in answer.passages] == [1, 2]
    sentences = [s.strip() for s in answer.text.split("Yes, ") if s.strip()]
    for number, (sentence, passage) in enumerate(zip(sentences, answer.passages, strict=True), start=1):
        assert sentence.endswith(f" [{number}].")  # written from passage n, cited n
        assert sentence[1:-5] in passage.hit.text and answer.citations[number - 1].span is not None and sentence[0].lower() == sentence[0]
    assert [c.number for c in answer.citations] == [1, 2] and answer.invalid_citations == 0
    assert streamed == answer.text and answer.timings["completion_tokens"] > 0
    assert answer.support and all(s.cited for s in answer.support)
    assert generator.streams_closed_early == 2  # each reply read until "Then", the sentence after the kept one
    generator.seen.clear()
    batched = answerer.ask_many(["What damages a pump impeller?"])[0]
    assert batched.text == answer.text and len(generator.seen) == 2


@pytest.mark.integration
def test_per_passage_drops_refusals_and_abstains_when_every_passage_refuses(store: StoreReader) -> None:
    question = "What damages a pump impeller?"
    refusing = PassageGenerator(refuse_on="mechanical seal")
    answer = Answerer(Retriever(store), refusing, k=3, min_relevance=0, prompting="per-passage").ask(question)
    refused = [p.number for p in answer.passages if "mechanical seal" in p.hit.text]
    assert len(refused) == 1 and len(answer.passages) == 3
    assert "mechanical seal" not in answer.text and f"[{refused[0]}]" not in answer.text
    assert [c.number for c in answer.citations] == [p.number for p in answer.passages if p.number != refused[0]]
    everything = PassageGenerator(refuse_on=" ")
    answer = Answerer(Retriever(store), everything, k=3, min_relevance=0, prompting="per-passage").ask(question)
    assert answer.abstained and answer.text == ABSTAIN_MESSAGE
    with pytest.raises(InputError, match="--prompting sideways is not one of"):
        Answerer(Retriever(store), everything, prompting="sideways")


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory: pytest.TempPathFactory, minilm) -> Path:  # type: ignore[no-untyped-def]
    """A randomly initialised two-layer Llama with MiniLM's tokenizer: generation mechanics without a real model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm.path))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024, eos_token_id=None,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def test_closing_a_local_stream_stops_generation(tiny_causal_lm: Path) -> None:
    from ragtune.generation.local import TransformersGenerator

    generator = TransformersGenerator(tiny_causal_lm, device="cpu")
    steps: list[int] = []
    generator.model.register_forward_hook(lambda *_: steps.append(1))
    conversation = [{"role": "user", "content": "What damages the impeller of a pump?"}]
    stream = generator.stream(conversation, max_new_tokens=400)
    read = [next(stream) for _ in range(3)]
    stream.close()  # the worker is joined here
    after_close = len(steps)
    assert read and after_close < 40  # stopped at the next token, not at 400
    time.sleep(0.2)
    assert len(steps) == after_close  # and nothing runs on behind the reader's back
    steps.clear()
    assert len("".join(generator.stream(conversation, max_new_tokens=60)).split()) > 20 and len(steps) == 60


def test_closing_an_answer_stream_stops_its_generation(tiny_causal_lm: Path, store: StoreReader) -> None:
    """What the server does when an /ask/stream client goes away mid-answer."""
    from ragtune.generation.local import TransformersGenerator

    generator = TransformersGenerator(tiny_causal_lm, device="cpu")
    steps: list[int] = []
    generator.model.register_forward_hook(lambda *_: steps.append(1))
    answerer = Answerer(Retriever(store), generator, k=2, min_relevance=0, max_new_tokens=400, prompting="together")
    stream = answerer.stream("What damages a pump impeller?")
    assert next(iter(stream))
    stream.close()
    stopped_at = len(steps)
    time.sleep(0.2)
    assert stopped_at < 40 and len(steps) == stopped_at and stream.answer is None
