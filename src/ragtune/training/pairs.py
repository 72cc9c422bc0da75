"""Training pairs from an unlabelled store: LLM-written questions, inverse cloze, and heading → section.

Output rows are `{"query", "positive", "passage_id", "method"}` JSONL, which `ragtune mine` and `ragtune finetune` read
as they are. The file is appended batch by batch and a sidecar `<out>.done` lists the passages finished, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ragtune.corpus.sentences import sentences
from ragtune.errors import InputError
from ragtune.evaluation.user_queries import read_user_queries
from ragtune.faults import kill_point
from ragtune.fsutil import exclusive_lock
from ragtune.generation.base import Generator, Message
from ragtune.jsonl import iter_json_objects
from ragtune.progress import progress_bar
from ragtune.retrieval import Retriever, SearchMode
from ragtune.store import StoreReader, open_store
from ragtune.types import Passage


class PairMethod(str, Enum):
    llm = "llm"
    ict = "ict"
    heading = "heading"


@dataclass(frozen=True)
class QuestionExample:
    """One of the user's real questions and a passage that answers it: shown to the generator as a worked example, so
    its questions take the form the user's own take."""

    question: str
    passage: str


@dataclass(frozen=True)
class PairsConfig:
    """`round_trip=None` means: on for `llm` (generated text can be off-topic), off for the extractive methods.
    `examples`: the user's questions for `llm`'s prompt (each prompt shows `examples_per_prompt` of them, drawn per
    passage); none → one built-in example."""

    method: PairMethod = PairMethod.llm
    per_passage: int = 1
    limit: int | None = None
    round_trip: bool | None = None
    round_trip_k: int = 10
    round_trip_mode: SearchMode = SearchMode.hybrid
    salient_sentences: bool = True
    batch_size: int = 8
    max_new_tokens: int = 48
    min_query_words: int = 3
    max_query_words: int = 40
    seed: int = 13
    examples: tuple[QuestionExample, ...] = ()
    examples_per_prompt: int = 2

    def __post_init__(self) -> None:
        """Settings out of range are one error before any passage is read or a model loaded."""
        if self.examples and self.method is not PairMethod.llm:
            raise InputError(f"example questions are shown to a generator: they go with --method llm, not "
                             f"{self.method.value}")
        if self.examples_per_prompt < 1:
            raise InputError(f"--examples-per-prompt {self.examples_per_prompt}: show at least 1 example")
        if self.per_passage < 1:
            raise InputError("--per-passage must be at least 1")
        if self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size}: give at least 1 passage per batch")
        if self.filtering and self.round_trip_k < 1:
            raise InputError(f"--round-trip-k {self.round_trip_k}: the rank a passage must reach is at least 1")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"--limit {self.limit}: give at least 1 passage, or leave --limit out to use them all")

    @property
    def filtering(self) -> bool:
        return self.method is PairMethod.llm if self.round_trip is None else self.round_trip

    @property
    def asks_questions(self) -> bool:
        """The generator writes questions, unless most of the user's examples are statements (claims, keyword
        queries): then it writes statements in their form, and the cleaner keeps statements."""
        return not self.examples or 2 * sum(is_question(e.question) for e in self.examples) >= len(self.examples)


_QUESTION_WORDS = frozenset(
    "what how why when where which who whom whose is are was were do does did can could should would will may "
    "has have".split()
)


def is_question(text: str) -> bool:
    """A question, with or without its '?' ("how do I stop cavitation"): ends with '?' or opens with a question word."""
    words = text.strip().split()
    return text.rstrip().endswith("?") or (bool(words) and words[0].lower().strip("\"'(") in _QUESTION_WORDS)


@dataclass
class PairsReport:
    method: str
    passages_seen: int = 0
    passages_skipped_done: int = 0
    candidates: int = 0
    rejected_cleaning: int = 0
    duplicates: int = 0
    rejected_round_trip: int = 0
    kept: int = 0
    seconds: float = 0.0
    generation_seconds: float = 0.0

    @property
    def queries_per_second(self) -> float:
        return self.candidates / self.generation_seconds if self.generation_seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "queries_per_second": self.queries_per_second}


@dataclass(frozen=True)
class Candidate:
    query: str
    positive: str
    passage_id: str


# ---- inverse cloze -------------------------------------------------------------------------------------------------

_STOPWORDS = frozenset(
    "the and for are was were with that this from have has had been not but its their these those which also than "
    "into between among during after before our can may more most such all both each other only over under".split()
)


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z0-9-]{2,}", text.lower()) if w not in _STOPWORDS}


def _salience(sentence: str, context: str) -> float:
    """Share of the sentence's content words found in the rest of the passage (and its title): a sentence that
    restates the passage's subject (a conclusion, a summary) scores high, a sentence of detail (a method, a number)
    low. Ties go to the later sentence, where findings usually stand."""
    words = _content_words(sentence)
    return len(words & _content_words(context)) / len(words) if words else 0.0


_SECTION_WORDS = frozenset(
    "background introduction context rationale importance objective objectives aim aims purpose hypothesis question "
    "design setting settings participants patients subjects materials method methods methodology procedures approach "
    "intervention interventions exposure exposures measurements measures main outcome outcomes data sources selection "
    "extraction synthesis results result findings principal discussion conclusion conclusions interpretation "
    "significance relevance summary limitations implications clinical key points and of".split()
)
_CONNECTORS = frozenset({"and", "of"})
_OPENER = (
    r"(?:in (?:conclusion|summary|addition)|taken together|together|collectively|overall|thus|therefore|hence|finally"
    r"|importantly|moreover|furthermore|consequently|however)\s*,\s*"
)
_REPORTING_VERB = (
    r"(?:suggest(?:s|ed)?|indicate[sd]?|show(?:s|ed|n)?|demonstrate[sd]?|reveal(?:s|ed)?|support(?:s|ed)?"
    r"|impl(?:y|ies|ied)|confirm(?:s|ed)?|establish(?:es|ed)?|provide[sd]? evidence|f(?:ind|inds|ound)"
    r"|conclude[sd]?|report(?:s|ed)?|propose[sd]?|identif(?:y|ies|ied)|highlight(?:s|ed)?|observe[sd]?)"
)
_LEAD_IN = re.compile(
    rf"^(?:{_OPENER})?(?:here\s+)?(?:(?:our|these|the|this|such)\s+(?:\w+\s+){{0,2}}?"
    r"(?:results?|findings?|data|observations?|study|studies|analys[ie]s|work|experiments?|evidence)|we)\s+"
    rf"(?:\w+\s+){{0,2}}?{_REPORTING_VERB}\s+that\s+",
    re.IGNORECASE,
)
_DISCOURSE = re.compile(rf"^{_OPENER}", re.IGNORECASE)


def claim_form(sentence: str) -> str | None:
    """A sentence of an abstract as a stand-alone statement, or None where it cannot be one.

    Drops a leading section label ("METHODS AND RESULTS", "Conclusions:"), a discourse opener ("In conclusion,") and
    a reporting frame ("These results suggest that", "We found that"), so what is left states the finding the way a
    claim or a question about it would. None for what is no sentence: a fragment cut by chunking (starts in lower
    case or ends without a full stop) or a run of numbers and dots.
    """
    words = sentence.split()
    if not words or not sentence[0].isupper() and not sentence[0].isdigit() or sentence[-1] not in ".!?\"')]":
        return None
    if sum(any(ch.isalpha() for ch in w) for w in words) < 0.7 * len(words):
        return None
    label = 0
    while label < len(words) - 3:
        word = words[label]
        bare = word.rstrip(":").lower()
        if bare not in _SECTION_WORDS or not (word.isupper() or word.endswith(":")):
            break
        if label == 0 and bare in _CONNECTORS:
            break
        label += 1
        if word.endswith(":"):
            break
    text = " ".join(words[label:])
    text = _LEAD_IN.sub("", text, count=1)
    text = _DISCOURSE.sub("", text, count=1)
    if not text:
        return None
    first = text.split()[0]
    return text[0].upper() + text[1:] if first.isalpha() and first.islower() else text  # not "mRNA" → "MRNA"


def ict_candidates(
    passage: Passage, count: int, rng: random.Random, min_words: int, max_words: int, salient: bool = False
) -> list[Candidate]:
    """Inverse cloze (Lee et al., 2019): a sentence is the query, the passage without it the positive.

    Passages of two or more sentences qualify: a short section (a manual page of two sentences) gives its other
    sentence, after its title, as the positive. Sentences are drawn at random, or with `salient` the ones that best
    restate the rest of the passage (see `_salience`). The query is the sentence in `claim_form`; fragments and runs
    of numbers are never queries.
    """
    parts = sentences(passage.text)
    if len(parts) < 2:
        return []
    claims = [claim_form(s) for s in parts]
    usable = [i for i, c in enumerate(claims) if c is not None and min_words <= len(c.split()) <= max_words]
    rng.shuffle(usable)
    if salient:
        def rest_of(i: int) -> str:
            return " ".join([passage.title, *parts[:i], *parts[i + 1 :]])

        usable.sort(key=lambda i: (_salience(parts[i], rest_of(i)), i), reverse=True)
    found = []
    for index in usable[:count]:
        rest = " ".join(parts[:index] + parts[index + 1 :])
        positive = f"{passage.title} {rest}".strip() if passage.title else rest
        found.append(Candidate(claims[index], positive, passage.id))
    return found


# ---- heading → section ---------------------------------------------------------------------------------------------

_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def heading_candidates(passage: Passage, min_words: int) -> list[Candidate]:
    """Markdown headings inside the passage → the section under them; a document title → its first passage.

    The positive never contains its own heading or title, or the pair would be a string match.
    """
    found = []
    matches = list(_HEADING.finditer(passage.text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(passage.text)
        section = passage.text[match.end() : end].strip()
        heading = match.group(1).strip()
        if len(heading.split()) < min_words and passage.title:
            heading = f"{passage.title}: {heading}"
        if len(section.split()) >= 8 and len(heading.split()) >= min_words:
            found.append(Candidate(heading, section, passage.id))
    if passage.ordinal == 0 and passage.title and len(passage.title.split()) >= min_words:
        body = _HEADING.sub("", passage.text).strip()
        if len(body.split()) >= 8:
            found.append(Candidate(passage.title.strip(), body, passage.id))
    return found


# ---- LLM-written questions ------------------------------------------------------------------------------------------

QUESTION_PROMPT = (
    "Passage: {passage}\n\n"
    "Write one specific question that this passage answers, as a person would type it into a search engine. "
    "Use the passage's own terms. Do not mention 'the passage', 'the study' or 'the text'. Reply with the question only."
)
STATEMENT_PROMPT = (
    "Passage: {passage}\n\n"
    "Write one specific search query that this passage answers, in the same form as the queries before (a statement, "
    "not a question). Use the passage's own terms. Do not mention 'the passage', 'the study' or 'the text'. Reply with "
    "the query only."
)
"""For users whose queries are not questions (claims, keyword queries): their examples show the form."""
QUESTION_EXAMPLE: list[Message] = [  # one worked example: a 135M model follows a shown format far better than a described one
    {
        "role": "user",
        "content": QUESTION_PROMPT.format(
            passage="Centrifugal pumps lose efficiency when cavitation occurs: vapour bubbles form where the inlet "
            "pressure falls below the vapour pressure and collapse against the impeller, pitting its surface."
        ),
    },
    {"role": "assistant", "content": "What causes cavitation damage to a centrifugal pump impeller?"},
]
_KIND = r"(?:question|query|claim)"
_PREAMBLE = re.compile(rf"^\s*(?:[-*\d.)\s]+|{_KIND}\s*\d*\s*[:.-]|q\s*[:.-]|here is (?:a|the|one) {_KIND}\s*:)\s*",
                       re.I)


def question_messages(
    passage: Passage,
    examples: Sequence[QuestionExample] = (),
    max_words: int = 220,
    example_words: int = 60,
    questions: bool = True,
) -> list[Message]:
    """The prompt for one passage: worked examples (the user's, passages cut to `example_words`; or the built-in one),
    then the passage. `questions=False` asks for a statement in the examples' form instead of a question."""
    prompt = QUESTION_PROMPT if questions else STATEMENT_PROMPT
    shown: list[Message] = list(QUESTION_EXAMPLE)
    if examples:
        shown = []
        for example in examples:
            cut = " ".join(example.passage.split()[:example_words])
            shown += [{"role": "user", "content": prompt.format(passage=cut)},
                      {"role": "assistant", "content": example.question}]  # fmt: skip
    text = " ".join(passage.embedding_text().split()[:max_words])
    return [
        {"role": "system", "content": "You write realistic search questions." if questions else
                                      "You write realistic search queries."},  # fmt: skip
        *shown,
        {"role": "user", "content": prompt.format(passage=text)},
    ]


def examples_for(passage: Passage, config: PairsConfig) -> list[QuestionExample]:
    """The user's examples one passage's prompt shows: drawn by the passage's id, so a resumed run asks the same."""
    count = min(config.examples_per_prompt, len(config.examples))
    return random.Random(f"{config.seed}:{passage.id}").sample(list(config.examples), count)


def read_question_examples(path: Path, store: StoreReader, docs: Path | None = None) -> tuple[QuestionExample, ...]:
    """The user's questions (`{"query", "relevant": [...]}` lines, as `quickstart --queries` reads them; relative file
    paths from `docs`, by default the working directory), each with the first passage it names, for the generator's
    prompt."""
    questions = read_user_queries(path, store, docs or Path.cwd())
    texts = store.passage_texts_of(passages[0] for _, passages in questions)
    return tuple(QuestionExample(question, texts[passages[0]]) for question, passages in questions)


def clean_question(raw: str, min_words: int, max_words: int, question: bool = True) -> str | None:
    """One query from a model's reply: first line with content, preamble and quotes stripped, length-bounded; a
    question (up to its '?'), or with `question=False` a statement, its first sentence (a small model runs on past
    the claim it was asked for; a question is off the examples' form)."""
    for line in raw.strip().splitlines():
        line = _PREAMBLE.sub("", line).strip().strip("\"'“”*` ").strip()
        if not line:
            continue
        if question != ("?" in line):
            return None  # a statement or a restated passage where a question was asked for, or the reverse
        line = line[: line.index("?") + 1] if question else (sentences(line) or [line])[0]
        words = line.split()
        if min_words <= len(words) <= max_words and any(c.isalpha() for c in line):
            return line
        return None
    return None


# ---- the driver ----------------------------------------------------------------------------------------------------


def build_pairs(
    store_dir: str | Path,
    out_path: str | Path,
    config: PairsConfig,
    generator: Generator | None = None,
    show_progress: bool | None = None,
) -> PairsReport:
    """Write pairs for the store's passages to `out_path`, skipping passages a previous run finished. A second run
    appending to the same file meanwhile is refused (it would write the same passages' pairs again)."""
    out_path = Path(out_path)
    if config.method is PairMethod.llm and generator is None:
        raise InputError("--method llm needs a generator (--generator smollm2, a model directory or a URL)")
    if out_path.is_dir():
        raise InputError(f"--out '{out_path}' is a folder: give a file's path (for example {out_path / 'pairs.jsonl'})")
    busy = (f"another `ragtune pairs` is appending to '{out_path}'; wait for it to finish (running this command "
            "again then adds only the passages it left), or give another --out")  # fmt: skip
    with exclusive_lock(out_path.parent, busy, lock_file=out_path.name + ".done"):  # the record of finished passages
        return _build_pairs(store_dir, out_path, config, generator, show_progress)


def _build_pairs(
    store_dir: str | Path, out_path: Path, config: PairsConfig, generator: Generator | None, show_progress: bool | None
) -> PairsReport:
    done_path = out_path.with_name(out_path.name + ".done")
    report = PairsReport(config.method.value)
    started = time.perf_counter()
    done = set(_read_lines(done_path))
    seen_queries = {_normal(row["query"]) for row in _read_rows(out_path)}
    rng = random.Random(config.seed)
    with open_store(store_dir) as store:
        total = store.count()
        if total == 0:
            raise InputError(f"store '{store_dir}' holds no passages: index documents first (ragtune index)")
        planned = min(total, config.limit) if config.limit else total
        retriever = Retriever(store) if config.filtering else None
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with (
            progress_bar(show_progress) as progress,
            out_path.open("a", encoding="utf-8") as out,
            done_path.open("a", encoding="utf-8") as finished,
        ):
            task = progress.add_task(f"pairs ({config.method.value})", total=planned, unit="passages")
            for batch in _batches(_sampled(store.iter_passages(), total, planned, config.seed), config.batch_size):
                todo = [p for p in batch if p.id not in done]
                report.passages_skipped_done += len(batch) - len(todo)
                report.passages_seen += len(todo)
                if todo:
                    candidates = _candidates(todo, config, generator, rng, report)
                    kept = _filter(candidates, config, retriever, seen_queries, report)
                    for candidate in kept:
                        row = {"query": candidate.query, "positive": candidate.positive,
                               "passage_id": candidate.passage_id, "method": config.method.value}  # fmt: skip
                        out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    out.flush()
                    kill_point("pairs-batch")
                    finished.write("".join(f"{p.id}\n" for p in todo))  # only after the rows are written
                    finished.flush()
                    report.kept += len(kept)
                rate = report.queries_per_second
                progress.update(task, advance=len(batch), description=(
                    f"pairs ({config.method.value}): {report.kept} kept" + (f", {rate:.1f} queries/s" if rate else "")
                ))  # fmt: skip
    report.seconds = time.perf_counter() - started
    return report


def _sampled(passages: Iterator[Passage], total: int, wanted: int, seed: int) -> Iterator[Passage]:
    """`wanted` of the store's `total` passages drawn at random (the same ones for the same seed, so a rerun resumes
    them), in store order: a `--limit` spreads its budget over the whole corpus, not over its first files."""
    if wanted >= total:
        yield from passages
        return
    chosen = set(random.Random(seed).sample(range(total), wanted))
    yield from (passage for number, passage in enumerate(passages) if number in chosen)


def _batches(passages: Iterator[Passage], size: int) -> Iterator[list[Passage]]:
    batch: list[Passage] = []
    for passage in passages:
        batch.append(passage)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _candidates(
    passages: Sequence[Passage], config: PairsConfig, generator: Generator | None, rng: random.Random, report: PairsReport
) -> list[Candidate]:
    lo, hi = config.min_query_words, config.max_query_words
    if config.method is PairMethod.ict:
        found = [
            c for p in passages
            for c in ict_candidates(p, config.per_passage, random.Random(p.id), lo, hi, config.salient_sentences)
        ]  # fmt: skip
    elif config.method is PairMethod.heading:
        found = [c for p in passages for c in heading_candidates(p, lo)]
    else:
        assert generator is not None
        found = []
        started = time.perf_counter()
        for round_number in range(config.per_passage):
            temperature = 0.0 if round_number == 0 else 0.8  # the first is greedy; more per passage need sampling
            replies = generator.generate_batch(
                [question_messages(p, examples_for(p, config), questions=config.asks_questions) for p in passages],
                config.max_new_tokens,
                temperature=temperature,
            )
            for passage, reply in zip(passages, replies, strict=True):
                question = clean_question(reply, lo, hi, question=config.asks_questions)
                if question is None:
                    report.rejected_cleaning += 1
                else:
                    found.append(Candidate(question, passage.embedding_text(), passage.id))
        report.generation_seconds += time.perf_counter() - started
    report.candidates += len(found)
    return found


def _filter(
    candidates: list[Candidate],
    config: PairsConfig,
    retriever: Retriever | None,
    seen_queries: set[str],
    report: PairsReport,
) -> list[Candidate]:
    unique = []
    for candidate in candidates:
        key = _normal(candidate.query)
        if key in seen_queries:
            report.duplicates += 1
            continue
        seen_queries.add(key)
        unique.append(candidate)
    if retriever is None or not unique:
        return unique
    results = retriever.search_many([c.query for c in unique], k=config.round_trip_k, mode=config.round_trip_mode)
    kept = [c for c, hits in zip(unique, results, strict=True) if any(h.id == c.passage_id for h in hits)]
    report.rejected_round_trip += len(unique) - len(kept)
    return kept


def _normal(query: str) -> str:
    return " ".join(re.findall(r"\w+", query.lower()))


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an earlier run; a last line cut by a crash is dropped from the file (its passage is not in .done)."""
    lines = _read_lines(path)
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):
                raise InputError(f"{path}:{number}: not JSON; this file was not written by ragtune pairs") from None
            path.write_text("".join(f"{kept}\n" for kept in lines[:-1]), encoding="utf-8")
    return rows


def same_document_texts(store: StoreReader, pairs_file: Path) -> dict[str, list[str]]:
    """Query → the texts of every passage of the document its pair came from, for `mine_hard_negatives`'
    `never_negative` (a pair made from one passage must not learn that its sibling passages are wrong answers).
    Rows without a `passage_id` (pairs not made by `ragtune pairs`) are left out."""
    origin = {}
    for _, record in iter_json_objects(pairs_file, "'query' and 'positive'"):
        if isinstance(record.get("passage_id"), str) and isinstance(record.get("query"), str):
            origin[record["query"]] = record["passage_id"]
    siblings = store.sibling_texts(origin.values())
    return {query: siblings.get(passage_id, []) for query, passage_id in origin.items()}
