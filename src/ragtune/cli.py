"""The `ragtune` command: parse arguments, call the library, render the result. No logic lives here."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ragtune.corpus import SUPPORTED_SUFFIXES, ChunkingConfig, not_read_text
from ragtune.errors import RagtuneError, missing_dependency
from ragtune.models import DEVICE_ENV, inference_device
from ragtune.ray_encoding import RayConfig
from ragtune.paths import (
    CACHE_LIMIT_ENV, MODEL_COPIES_LIMIT_ENV, embedding_cache_path, model_copies_limit_bytes, model_copies_root,
    parse_size,
)  # fmt: skip
from ragtune.generation.support import DEFAULT_SUPPORT_THRESHOLD
from ragtune.query_batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_SEARCHES, DEFAULT_WINDOW_SECONDS
from ragtune.query_quantization import query_precision as query_precision_choice, require_nncf
from ragtune.retrieval import Fusion, Reranker, Retriever, SearchMode, SearchSettings, parse_filters
from ragtune.store import index_sources, is_postgres_address, open_store
from ragtune.fsutil import is_disk_full, path_problem
from ragtune.training.checkpoints import ResumePoint

app = typer.Typer(
    help="ragtune: index a domain corpus, retrieve (dense, BM25, hybrid), and fine-tune retrieval for it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

StoreOption = Annotated[
    str, typer.Option("--store", help="Store directory, or postgresql://USER@HOST:PORT/DB[?store=NAME].")
]
RerankOption = Annotated[
    Path | None, typer.Option("--rerank", help="Cross-encoder directory to re-rank the top candidates with.")
]
RerankDepthOption = Annotated[
    int,
    typer.Option(help="Candidates the cross-encoder re-scores: deeper finds more, each costs one forward pass."),
]
RayOption = Annotated[
    str | None,
    typer.Option("--ray", help="Encode on a Ray cluster: local (start one here), auto (the one `ray start` made) "
                 "or HOST:PORT. Needs pip install 'ragtune[ray]'."),
]  # fmt: skip
RayWorkersOption = Annotated[int, typer.Option(help="Encoding actors on the Ray cluster (one model each).")]
RayGpusOption = Annotated[float, typer.Option(help="GPUs per encoding actor (0: CPU actors).")]
DeviceOption = Annotated[
    str | None, typer.Option(help="cpu, cuda or auto (default: $RAGTUNE_DEVICE, else cuda where torch sees a GPU).")
]


def _encoding_settings(ray: str | None, workers: int, gpus: float, device: str | None) -> RayConfig | None:
    """The Ray cluster to encode on (None: here), after checking the device; the device holds for this process."""
    if device is not None:
        os.environ[DEVICE_ENV] = inference_device(device)
    if ray is None:
        return None
    config = RayConfig(ray, workers, gpus)
    config.check()
    return config


def _print_workers(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        err.print(f"ray worker {row['worker']}: {row['texts']} passages in {row['seconds']}s "
                  f"({row['texts_per_second']}/s)", highlight=False)  # fmt: skip


RerankWeightOption = Annotated[
    float,
    typer.Option(help="Cross-encoder share of the re-ranked score (1: its order alone; below: mixed with retrieval's)."),
]


def user_errors(command: F) -> F:
    """Report `RagtuneError`, a path given that cannot be used (`fsutil.path_problem`), a full disk (and Ctrl-C) as one
    line on stderr with exit code 2, never a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RagtuneError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]: the store is unchanged; run the same command again to finish")
            raise typer.Exit(130) from None
        except Exception as exc:
            problem = path_problem(exc)
            if problem is None and not is_disk_full(exc):
                raise
            if problem is None:
                problem = f"disk full ({exc}); free space on that disk and run the same command again"
            err.print(f"[bold red]error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@app.command()
@user_errors
def index(
    sources: Annotated[list[Path], typer.Argument(help="Files or folders (.txt .md .html .pdf, BEIR .jsonl).")],
    store: StoreOption,
    model: Annotated[str | None, typer.Option(help="Embedding model: short name (minilm) or local directory.")] = None,
    chunk_tokens: Annotated[
        int | None, typer.Option(help="Max tokens per passage (default: the model's window).")
    ] = None,
    overlap: Annotated[int | None, typer.Option(help="Tokens shared by consecutive passages (default 32).")] = None,
    progress: Annotated[bool | None, typer.Option(help="Show progress bars (default: when on a terminal).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    ray: RayOption = None,
    ray_workers: RayWorkersOption = 2,
    ray_gpus_per_worker: RayGpusOption = 0.0,
    device: DeviceOption = None,
) -> None:
    """Build or incrementally update a store from documents."""
    chunking = None
    if chunk_tokens is not None or overlap is not None:
        chunking = ChunkingConfig(chunk_tokens=chunk_tokens, overlap_tokens=32 if overlap is None else overlap)
    cluster = _encoding_settings(ray, ray_workers, ray_gpus_per_worker, device)
    report = index_sources(store, sources, model=model, chunking=chunking, show_progress=progress, ray=cluster)
    if as_json:
        print_json(report.to_json())
        return
    _print_workers(report.workers)
    for key, reason in report.skipped.items():
        err.print(f"[yellow]skipped[/] {key}: {reason}", highlight=False)
    if report.files_not_read:
        err.print(f"[yellow]not read[/]: {not_read_text(report.files_not_read)} (ragtune reads "
                  f"{', '.join(sorted(SUPPORTED_SUFFIXES))})", highlight=False)  # fmt: skip
    out.print(
        f"[bold]{store}[/]: {report.passages_total} passages ({report.dense_kind} dense index) · "
        f"files: {report.files_added} added, {report.files_modified} modified, {report.files_deleted} deleted, "
        f"{report.files_unchanged} unchanged, {len(report.skipped)} skipped"
        + (f", {report.files_migrated} moved to path keys" if report.files_migrated else "")
        + " · "
        f"passages +{report.passages_added} −{report.passages_removed} · "
        f"encoded {report.encoded} (cache {report.cached}) · {report.seconds:.1f}s",
        highlight=False,
    )


@app.command()
@user_errors
def search(
    query: Annotated[str, typer.Argument(help="What to search for.")],
    store: StoreOption,
    mode: Annotated[
        SearchMode | None,
        typer.Option(help="dense (meaning), bm25 (keywords) or hybrid (both); default: the store's recorded setting."),
    ] = None,
    k: Annotated[int, typer.Option("--k", help="Number of results.")] = 10,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", help="KEY=VALUE; source=PREFIX matches a path prefix. Repeatable."),
    ] = None,
    fusion: Annotated[Fusion | None, typer.Option(help="Hybrid fusion: rrf or convex (default: recorded).")] = None,
    rrf_k: Annotated[int | None, typer.Option(help="RRF constant k (default: recorded, else 60).")] = None,
    alpha: Annotated[
        float | None, typer.Option(help="Convex fusion: weight of dense, BM25 gets 1-alpha (default: recorded).")
    ] = None,
    rerank: RerankOption = None,
    rerank_depth: RerankDepthOption = 20,
    rerank_weight: RerankWeightOption = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as a JSON list.")] = False,
) -> None:
    """Search a store."""
    parsed = parse_filters(filters or [])
    reranker = Reranker(rerank, weight=rerank_weight) if rerank else None
    with open_store(store) as opened:
        retriever = Retriever(
            opened, fusion=fusion, rrf_k=rrf_k, alpha=alpha, reranker=reranker, rerank_depth=rerank_depth
        )
        hits = retriever.search(query, k=k, mode=mode, filters=parsed)
        settings = retriever.settings if mode is None else replace(retriever.settings, mode=mode)
    if as_json:
        print_json([hit.to_json() for hit in hits])
        return
    if not hits:
        out.print("no results")
        return
    table = Table(title=f"{settings.label} · {query}", show_lines=True)
    for column in ("#", "score", "passage", "title / source", "text"):
        table.add_column(column, overflow="fold")
    for rank, hit in enumerate(hits, start=1):
        snippet = hit.text if len(hit.text) <= 300 else hit.text[:300] + "…"
        table.add_row(str(rank), f"{hit.score:.4f}", hit.id, f"{hit.title}\n[dim]{hit.source}[/]", snippet)
    out.print(table)


GeneratorOption = Annotated[
    str | None,
    typer.Option(
        "--generator",
        help="smollm2 (default, local), a causal-LM directory, a .gguf file, llama-cpp:FILE.gguf, or an "
        "OpenAI-compatible URL (http://host:port/v1; key from $RAGTUNE_GENERATOR_API_KEY).",
    ),
]
GeneratorModelOption = Annotated[
    str | None, typer.Option("--generator-model", help="Model name on the server (default: the first it lists).")
]


@app.command()
@user_errors
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer from the store.")],
    store: StoreOption,
    mode: Annotated[
        SearchMode | None, typer.Option(help="Retrieval mode (default: the store's recorded setting).")
    ] = None,
    k: Annotated[int, typer.Option("--k", help="Passages retrieved (packed into the prompt best first).")] = 5,
    rerank: RerankOption = None,
    rerank_depth: RerankDepthOption = 20,
    rerank_weight: RerankWeightOption = 1.0,
    generator: GeneratorOption = None,
    generator_model: GeneratorModelOption = None,
    generator_timeout: Annotated[float, typer.Option(help="Seconds to wait on an HTTP generator.")] = 60.0,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 256,
    min_relevance: Annotated[
        float,
        typer.Option(help="Abstain when the best passage's cosine similarity to the question is below this (0: never)."),
    ] = 0.2,
    system_prompt: Annotated[
        Path | None, typer.Option(help="File with a system prompt to use instead of the default ({abstain} allowed).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print answer, citations and hits as JSON.")] = False,
    answer_mode: Annotated[
        str | None,
        typer.Option(
            "--answer",
            help="extractive: the passages' best sentences, quoted and cited, no generator loaded; generate: the "
            "generator writes the answer, each sentence checked against the passages it cites; both: the generated "
            "answer, then the evidence. Default: extractive with the bundled small generator, else generate.",
        ),
    ] = None,
    max_sentences: Annotated[
        int, typer.Option(help="Most sentences in an extractive answer; passages written from with --prompting "
                          "per-passage.")
    ] = 3,
    prompting: Annotated[
        str | None,
        typer.Option(
            help="together: all passages in one prompt, the generator cites them; per-passage: one sentence written "
            "from each of the top --max-sentences passages alone, cited by construction. Default: per-passage with "
            "the bundled small generator, else together."
        ),
    ] = None,
    support_threshold: Annotated[
        float, typer.Option(help="A generated sentence whose best passage sentence scores below this (cosine) is "
                            "marked unsupported; with none supported the evidence answer is shown instead.")
    ] = DEFAULT_SUPPORT_THRESHOLD,
) -> None:
    """Answer a question from the store's passages, citing them as [n]; streams the answer as it is written."""
    from ragtune.generation import Answerer, default_answer_mode, default_prompting, load_generator

    template = _read_text_option(system_prompt, "--system-prompt") if system_prompt else None
    reranker = Reranker(rerank, weight=rerank_weight) if rerank else None
    answer_mode = answer_mode or default_answer_mode(generator)
    backend = None
    if answer_mode != "extractive":
        backend = load_generator(generator, model=generator_model, timeout=generator_timeout)
    with open_store(store) as opened:
        retriever = Retriever(opened, reranker=reranker, rerank_depth=rerank_depth)
        answerer = Answerer(
            retriever, backend, k=k, mode=mode, min_relevance=min_relevance, max_new_tokens=max_new_tokens,
            system_prompt=template, answer=answer_mode, max_sentences=max_sentences,
            support_threshold=support_threshold, prompting=prompting or default_prompting(generator),
        )  # fmt: skip
        stream = answerer.stream(question)
        for piece in stream:
            if not as_json:
                out.print(piece, end="", highlight=False, markup=False)
        answer = stream.answer
    assert answer is not None
    if as_json:
        print_json(answer.to_json())
        return
    out.print()
    _print_support(answer)
    if answer.abstained:
        err.print(f"[yellow]abstained:[/] {answer.abstain_reason}", highlight=False)
    for citation in {c.number: c for c in answer.citations}.values():
        out.print(f"[bold][{citation.number}][/] {citation.passage_id} · {citation.title} · [dim]{citation.source}[/]",
                  highlight=False)  # fmt: skip
    if answer.invalid_citations:
        err.print(f"[yellow]{answer.invalid_citations} citation(s) of passages not given were removed[/]")
    if "tokens_per_s" in answer.timings:
        t = answer.timings
        err.print(
            f"[dim]retrieval {t['retrieval_s'] * 1000:.0f} ms · first token {t['first_token_s']:.2f} s · "
            f"{t['completion_tokens']:.0f} tokens at {t['tokens_per_s']:.1f}/s · {backend.name if backend else ''}[/]",
            highlight=False,
        )


def _print_support(answer) -> None:  # type: ignore[no-untyped-def]
    """After a streamed generated answer: which sentences the passages do not support (dimmed), or the evidence that
    replaced it, or the evidence shown beside it (`--answer both`)."""
    shown = answer.replaced or answer
    unsupported = [s for s in shown.support if not s.supported]
    for sentence in unsupported:
        text = shown.text[sentence.span[0] : sentence.span[1]]
        err.print(f"[dim]unsupported (best passage sentence {sentence.score:.2f}): {text}[/]", highlight=False,
                  markup=True)  # fmt: skip
    if shown.support and not unsupported:
        err.print(f"[dim]every sentence supported by the passages it cites ({len(shown.support)})[/]")
    if answer.note:
        err.print(f"[yellow]{answer.note}:[/]", highlight=False)
        out.print(answer.text, highlight=False, markup=False)
    if answer.evidence is not None:
        out.print("[bold]Evidence:[/]")
        out.print(answer.evidence.text, highlight=False, markup=False)


def _read_text_option(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RagtuneError(f"{option} {path}: cannot read it as UTF-8 text ({exc})") from exc


@app.command()
@user_errors
def info(
    store: StoreOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Counts, model and sizes of a store (after a quick integrity check)."""
    from ragtune.store.integrity import check_store

    if not is_postgres_address(store):  # PostgreSQL checks its own pages; the embedded engine's files are checked here
        checked = check_store(store, quick=True)
        if not checked.healthy:
            raise RagtuneError(
                f"store '{store}' is damaged: " + "; ".join(checked.problems) + f" · run: ragtune check --store {store} --repair"
            )
    with open_store(store) as opened:
        data = opened.info()
    if as_json:
        print_json(data)
        return
    table = Table(title=str(store), show_header=False)
    table.add_row("model", f"{data['model']['name']} (revision {data['model']['revision']})")
    table.add_row("dimension", str(data["dimension"]))
    table.add_row("chunking", ", ".join(f"{k}={v}" for k, v in data["chunking"].items()))
    table.add_row("backends", ", ".join(f"{k}={v}" for k, v in data["backends"].items()))
    for name, count in data["counts"].items():
        table.add_row(name, f"{count:,}")
    for name, size in data["size_bytes"].items():
        table.add_row(f"size: {name}", f"{size / 1e6:,.1f} MB")
    search_settings = data["search"]
    chosen = SearchSettings.from_json(search_settings, str(store)).label if search_settings else "defaults (hybrid rrf)"
    why = f" — {search_settings['reason']}" if search_settings.get("reason") else ""
    table.add_row("search", chosen + why)
    table.add_row("generation", data["generation"])
    table.add_row("updated", data["updated"])
    out.print(table)


@app.command()
@user_errors
def check(
    store: StoreOption,
    repair: Annotated[bool, typer.Option(help="Rebuild what is damaged from what is intact.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Verify a store's files (manifest, passage table, vectors, indexes); exit 1 if it is damaged."""
    from ragtune.store.integrity import check_store, repair_store

    if is_postgres_address(store):
        raise RagtuneError(
            "ragtune check verifies an embedded store's files; a PostgreSQL store is kept consistent by the database "
            "(each source is written in one transaction): use the server's own tools (amcheck, pg_dump) to check it"
        )
    report = repair_store(store) if repair else check_store(store)
    if as_json:
        print_json(report.to_json())
    else:
        for action in report.actions:
            out.print(f"[green]repaired:[/] {action}", highlight=False)
        for problem in report.problems:
            out.print(f"[red]problem:[/] {problem}", highlight=False)
        for leftover in report.leftovers:
            out.print(f"[yellow]leftover:[/] {leftover} (an interrupted run's; --repair removes it)", highlight=False)
        verdict = "healthy" if report.healthy else f"damaged: run ragtune check --store {store} --repair"
        out.print(f"[bold]{store}[/] ({report.generation or 'no readable manifest'}): {verdict}", highlight=False)
    if not report.healthy:
        raise typer.Exit(1)


@app.command("eval")
@user_errors
def eval_command(
    dataset: Annotated[Path, typer.Argument(help="BEIR-layout folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")],
    split: Annotated[str, typer.Option(help="Which qrels/<split>.tsv to score.")] = "test",
    models: Annotated[
        list[str] | None, typer.Option("--model", help="Embedding model(s); the first system is the baseline.")
    ] = None,
    modes: Annotated[list[SearchMode] | None, typer.Option("--mode", help="Retrieval mode(s).")] = None,
    k: Annotated[int, typer.Option("--k", help="Documents retrieved per query.")] = 100,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write metrics.json, report.md, plots, runs.")] = None,
    cache_dir: Annotated[
        str | None,
        typer.Option(help="Where evaluation stores are kept and reused: a folder, or a postgresql:// address."),
    ] = None,
    rerank: RerankOption = None,
    rerank_depth: RerankDepthOption = 20,
    rerank_weight: RerankWeightOption = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics.json to stdout.")] = False,
) -> None:
    """Score (model × mode) systems on a BEIR dataset, compare them with paired significance tests."""
    from ragtune.evaluation import evaluate_systems, load_beir, write_report
    from ragtune.evaluation.report import evaluation_json

    if k < 1:
        raise RagtuneError(f"--k must be at least 1 (got {k})")
    data = load_beir(dataset, split)
    for warning in data.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    evaluation = evaluate_systems(
        data,
        models=models or ["minilm"],
        modes=modes or [SearchMode.bm25, SearchMode.dense, SearchMode.hybrid],
        k=k,
        cache_dir=cache_dir,
        reranker=rerank,
        rerank_depth=rerank_depth,
        rerank_weight=rerank_weight,
    )
    result = write_report(evaluation, out_dir) if out_dir else evaluation_json(evaluation)
    if as_json:
        print_json(result)
        return
    metrics = result["settings"]["metrics"]
    table = Table(title=f"{data.name} · {split} · {evaluation.queries} queries")
    table.add_column("system", no_wrap=True)
    for metric in metrics:
        table.add_column(metric, justify="right")
    baseline = evaluation.systems[0]
    for system in evaluation.systems:
        cells = []
        for index, metric in enumerate(metrics):
            cell = f"{system.metrics[metric]:.4f}"
            if system is not baseline:
                c = evaluation.comparisons[system.label][index]
                colour = "green" if c.delta > 0 else "red" if c.delta < 0 else "white"
                cell += f" [{colour}]{c.delta:+.4f}{'*' if c.significant else ''}[/]"
            cells.append(cell)
        table.add_row(system.label, *cells)
    out.print(table)
    out.print(f"Δ against {baseline.label}; * = p < 0.05, two-sided paired t-test", highlight=False)
    if out_dir:
        out.print(f"report: {out_dir / 'report.md'}", highlight=False)


def _corpus_for_mining(corpus: Path | None, store: str | None, beir_corpus: dict[str, str] | None) -> list[str]:
    if corpus is not None:
        from ragtune.evaluation import load_beir
        from ragtune.training.examples import beir_corpus as read_corpus

        split = next(iter(sorted(p.stem for p in (corpus / "qrels").glob("*.tsv"))), "test")
        return list(read_corpus(load_beir(corpus, split)).values())
    if store is not None:
        with open_store(store) as opened:
            return list(opened.passage_texts())
    if beir_corpus is not None:
        return list(beir_corpus.values())
    raise RagtuneError("mining needs a corpus: pass --store DIR or --corpus BEIR_DIR (or a BEIR folder as TRAIN)")


@app.command()
@user_errors
def pairs(
    store: StoreOption,
    out_file: Annotated[Path, typer.Option("--out", help="JSONL to append pairs to (resumes if it exists).")],
    method: Annotated[str, typer.Option(help="llm (generated questions), ict (inverse cloze) or heading.")] = "llm",
    per_passage: Annotated[int, typer.Option(help="Queries per passage.")] = 1,
    limit: Annotated[
        int | None, typer.Option(help="Use N passages drawn at random (by --seed) from the whole store.")
    ] = None,
    generator: GeneratorOption = None,
    generator_model: GeneratorModelOption = None,
    round_trip: Annotated[
        bool | None,
        typer.Option(help="Keep a query only if its passage ranks in the top --round-trip-k (default: on for llm)."),
    ] = None,
    round_trip_k: Annotated[int, typer.Option(help="Rank the source passage must reach.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Passages per generation batch.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed (the --limit sample, ict sentence choice).")] = 13,
    ict_sentences: Annotated[
        str, typer.Option(help="ict: 'salient' sentences that restate the rest of the passage, or 'random' ones.")
    ] = "salient",
    examples: Annotated[
        Path | None,
        typer.Option(help="llm: a few of your users' real questions, JSONL {\"query\", \"relevant\": [document or "
                     "passage ids, or file paths]} as quickstart --queries reads them; the generator is shown them, "
                     "with a passage each, as worked examples."),
    ] = None,
    examples_per_prompt: Annotated[int, typer.Option(help="llm: how many of --examples each prompt shows.")] = 2,
    progress: Annotated[bool | None, typer.Option(help="Show progress (default: when on a terminal).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Create training pairs from a store's passages, without labels (feeds `ragtune mine` and `finetune`)."""
    from ragtune.generation import load_generator
    from ragtune.training.pairs import PairMethod, PairsConfig, build_pairs, read_question_examples

    try:
        chosen = PairMethod(method)
    except ValueError:
        raise RagtuneError(f"--method {method}: choose llm, ict or heading") from None
    if ict_sentences not in ("random", "salient"):
        raise RagtuneError(f"--ict-sentences {ict_sentences}: choose random or salient")
    with open_store(store) as opened:  # a missing or broken store, or a bad examples file, fails before a model loads
        shown = read_question_examples(examples, opened) if examples is not None else ()
    config = PairsConfig(
        method=chosen, per_passage=per_passage, limit=limit, round_trip=round_trip, round_trip_k=round_trip_k,
        batch_size=batch_size, seed=seed, salient_sentences=ict_sentences == "salient", examples=shown,
        examples_per_prompt=examples_per_prompt,
    )  # fmt: skip
    backend = None
    if chosen is PairMethod.llm:  # bf16 where the device has it: questions 2.2x faster, near enough the same ones
        backend = load_generator(generator, model=generator_model, precision="auto")
    report = build_pairs(store, out_file, config, backend, show_progress=progress)
    if as_json:
        print_json(report.to_json())
        return
    filtered = f", {report.rejected_round_trip} failed the round trip" if config.filtering else ""
    out.print(
        f"{out_file}: +{report.kept} pairs ({chosen.value}) from {report.passages_seen} passages "
        f"({report.passages_skipped_done} already done) · {report.candidates} candidates, "
        f"{report.rejected_cleaning} unusable, {report.duplicates} duplicates{filtered} · {report.seconds:.1f}s"
        + (f" · {report.queries_per_second:.1f} queries/s" if report.queries_per_second else ""),
        highlight=False,
    )


@app.command()
@user_errors
def mine(
    train: Annotated[Path, typer.Argument(help="Training JSONL ({query, positive}) or a BEIR folder.")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the JSONL with negatives.")],
    split: Annotated[str, typer.Option(help="BEIR split to take pairs from.")] = "train",
    store: Annotated[
        str | None, typer.Option(help="Mine negatives from this store's passages (a directory or postgresql://…).")
    ] = None,
    corpus: Annotated[Path | None, typer.Option(help="Mine from this BEIR folder's corpus.")] = None,
    model: Annotated[str, typer.Option(help="Model that scores candidates.")] = "minilm",
    negatives: Annotated[int, typer.Option(help="Negatives per (query, positive).")] = 3,
    range_min: Annotated[int, typer.Option(help="Skip this many top candidates (likely unlabelled positives).")] = 3,
    range_max: Annotated[int, typer.Option(help="Consider candidates up to this rank.")] = 50,
    relative_margin: Annotated[
        float, typer.Option(help="Keep a negative only if its score ≤ the positive's − |positive's| × margin.")
    ] = 0.05,
    source: Annotated[str, typer.Option(help="Candidates from dense, bm25 or both.")] = "dense",
    teacher: Annotated[
        str | None, typer.Option(help="hybrid: negatives from the BM25 + dense ranking's top 20, each example scored "
                                 "by that ranking (for `finetune --loss distill` / `mnrl-distill`); cross-encoder: the "
                                 "same negatives scored by --reranker (for `--loss margin-mse` / `mnrl-margin-mse`).")
    ] = None,
    reranker: Annotated[
        Path | None, typer.Option(help="With --teacher cross-encoder: the trained reranker that scores the pairs.")
    ] = None,
    teacher_dense_weight: Annotated[
        float, typer.Option(help="The hybrid ranking's dense weight (convex fusion with BM25).")
    ] = 0.5,
    ray: RayOption = None,
    ray_workers: RayWorkersOption = 2,
    ray_gpus_per_worker: RayGpusOption = 0.0,
    device: DeviceOption = None,
) -> None:
    """Add hard negatives to training pairs (and, with --teacher, a teacher's scores)."""
    from ragtune.models import resolve_model
    from ragtune.training.examples import load_examples, write_training_jsonl
    from ragtune.training.mining import (
        CandidateSource,
        MiningConfig,
        mine_hard_negatives,
    )

    cluster = _encoding_settings(ray, ray_workers, ray_gpus_per_worker, device)
    if teacher is not None and cluster is not None:
        raise RagtuneError("--ray does not work with --teacher yet: the teacher encodes here; drop --ray")
    if teacher is None and reranker is not None:
        raise RagtuneError("--reranker scores pairs for --teacher cross-encoder: add that, or drop --reranker")
    examples, beir = load_examples(train, split)
    texts = _corpus_for_mining(corpus, store, beir)
    never_negative = None
    if store is not None and train.is_file():  # pairs made from this store's passages: siblings are no negatives
        from ragtune.training.pairs import same_document_texts

        with open_store(store) as opened:
            never_negative = same_document_texts(opened, train)
    elif store is not None:  # a BEIR split: no passage of a document judged relevant is a negative
        from ragtune.evaluation import load_beir
        from ragtune.training.examples import judged_document_texts

        with open_store(store) as opened:
            never_negative = judged_document_texts(opened, load_beir(train, split))
    if teacher is not None:
        _mine_with_teacher(teacher, reranker, examples, texts, model, negatives, teacher_dense_weight, never_negative,
                           out_file)  # fmt: skip
        return
    config = MiningConfig(negatives, range_min, range_max, relative_margin, CandidateSource(source))
    mined, report = mine_hard_negatives(
        examples, texts, resolve_model(model), config, never_negative=never_negative, ray=cluster
    )
    write_training_jsonl(out_file, mined)
    out.print(
        f"{report.examples} examples, {report.with_negatives} with negatives "
        f"({report.negatives_per_example:.2f} each) · score: positive mean {report.positive_score_mean:.3f}, "
        f"negative mean {report.negative_score_mean:.3f}, max {report.negative_score_max:.3f} · "
        f"{report.random_fills} random negatives filled in where no hard one passed the margin · wrote {out_file}",
        highlight=False,
    )


def _mine_with_teacher(  # type: ignore[no-untyped-def]
    teacher: str, reranker: Path | None, examples, texts, model: str, negatives: int, dense_weight: float,
    never_negative, out_file: Path,
) -> None:
    from ragtune.models import resolve_model
    from ragtune.training.examples import write_training_jsonl
    from ragtune.training.teacher import TeacherConfig, teacher_scored_examples

    config = TeacherConfig(kind=teacher, cross_encoder=None if reranker is None else str(reranker),
                           negatives=negatives, dense_weight=dense_weight)  # fmt: skip
    scored, report = teacher_scored_examples(examples, texts, resolve_model(model), config, never_negative)
    write_training_jsonl(out_file, scored)
    out.print(
        f"{report.examples} examples with {negatives} negatives each, scored by the {teacher} teacher · mean score: "
        f"positive {report.positive_score_mean:.3f}, negative {report.negative_score_mean:.3f} · the positive "
        f"scores first in {report.positive_first_share:.0%} · wrote {out_file}",
        highlight=False,
    )


@app.command()
@user_errors
def finetune(
    train: Annotated[Path, typer.Argument(help="Training JSONL ({query, positive, negatives?}) or a BEIR folder.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the tuned model.")],
    base: Annotated[str, typer.Option(help="Model to start from: short name or directory.")] = "minilm",
    split: Annotated[str, typer.Option(help="BEIR split to train on (when TRAIN is a BEIR folder).")] = "train",
    loss: Annotated[
        str, typer.Option(help="mnrl, cached-mnrl, gist, triplet, contrastive, or distill / mnrl-distill "
                          "(learn a teacher's scores: `ragtune mine --teacher hybrid`), margin-mse / mnrl-margin-mse "
                          "(a reranker's: `ragtune mine --teacher cross-encoder --reranker DIR`).")
    ] = "mnrl",
    epochs: Annotated[float, typer.Option(help="Training epochs.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Batch size (in-batch negatives grow with it).")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 5e-5,
    negatives: Annotated[int, typer.Option(help="Hard negatives used per example (from the file).")] = 1,
    matryoshka: Annotated[str | None, typer.Option(help="Comma-separated dimensions, e.g. 384,256,128,64.")] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Softmax temperature of mnrl, cached-mnrl, gist (default: 0.05, 0.05, 0.01).")
    ] = None,
    max_seq_length: Annotated[int, typer.Option(help="Tokens per text during training.")] = 256,
    eval_dataset: Annotated[Path | None, typer.Option("--eval", help="BEIR folder for the held-out evaluation.")] = None,
    eval_split: Annotated[str, typer.Option(help="Split of --eval to use.")] = "dev",
    dev_fraction: Annotated[float, typer.Option(help="Without --eval: share of training queries held out.")] = 0.1,
    merge_base: Annotated[
        float | None, typer.Option(help="Also write OUT-merged: weights (1-a)·tuned + a·base.")
    ] = None,
    budget_minutes: Annotated[float | None, typer.Option(help="Stop training after this many minutes.")] = None,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast (about 1.9× faster where the CPU has AVX512-BF16).")] = False,
    low_memory: Annotated[
        bool, typer.Option(help="No attention dropout, gradient checkpointing, freed memory returned each step: "
                           "the quickstart's training.")
    ] = False,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all cores).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Fine-tune the embedding model (resumes from the last checkpoint when re-run)."""
    from ragtune.training.examples import beir_corpus, duplicate_stats, load_examples
    from ragtune.training.finetune import (
        LOW_MEMORY_TRAINING,
        DevSet,
        FinetuneConfig,
        merge_with_base,
    )
    from ragtune.training.finetune import (
        finetune as run_finetune,
    )

    dims = tuple(int(d) for d in matryoshka.split(",")) if matryoshka else ()
    config = FinetuneConfig(
        base=base, loss=loss, epochs=epochs, batch_size=batch_size, learning_rate=lr, max_negatives=negatives,
        matryoshka_dims=dims, max_seq_length=max_seq_length, dev_fraction=dev_fraction, threads=threads, seed=seed,
        temperature=temperature, time_budget_minutes=budget_minutes, bf16=bf16,
        **(LOW_MEMORY_TRAINING if low_memory else {}),
    )  # fmt: skip
    config.check()  # a wrong setting is one error before the examples are read
    examples, corpus = load_examples(train, split)
    stats = duplicate_stats(examples)
    err.print(
        f"{stats['examples']} examples, {stats['unique_queries']} distinct queries · duplicates: "
        f"{stats['duplicate_pairs']} repeated (query, positive) pairs, {stats['queries_with_several_positives']} queries "
        f"with several positives, {stats['positives_shared_by_queries']} positives shared by several queries",
        highlight=False,
    )
    dev = None
    if eval_dataset is not None:
        from ragtune.evaluation import load_beir

        held_out = load_beir(eval_dataset, eval_split)
        dev = DevSet(
            queries=held_out.queries, corpus=beir_corpus(held_out),
            relevant={q: {d for d, g in judged.items() if g > 0} for q, judged in held_out.qrels.items()},
            description=f"{held_out.name} {eval_split}: {len(held_out.queries)} queries",
        )  # fmt: skip
    result = run_finetune(
        examples, out_dir, config, dev=dev, distractor_pool=list(corpus.values()) if corpus else (),
        show_progress=err.is_terminal,
    )  # fmt: skip
    _say_resume(result.resume)
    out.print(
        f"tuned model: {out_dir} · {result.steps} steps in {result.train_seconds:.0f}s · dev nDCG@10 "
        f"{result.base_dev.get('ndcg@10', float('nan')):.4f} → {result.tuned_dev.get('ndcg@10', float('nan')):.4f}",
        highlight=False,
    )
    if merge_base is not None:
        merged = merge_with_base(out_dir, base, merge_base, out_dir.with_name(out_dir.name + "-merged"))
        out.print(f"merged model (alpha={merge_base}): {merged}", highlight=False)


def _say_resume(resume: ResumePoint) -> None:
    for discarded in resume.discarded:
        err.print(f"[yellow]warning:[/] removed incomplete checkpoint {discarded}", highlight=False, soft_wrap=True)
    if resume.checkpoint is not None:
        err.print(f"resumed from {resume.checkpoint}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def tsdae(
    store: StoreOption,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the adapted model.")],
    base: Annotated[str, typer.Option(help="Model to start from: short name or directory.")] = "minilm",
    max_sentences: Annotated[int, typer.Option(help="Sentences drawn from the store (0: all).")] = 20_000,
    deletion_ratio: Annotated[float, typer.Option(help="Share of words deleted from each input.")] = 0.6,
    epochs: Annotated[float, typer.Option(help="Training epochs.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Sentences per step.")] = 8,
    lr: Annotated[float, typer.Option(help="Learning rate (constant).")] = 3e-5,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast (faster where the CPU has it).")] = False,
    budget_minutes: Annotated[float | None, typer.Option(help="Stop training after this many minutes.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all cores).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Adapt the embedding model to the store's sentences without labels (TSDAE); use it as finetune's --base."""
    from ragtune.training.tsdae import TsdaeConfig, store_sentences, tsdae_adapt

    config = TsdaeConfig(
        base=base, max_sentences=max_sentences or None, deletion_ratio=deletion_ratio, epochs=epochs,
        batch_size=batch_size, learning_rate=lr, seed=seed, threads=threads, bf16=bf16,
        time_budget_minutes=budget_minutes,
    )  # fmt: skip
    config.check()
    texts = store_sentences(store, config)
    result = tsdae_adapt(texts, out_dir, config, show_progress=err.is_terminal)
    out.print(
        f"adapted model: {out_dir} · {result.sentences} sentences · {result.steps} steps in "
        f"{result.train_seconds:.0f}s · reconstruction loss {result.first_loss or float('nan'):.3f} → "
        f"{result.last_loss or float('nan'):.3f}",
        highlight=False,
    )


@app.command()
@user_errors
def reindex(
    store: StoreOption,
    model: Annotated[str, typer.Option(help="New embedding model: short name or directory.")],
    progress: Annotated[bool | None, typer.Option(help="Show progress bars.")] = None,
    ray: RayOption = None,
    ray_workers: RayWorkersOption = 2,
    ray_gpus_per_worker: RayGpusOption = 0.0,
    device: DeviceOption = None,
) -> None:
    """Re-embed a store with another model and switch to it atomically."""
    from ragtune.store import reindex_store

    cluster = _encoding_settings(ray, ray_workers, ray_gpus_per_worker, device)
    report = reindex_store(store, model, show_progress=progress, ray=cluster)
    _print_workers(report.workers)
    out.print(
        f"{store}: {report.passages_total} passages re-embedded with {model} "
        f"(encoded {report.encoded}, cache {report.cached}) in {report.seconds:.1f}s",
        highlight=False,
    )


@app.command()
@user_errors
def serve(
    store: StoreOption,
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless you mean otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    rerank: RerankOption = None,
    rerank_depth: RerankDepthOption = 20,
    rerank_weight: RerankWeightOption = 1.0,
    generator: Annotated[
        str,
        typer.Option(
            "--generator",
            help="Generator for /ask (as for `ragtune ask`), or 'none' to serve search only.",
        ),
    ] = "smollm2",
    api_key_env: Annotated[
        str | None, typer.Option(help="Require the X-API-Key header to equal this environment variable.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (each loads the models; one store).")] = 1,
    batch_window_ms: Annotated[
        float, typer.Option(help="Wait this long for concurrent queries to encode together (0: no wait).")
    ] = 1000 * DEFAULT_WINDOW_SECONDS,
    max_batch: Annotated[int, typer.Option(help="Most queries encoded in one forward pass.")] = DEFAULT_MAX_BATCH,
    max_asks: Annotated[
        int, typer.Option(help="Answers written at once; beyond it /ask gets 503 with Retry-After.")
    ] = 4,
    max_searches: Annotated[
        int, typer.Option(help="Searches worked on at once (0: no limit); the rest wait their turn, in order.")
    ] = DEFAULT_MAX_SEARCHES,
    access_log: Annotated[bool, typer.Option(help="One JSON line per request on stderr.")] = False,
    query_precision: Annotated[
        str | None,
        typer.Option(help="int8, bf16 or fp32 for encoding queries (int8: ≈1.5× faster queries where bf16 is slow, "
                     "needs ragtune[int8]); default: $RAGTUNE_QUERY_PRECISION, else as the documents."),
    ] = None,
) -> None:
    """Serve the HTTP API (/search, /ask, /ask/stream, /info, /health, /metrics, /openapi.json) and a web page at /."""
    try:
        from ragtune.server import ServeSettings, serve_forever
    except ImportError as exc:
        raise missing_dependency(exc.name or "fastapi", "'ragtune[server]'  (ragtune serve)") from exc

    if api_key_env and not os.environ.get(api_key_env):
        raise RagtuneError(f"--api-key-env {api_key_env}: that environment variable is not set")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] binding to {host}: reachable from other machines", highlight=False)
    spec = None if generator.strip().lower() == "none" else generator
    if rerank is not None:
        Reranker(rerank, weight=rerank_weight)  # refuse a wrong path or weight before binding the port
    if query_precision_choice(query_precision) == "int8":
        require_nncf()  # before binding the port
    settings = ServeSettings(
        store, api_key_env=api_key_env, generator=spec, reranker=str(rerank) if rerank else None,
        rerank_depth=rerank_depth, rerank_weight=rerank_weight, batch_window_ms=batch_window_ms, max_batch=max_batch,
        max_asks=max_asks, max_searches=max_searches, query_precision=query_precision,
    )  # fmt: skip
    err.print(f"serving {store} on http://{host}:{port}/ with {workers} worker(s) (Ctrl-C to stop)", highlight=False)
    serve_forever(settings, host, port, workers, access_log)


@app.command("train-reranker")
@user_errors
def train_reranker_command(
    train: Annotated[Path, typer.Argument(help="Training JSONL with negatives (ragtune mine) or a BEIR folder.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the cross-encoder.")],
    base: Annotated[str, typer.Option(help="Checkpoint to start from (short name or directory).")] = "minilm",
    split: Annotated[str, typer.Option(help="BEIR split (when TRAIN is a BEIR folder).")] = "train",
    loss: Annotated[
        str, typer.Option(help="mnrl (softmax over positive + negatives), bce (pointwise) or listwise (LambdaLoss).")
    ] = "mnrl",
    negatives: Annotated[int, typer.Option(help="Hard negatives per query used in training.")] = 7,
    in_batch_negatives: Annotated[int, typer.Option(help="mnrl: other queries' positives added as negatives.")] = 1,
    epochs: Annotated[float, typer.Option(help="Training epochs.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Queries per step (mnrl, listwise) or pairs per step (bce).")] = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 7e-5,
    max_length: Annotated[int, typer.Option(help="Tokens of query + passage.")] = 256,
    budget_minutes: Annotated[float | None, typer.Option(help="Stop training after this many minutes.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads.")] = None,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast (≈ 1.9× faster on CPUs with AVX512-BF16/AMX).")] = False,
) -> None:
    """Train a cross-encoder reranker on the domain (resumes from the last checkpoint when re-run)."""
    from ragtune.training.examples import load_examples
    from ragtune.training.reranker import RerankerConfig, train_reranker

    examples, _ = load_examples(train, split)
    config = RerankerConfig(
        base=base, loss=loss, negatives=negatives, in_batch_negatives=in_batch_negatives, epochs=epochs,
        batch_size=batch_size, learning_rate=lr, max_length=max_length, time_budget_minutes=budget_minutes,
        threads=threads, bf16=bf16,
    )  # fmt: skip
    result = train_reranker(examples, out_dir, config, show_progress=err.is_terminal)
    _say_resume(result.resume)
    out.print(
        f"reranker: {out_dir} · {result.steps} steps in {result.train_seconds:.0f}s · dev nDCG@10 "
        f"{result.dev_before.get('ndcg@10', float('nan')):.4f} → {result.dev_after.get('ndcg@10', float('nan')):.4f}",
        highlight=False,
    )


@app.command()
@user_errors
def quickstart(
    dataset: Annotated[
        Path | None, typer.Option(help="BEIR folder (train qrels to learn from, test qrels to score); default: shipped SciFact.")
    ] = None,
    docs: Annotated[Path | None, typer.Option(help="A folder of your documents instead (no labels needed).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the stores, model and report go.")] = Path("quickstart"),
    epochs: Annotated[
        float | None,
        typer.Option(help="Fine-tuning epochs, a fixed amount of training whatever the machine (default: 2 with "
                     "labels, 1 with --docs)."),
    ] = None,
    budget_minutes: Annotated[
        float | None, typer.Option(help="Cap on fine-tuning minutes (the report flags a run it cut short).")
    ] = None,
    base: Annotated[str, typer.Option(help="Embedding model to start from (short name or directory).")] = "minilm",
    generator: Annotated[
        str, typer.Option("--generator", help="Generator for the sample answers, or 'none' to skip them.")
    ] = "smollm2",
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: one per core).")] = None,
    loss: Annotated[
        str | None,
        typer.Option(help="Fine-tuning loss: mnrl, cached-mnrl or gist (in-batch negatives the base model ranks "
                     "above the positive are left out); default: mnrl with labels, gist with --docs."),
    ] = None,
    queries: Annotated[
        Path | None,
        typer.Option(help="With --docs: JSONL of real questions, {\"query\", \"relevant\": [document or passage "
                     "ids, or file paths]}, to choose the final system on instead of synthetic ones."),
    ] = None,
    pairs: Annotated[
        str,
        typer.Option(help="With --docs: 'extractive' pairs (document sentences and headings as queries), or "
                     "'generated' questions written by --generator about 8,000 passages (35-65 min with the "
                     "bundled one on 2 CPU cores)."),
    ] = "extractive",
    examples: Annotated[
        Path | None,
        typer.Option(help="With --pairs generated: a few of your users' real questions (the --queries format), shown "
                     "to the generator so its questions take their form; keep them apart from --queries."),
    ] = None,
    in_process: Annotated[
        bool, typer.Option(help="Run every step in this process (for a debugger or profiler); by default each step "
                           "runs in a fresh process, which keeps the peak memory lower.")
    ] = False,
) -> None:
    """The whole loop: index → baseline → training data → fine-tune → re-index → evaluate → answer, with a report.

    Run the same command again after an interruption: finished steps are skipped.
    """
    from ragtune.models import set_threads
    from ragtune.quickstart import Quickstart, QuickstartConfig, reproduce_command
    from ragtune.quickstart.report import TABLE_METRICS, before_after

    set_threads(threads)
    config = QuickstartConfig(
        dataset=dataset, docs=docs, out=out_dir, epochs=epochs, budget_minutes=budget_minutes, base=base,
        generator=None if generator.lower() == "none" else generator, threads=threads, queries=queries,
        isolate_steps=not in_process, loss=loss, pairs=pairs, examples=examples,
    )  # fmt: skip
    command = reproduce_command(config)
    err.print(f"[bold]ragtune quickstart[/] → {out_dir}  (resume: run the same command again)", highlight=False)
    result = Quickstart(config, command, say=lambda line: err.print(line, highlight=False, markup=False)).run()
    metrics = json.loads(Path(result["evaluation"]["metrics_file"]).read_text(encoding="utf-8"))
    table = Table(title=f"before / after · {Path(metrics['dataset']).name} · {metrics['queries']} test queries")
    for column in ("mode", "metric", "base", "tuned", "Δ", "p (t-test)"):
        table.add_column(column, justify="left" if column in ("mode", "metric") else "right")
    for row in before_after(metrics):
        if row.metric not in TABLE_METRICS[:2]:
            continue
        if row.t_test_p is None:
            table.add_row(row.mode, row.metric, f"{row.before:.4f}", f"{row.after:.4f}", "reference", "–")
        else:
            colour = "green" if row.delta > 0 else "red"
            star = "*" if row.significant else ""
            table.add_row(row.mode, row.metric, f"{row.before:.4f}", f"{row.after:.4f}",
                          f"[{colour}]{row.delta:+.4f}{star}[/]", f"{row.t_test_p:.2g}")  # fmt: skip
    out.print(table)
    chosen = result["chosen"]
    out.print(f"the system you get: {chosen['chosen']['label']} ({chosen['reason']}); recorded as the default search "
              f"of {chosen['store']}", highlight=False)  # fmt: skip
    out.print(f"report: {result['report']['html']} (and report.md) · tuned model: {out_dir / 'tuned-model'}")
    out.print("next, on your documents: ragtune quickstart --docs PATH/TO/DOCS --out my-run", highlight=False)


cache_app = typer.Typer(help="What ragtune keeps to save time (every store, evaluation and mining run reads and fills "
                        "it): the shared embedding cache and the OpenVINO copies of models.", no_args_is_help=True)  # fmt: skip
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@user_errors
def cache_info(as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Where the caches are, their sizes against their bounds, vectors per model, and SQLite's quick check."""
    from ragtune.embedding_cache import cache_summary
    from ragtune.model_copies import model_copies

    summary = cache_summary()
    copies = model_copies()
    copies_bytes = sum(copy.size_bytes for copy in copies)
    if as_json:
        print_json(summary.to_json() | {"model_copies": {
            "path": str(model_copies_root()), "copies": len(copies), "size_bytes": copies_bytes,
            "limit_bytes": model_copies_limit_bytes(),
        }})  # fmt: skip
    else:
        out.print(f"[bold]{summary.path}[/]: {summary.size_bytes / 1e6:,.1f} MB of {summary.limit_bytes / 1e6:,.0f} MB "
                  f"bound (${CACHE_LIMIT_ENV}), {summary.vectors:,} vectors", highlight=False)  # fmt: skip
        for model, precision, count in summary.by_model:
            out.print(f"  model {model} · kind {precision}: {count:,} vectors", highlight=False)
        out.print(f"[bold]{model_copies_root()}[/]: {_copies(len(copies), 'OpenVINO model')}, {copies_bytes / 1e6:,.1f} MB "
                  f"of {model_copies_limit_bytes() / 1e6:,.0f} MB bound (${MODEL_COPIES_LIMIT_ENV})", highlight=False)  # fmt: skip
        for problem in summary.problems:
            out.print(f"[red]problem:[/] {problem} (run: ragtune cache clear)", highlight=False)
    if summary.problems:
        raise typer.Exit(1)


def _copies(count: int, kind: str) -> str:
    return f"{count} {kind} {'copy' if count == 1 else 'copies'}"


@cache_app.command("prune")
@user_errors
def cache_prune(
    max_size: Annotated[
        str | None, typer.Option(help="Keep at most this much of the embedding cache: 500MB, 2GB, 0 (empties it).")
    ] = None,
    model_copies_max_size: Annotated[
        str | None, typer.Option(help="Keep at most this much of the OpenVINO model copies (least recently used go).")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Delete every vector of this kind, as `cache info` lists them (bf16/torch, ...).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="With --kind: only that model revision's vectors.")] = None,
) -> None:
    """Delete the least recently used vectors, or model copies, until each fits in its given size; or every vector
    of one kind (`--kind`), such as one an older ragtune made that this machine no longer encodes."""
    from ragtune.embedding_cache import cache_summary, prune_cache, prune_kind
    from ragtune.model_copies import model_copies, prune_model_copies

    if model is not None and kind is None:
        raise RagtuneError("--model only narrows --kind: give --kind too (see `ragtune cache info` for the kinds)")
    if max_size is None and model_copies_max_size is None and kind is None:
        raise RagtuneError("give --max-size (the embedding cache), --kind, --model-copies-max-size, or several")
    if kind is not None:
        removed = prune_kind(kind, model)
        summary = cache_summary()
        if removed == 0:  # nothing matched, so nothing was deleted: say what the cache does hold
            held = sorted({f"{k} (model {m})" for m, k, _ in summary.by_model})
            listed = ", ".join(held) or "none: the cache is empty"
            raise RagtuneError(f"the embedding cache holds no vectors of kind '{kind}'"
                               f"{'' if model is None else f' for model {model}'}; it holds: {listed}")  # fmt: skip
        out.print(f"removed {removed:,} vectors of kind {kind}; {summary.path} now holds {summary.vectors:,} "
                  f"({summary.size_bytes / 1e6:,.1f} MB)", highlight=False)  # fmt: skip
    if max_size is not None:
        removed = prune_cache(parse_size(max_size))
        summary = cache_summary()
        out.print(f"removed {removed:,} vectors; {summary.path} now holds {summary.vectors:,} "
                  f"({summary.size_bytes / 1e6:,.1f} MB)", highlight=False)  # fmt: skip
    if model_copies_max_size is not None:
        gone = prune_model_copies(parse_size(model_copies_max_size))
        left = model_copies()
        out.print(f"removed {_copies(len(gone), 'model')} ({sum(c.size_bytes for c in gone) / 1e6:,.1f} MB); "
                  f"{len(left)} left ({sum(c.size_bytes for c in left) / 1e6:,.1f} MB)", highlight=False)  # fmt: skip


@cache_app.command("clear")
@user_errors
def cache_clear() -> None:
    """Delete the embedding cache and the model copies (they only save time: both are made again when needed)."""
    from ragtune.embedding_cache import remove_cache
    from ragtune.model_copies import prune_model_copies

    remove_cache(embedding_cache_path())
    gone = prune_model_copies(0)
    out.print(f"removed {embedding_cache_path()} and {_copies(len(gone), 'model')} from {model_copies_root()}",
              highlight=False)  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    app()


pg_app = typer.Typer(help="A local PostgreSQL with pgvector for trying the PostgreSQL engine (tests use it too).",
                     no_args_is_help=True)  # fmt: skip
app.add_typer(pg_app, name="pg")
PgDataOption = Annotated[Path, typer.Option("--data", help="The server's data folder (created if new).")]


@pg_app.command("start")
@user_errors
def pg_start(
    data: PgDataOption,
    port: Annotated[int | None, typer.Option(help="TCP port on 127.0.0.1 (default: a free one).")] = None,
) -> None:
    """Start PostgreSQL on loopback and print the address to give as --store (add ?store=NAME for more stores)."""
    from ragtune.store.pg_server import start_server

    print(start_server(data, port))


@pg_app.command("stop")
@user_errors
def pg_stop(data: PgDataOption) -> None:
    """Stop the PostgreSQL started on --data."""
    from ragtune.store.pg_server import stop_server

    stopped = stop_server(data)
    err.print(f"stopped the server on {data}" if stopped else f"no server was running on {data}", highlight=False)
